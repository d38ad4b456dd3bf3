"""API key format and hashing, shared by the control plane (which issues keys) and the data
plane (which checks them).

A key looks like ``mesh_<prefix>_<secret>``: the prefix is shown in listings so people can tell
keys apart; the secret is 32 random bytes. Keys are high-entropy, so a single SHA-256 is the
right hash (slow password hashes are for low-entropy secrets, and would cost the data plane
milliseconds per call). Only the hash is stored and published; the data plane looks the hash up
in a dict, which leaks nothing useful about a key that is 256 bits of randomness.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "mesh_"


def generate_key() -> tuple[str, str]:
    """A new key and its visible prefix: ``("mesh_ab12cd34_<secret>", "mesh_ab12cd34")``."""
    visible = KEY_PREFIX + secrets.token_hex(4)
    return f"{visible}_{secrets.token_urlsafe(32)}", visible


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
