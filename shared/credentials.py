"""What a connection's credentials are, for both planes: their field names, the envelope
contexts they are sealed under, the headers each one becomes, and the mask shown instead of it.

Fields (one secret each; the field name is bound into the envelope's associated data):

- ``bearer``         → ``Authorization: Bearer <value>``
- ``basic``          → ``Authorization: Basic base64(<user:password>)``; the value is ``user:password``
- ``header:<Name>``  → ``<Name>: <value>`` (e.g. ``header:X-API-Key``)
- ``env:<NAME>``     → an environment variable for stdio servers (not sent as a header)

The same field is sealed twice in its life: under the master key in the database (purpose
``vault``) and under the data-plane key in a snapshot (purpose ``delivery``). The two contexts
differ, so neither record can stand in for the other.

Nothing here encrypts (``shared.envelope`` does) and nothing here logs.
"""

from __future__ import annotations

import base64

from shared.envelope import SealContext

BEARER = "bearer"
BASIC = "basic"
HEADER_PREFIX = "header:"
ENV_PREFIX = "env:"
VAULT = "vault"
DELIVERY = "delivery"


def header_field(name: str) -> str:
    return HEADER_PREFIX + name


def env_field(name: str) -> str:
    return ENV_PREFIX + name


def field_kind(field: str) -> tuple[str, str]:
    """``("header", "X-API-Key")``, ``("env", "TOKEN")``, ``("bearer", "")`` or ``("basic", "")``."""
    if field.startswith(HEADER_PREFIX):
        return "header", field[len(HEADER_PREFIX):]
    if field.startswith(ENV_PREFIX):
        return "env", field[len(ENV_PREFIX):]
    if field in (BEARER, BASIC):
        return field, ""
    raise ValueError(f"unknown credential field {field!r}")


def sets_authorization(field: str) -> bool:
    kind, name = field_kind(field)
    return kind in (BEARER, BASIC) or (kind == "header" and name.lower() == "authorization")


def vault_context(org_id: str, connection_id: str, field: str) -> SealContext:
    return SealContext(VAULT, org_id, connection_id, field)


def delivery_context(org_id: str, connection_id: str, field: str) -> SealContext:
    return SealContext(DELIVERY, org_id, connection_id, field)


def header_for(field: str, value: str) -> tuple[str, str] | None:
    """The header a credential becomes on the way upstream; ``None`` for environment variables."""
    kind, name = field_kind(field)
    if kind == BEARER:
        return "Authorization", f"Bearer {value}"
    if kind == BASIC:
        return "Authorization", "Basic " + base64.b64encode(value.encode()).decode()
    if kind == "header":
        return name, value
    return None


def mask_secret(value: str) -> str:
    """What listings show instead of a secret: ``sk-…a1b2``. Short values show nothing at all,
    and never more than 7 characters of a value of 16 or more are shown."""
    if len(value) < 12:
        return "…"
    if len(value) < 16:
        return "…" + value[-2:]
    return value[:3] + "…" + value[-4:]


def mask_credential(field: str, value: str) -> str:
    if field == BASIC:
        user, _, password = value.partition(":")
        return f"{user}:{mask_secret(password)}"
    return mask_secret(value)


def open_delivered(org_id: str, connection_id: str, field: str, record, keyring) -> str:
    """A credential as the data plane (or its bridge) received it, opened with the data-plane
    key. Raises ``shared.envelope.EnvelopeError`` (saying why, never what) or ``ValueError``."""
    from shared.envelope import open_sealed

    return open_sealed(record, delivery_context(org_id, connection_id, field), keyring).decode()
