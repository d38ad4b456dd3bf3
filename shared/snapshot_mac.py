"""The MAC that authenticates every snapshot stored in Redis: its format, signing and checking.

Redis is a shared bus, not a trust anchor: whoever can write to it must not be able to add an API
key, reroute a connection or make the bridge run a command. So the control plane signs each
snapshot it publishes, and the data plane and the bridge refuse any snapshot whose MAC does not
verify, before parsing a byte of it.

Key: HMAC-SHA-256 under a key derived from the data-plane key with HKDF-SHA-256 (no salt, info
``b"mcp-mesh snapshot mac v1"``), so the derived key is used for nothing else and the data-plane
key itself never keys an HMAC. The control plane, the data plane and the bridge hold the
data-plane key; Redis never does.

Stored value (the field of ``<p>:snapshots`` named by the org id; ASCII)::

    mesh-snapshot/1.<kid>.<tag>.<snapshot JSON>

- ``kid``: the id (``shared.envelope.key_id_for``) of the data-plane key the MAC key was derived
  from, so a keyring holding several data-plane keys knows which one to use; it is the same id
  the snapshot's sealed credentials already show.
- ``tag``: HMAC-SHA-256 (32 bytes, unpadded base64url) of::

      b"mesh-snapshot/1\\0" + json([kid, org_id]) + b"\\0" + <snapshot JSON bytes>

  ``org_id`` is the hash field the value is stored under, so a snapshot copied to another org's
  field fails; JSON escapes every separator, so two (kid, org) pairs never encode the same.
- the snapshot JSON exactly as ``shared.snapshot.Snapshot.to_json`` wrote it (``schema`` 1).

``open_snapshot`` refuses, with ``SnapshotRejected`` naming the reason (never key material): a
value without this header or with a malformed one, a tag that does not verify (altered, copied
from another field, signed under another key, truncated), a kid this process does not hold, no
data-plane key at all, an authentic payload that does not parse, and a payload whose ``org_id``
differs from its field.

What a MAC cannot stop: someone who can write to Redis can put back an older authentic snapshot
of the same org (a replay). A running data plane never installs a version older than the one it
holds; one starting afresh takes what Redis holds, until the control plane publishes the org
again. Redis AUTH narrows who can write.

Imports neither Flask nor mitmproxy; logs nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.envelope import Keyring
from shared.snapshot import Snapshot

FORMAT = b"mesh-snapshot/1"
_HKDF_INFO = b"mcp-mesh snapshot mac v1"
_KID = re.compile(rb"k[0-9a-f]{16}")
_TAG = re.compile(rb"[A-Za-z0-9_-]{43}")  # 32 bytes, unpadded base64url

# Why a snapshot was refused; a closed set, so it can label a metric.
NO_KEY = "no_key"
UNAUTHENTICATED = "unauthenticated"
UNREADABLE = "unreadable"
WRONG_ORG = "wrong_org"
REASONS = (NO_KEY, UNAUTHENTICATED, UNREADABLE, WRONG_ORG)


class SnapshotRejected(Exception):
    """A stored snapshot that must not be used. ``reason`` is one of ``REASONS``; the message
    says why in words and never holds key material or the snapshot's content."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def mac_key(dataplane_key: bytes) -> bytes:
    """The key snapshots are MAC'd under, derived from the data-plane key (used for nothing else)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(dataplane_key)


def _tag(key: bytes, kid: bytes, org_id: str, payload: bytes) -> bytes:
    bound = json.dumps([kid.decode(), org_id], separators=(",", ":")).encode()
    mac = hmac.new(mac_key(key), FORMAT + b"\0" + bound + b"\0", hashlib.sha256)
    mac.update(payload)
    return mac.digest()


def _b64(tag: bytes) -> bytes:
    return base64.urlsafe_b64encode(tag).rstrip(b"=")


def sign(org_id: str, payload: bytes, keyring: Keyring) -> bytes:
    """``payload`` in the stored format, MAC'd for the field ``org_id`` under ``keyring.active``."""
    kid = keyring.active.encode()
    tag = _b64(_tag(keyring.keys[keyring.active], kid, org_id, payload))
    return b".".join((FORMAT, kid, tag, payload))


def verify(org_id: str, stored: bytes | str, keyring: Keyring | None) -> bytes:
    """The payload of ``stored`` (found under the field ``org_id``) once its MAC verifies; else
    ``SnapshotRejected``. Nothing of the payload is looked at before that."""
    if keyring is None:
        raise SnapshotRejected(NO_KEY, "this process holds no data-plane key, so no snapshot can be authenticated")
    stored = stored.encode() if isinstance(stored, str) else bytes(stored)
    parts = stored.split(b".", 3)
    if len(parts) != 4 or parts[0] != FORMAT:
        raise SnapshotRejected(UNAUTHENTICATED, "it carries no MAC (not in the mesh-snapshot/1 format)")
    _, kid, tag, payload = parts
    if not _KID.fullmatch(kid) or not _TAG.fullmatch(tag):
        raise SnapshotRejected(UNAUTHENTICATED, "its MAC header is malformed")
    key = keyring.keys.get(kid.decode())
    if key is None:
        raise SnapshotRejected(UNAUTHENTICATED, f"it is signed under data-plane key {kid.decode()}, which this "
                                                "process does not hold")
    # Compared as text: one encoding per tag, so no second spelling of a valid tag verifies.
    if not hmac.compare_digest(tag, _b64(_tag(key, kid, org_id, payload))):
        raise SnapshotRejected(UNAUTHENTICATED, "its MAC does not verify: it was altered or truncated, copied "
                                                "from another org's field, or signed under another key")
    return payload


def sign_snapshot(snapshot: Snapshot, keyring: Keyring) -> str:
    """What the control plane stores under the field ``snapshot.org_id``."""
    return sign(snapshot.org_id, snapshot.to_json().encode(), keyring).decode()


def open_snapshot(org_id: str, stored: bytes | str, keyring: Keyring | None) -> Snapshot:
    """The snapshot stored under the field ``org_id``, authenticated, parsed, and of that org;
    else ``SnapshotRejected``. The one way any process reads a snapshot from Redis."""
    payload = verify(org_id, stored, keyring)
    try:
        snapshot = Snapshot.from_json(payload)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise SnapshotRejected(UNREADABLE, f"it is authentic but cannot be read ({type(error).__name__}); "
                                           "is the control plane newer than this process?") from None
    if snapshot.org_id != org_id:
        raise SnapshotRejected(WRONG_ORG, "it is authentic but names another org than its field")
    return snapshot
