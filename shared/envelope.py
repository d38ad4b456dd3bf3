"""The one place MCP Mesh encrypts and decrypts: AES-256-GCM envelope encryption.

Every sealed value gets its own random 256-bit data key. The value is encrypted under that data
key, and the data key is encrypted ("wrapped") under a key-encryption key taken from a
``Keyring``: the master key for secrets at rest in the database, the data-plane key for
secrets delivered through Redis. Rotating a key-encryption key re-wraps the small data keys
(``rewrap``) and never touches the ciphertexts.

Each encryption uses a fresh random 96-bit nonce. A data key encrypts exactly one value; a
key-encryption key wraps many data keys, each with its own random nonce (far below the 2^32
messages per key where random GCM nonces start to risk a collision).

Associated data binds a record to where it belongs (``SealContext``: purpose, org, connection,
field, and the origin of the upstream it is for): a ciphertext copied to another row, another
connection, another field, from the vault into a delivery, or kept while the connection was
pointed at another origin, fails authentication. The wrapped data key is bound to the same context
and to the key id, so swapping the wrapped keys of two records fails as well.

Record layout, version 1: a compact JSON object, byte strings as unpadded base64url::

    {"v": 1,                 # layout version; anything else is refused
     "kid": "k…",            # id of the key-encryption key that wrapped "wk"
     "wn": "…",              # 12-byte nonce of the wrap
     "wk": "…",              # the 32-byte data key encrypted under the KEK, + 16-byte GCM tag
     "n":  "…",              # 12-byte nonce of the value's encryption
     "ct": "…"}              # the value encrypted under the data key, + 16-byte GCM tag

Associated data (``ctx`` is the UTF-8 JSON array ``[purpose, org_id, connection_id, field, origin]``;
records sealed before the origin was bound used the first four only, and were sealed again by
the migration ``0007_origin_bound_secrets``)::

    wrap:  b"mesh-envelope/1 wrap\\0" + kid + b"\\0" + ctx
    value: b"mesh-envelope/1 value\\0" + ctx

Key ids are derived from the key (an HMAC-SHA-256 of a fixed label, 64 bits shown), so a key
supplied through the environment has a stable id without storing anything.

This module must not log, and no exception it raises carries plaintext or key bytes. It imports
neither Flask nor mitmproxy.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

LAYOUT_VERSION = 1
KEY_BYTES = 32
NONCE_BYTES = 12
_TAG_BYTES = 16
_WRAP_PREFIX = b"mesh-envelope/1 wrap\0"
_VALUE_PREFIX = b"mesh-envelope/1 value\0"
_KEY_ID_LABEL = b"mcp-mesh key id v1"
_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


class EnvelopeError(Exception):
    """A sealed record cannot be opened. The message says why and never holds secret material."""


class MalformedRecord(EnvelopeError):
    pass


class UnknownKey(EnvelopeError):
    pass


class AuthenticationFailed(EnvelopeError):
    pass


class KeyFormatError(ValueError):
    """A configured key is not 32 bytes in base64 or hex. The message never repeats the value."""


@dataclass(frozen=True, slots=True)
class SealContext:
    """Where a sealed value belongs. Opening it anywhere else fails."""

    purpose: str  # "vault" (at rest, master key) or "delivery" (to the data plane)
    org_id: str
    connection_id: str
    field: str
    origin: str  # the upstream's "https://host:443", or "stdio" (``shared.credentials``)

    def encode(self) -> bytes:
        # JSON escapes every separator, so two different contexts never encode the same.
        return json.dumps([self.purpose, self.org_id, self.connection_id, self.field, self.origin],
                          separators=(",", ":")).encode()

    def describe(self) -> str:
        """For error messages and logs: names only, nothing secret."""
        return f"{self.field} of {self.connection_id}"


@dataclass(frozen=True, slots=True)
class Keyring:
    """Key-encryption keys by id; ``active`` is the one new records are wrapped under."""

    active: str
    keys: Mapping[str, bytes] = field(repr=False)

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise ValueError("the active key id is not in the keyring")
        for key in self.keys.values():
            if len(key) != KEY_BYTES:
                raise ValueError("every key in a keyring must be 32 bytes")

    @classmethod
    def single(cls, key: bytes) -> "Keyring":
        return cls(key_id_for(key), {key_id_for(key): key})

    @classmethod
    def of(cls, active: bytes, *others: bytes) -> "Keyring":
        """A keyring wrapping under ``active`` that can still open records of ``others``."""
        return cls(key_id_for(active), {key_id_for(k): k for k in (*others, active)})


@dataclass(frozen=True, slots=True)
class SealedRecord:
    """A parsed record (see the layout above). ``to_json`` gives the stored text back."""

    kid: str
    wrap_nonce: bytes
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes

    def to_json(self) -> str:
        return json.dumps({"v": LAYOUT_VERSION, "kid": self.kid, "wn": _b64(self.wrap_nonce),
                           "wk": _b64(self.wrapped_key), "n": _b64(self.nonce), "ct": _b64(self.ciphertext)},
                          separators=(",", ":"))


def generate_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def key_id_for(key: bytes) -> str:
    return "k" + hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode()


def parse_key(text: str, what: str = "the key") -> bytes:
    """32 bytes from base64 (standard or URL-safe, padding optional) or 64 hex digits."""
    text = (text or "").strip()
    if _HEX_KEY.fullmatch(text):
        return bytes.fromhex(text)
    try:
        padded = text + "=" * (-len(text) % 4)
        key = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise KeyFormatError(f"{what} must be 32 bytes written as base64 (44 characters) or hex (64 characters); "
                             "the value given is neither (it is not shown). Generate one with "
                             "`openssl rand -base64 32`.")
    return key


def seal(plaintext: bytes, context: SealContext, keyring: Keyring) -> SealedRecord:
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = secrets.token_bytes(NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, _VALUE_PREFIX + context.encode())
    return _wrap(data_key, nonce, ciphertext, context, keyring)


def open_sealed(record: SealedRecord | str, context: SealContext, keyring: Keyring) -> bytes:
    """The plaintext, or ``EnvelopeError`` saying why not (never what)."""
    record = parse_record(record) if isinstance(record, str) else record
    data_key = _unwrap(record, context, keyring)
    try:
        return AESGCM(data_key).decrypt(record.nonce, record.ciphertext, _VALUE_PREFIX + context.encode())
    except InvalidTag:
        raise AuthenticationFailed(
            f"the sealed value of {context.describe()} failed authentication: its ciphertext or nonce was "
            "altered, or it was copied from another record") from None


def rewrap(record: SealedRecord | str, context: SealContext, keyring: Keyring) -> SealedRecord:
    """The same value, its data key wrapped under ``keyring.active``. The value is authenticated
    first, so a damaged record is reported rather than carried into the new key."""
    record = parse_record(record) if isinstance(record, str) else record
    open_sealed(record, context, keyring)
    return _wrap(_unwrap(record, context, keyring), record.nonce, record.ciphertext, context, keyring)


def parse_record(text: str | bytes) -> SealedRecord:
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("v") != LAYOUT_VERSION:
            raise MalformedRecord(f"not a version-{LAYOUT_VERSION} sealed record")
        record = SealedRecord(kid=str(doc["kid"]), wrap_nonce=_unb64(doc["wn"]), wrapped_key=_unb64(doc["wk"]),
                              nonce=_unb64(doc["n"]), ciphertext=_unb64(doc["ct"]))
    except MalformedRecord:
        raise
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise MalformedRecord("the sealed record is not readable (damaged or not a sealed record)") from None
    if (len(record.wrap_nonce) != NONCE_BYTES or len(record.nonce) != NONCE_BYTES
            or len(record.wrapped_key) != KEY_BYTES + _TAG_BYTES or len(record.ciphertext) < _TAG_BYTES):
        raise MalformedRecord("the sealed record has fields of the wrong length (damaged)")
    return record


def _wrap(data_key: bytes, nonce: bytes, ciphertext: bytes, context: SealContext, keyring: Keyring) -> SealedRecord:
    kid = keyring.active
    wrap_nonce = secrets.token_bytes(NONCE_BYTES)
    wrapped = AESGCM(keyring.keys[kid]).encrypt(wrap_nonce, data_key, _wrap_aad(kid, context))
    return SealedRecord(kid=kid, wrap_nonce=wrap_nonce, wrapped_key=wrapped, nonce=nonce, ciphertext=ciphertext)


def _unwrap(record: SealedRecord, context: SealContext, keyring: Keyring) -> bytes:
    kek = keyring.keys.get(record.kid)
    if kek is None:
        raise UnknownKey(f"the sealed value of {context.describe()} was wrapped under key {record.kid}, "
                         "which this keyring does not hold (retired, or a different installation's key)")
    try:
        return AESGCM(kek).decrypt(record.wrap_nonce, record.wrapped_key, _wrap_aad(record.kid, context))
    except InvalidTag:
        raise AuthenticationFailed(
            f"the wrapped data key of {context.describe()} failed authentication: it was altered, copied "
            "from another record, or wrapped under another key") from None


def _wrap_aad(kid: str, context: SealContext) -> bytes:
    return _WRAP_PREFIX + kid.encode() + b"\0" + context.encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not isinstance(text, str):
        raise TypeError("expected base64 text")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
