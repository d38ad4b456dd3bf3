"""Connection secrets: written once, sealed under the master key, and read back only as masks.

Every interface writes secrets through ``set_secrets`` and shows them only as their masks
(``ConnectionSecret.hint``, through ``control_plane.presenters``); nothing in the service layer
returns a value. Validation errors name the field, never the value.

Each secret is sealed for the connection's origin (``origin_of``: scheme, host and port, or
``stdio``): ``connections.update_connection`` drops the secrets of a connection whose URL moves
to another origin, and a secret left behind by any other path would not open there.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from flask import current_app

from control_plane.models import Connection, ConnectionSecret, Organization, db
from control_plane.services.errors import InvalidInput, NotFound
from shared.credentials import (
    BASIC,
    BEARER,
    ENV_PREFIX,
    env_field,
    field_kind,
    header_field,
    header_for,
    mask_secret,
    route_origin,
    sets_authorization,
)
from shared.vocabulary import Transport

MAX_SECRET_CHARS = 16 * 1024
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,200}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")
# Headers the gateway or the protocol owns: a credential must not replace them.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "upgrade", "te",
                               "keep-alive", "proxy-authorization", "accept", "content-type"})


def parse_header(spec: str) -> tuple[str, str]:
    """``"Name: value"`` → ``(name, value)``. An error shows at most the name."""
    name, sep, value = spec.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _HEADER_NAME.fullmatch(name):
        shown = f", got {name!r}…" if sep and len(name) <= 200 else ""
        raise InvalidInput(f"a header must look like 'Name: value'{shown}")
    return name, value


def parse_env(spec: str) -> tuple[str, str]:
    """``"NAME=value"`` → ``(name, value)``. An error shows at most the name."""
    name, sep, value = spec.partition("=")
    if not sep or not _ENV_NAME.fullmatch(name):
        shown = f", got {name!r}" if sep and len(name) <= 200 else ""
        raise InvalidInput(f"an environment variable must look like NAME=value{shown}")
    return name, value


def credential_fields(bearer: str | None = None, basic: str | None = None, headers: dict[str, str] | None = None,
                      env: dict[str, str] | None = None) -> dict[str, str]:
    """The vault's field names for what an admin gave (``shared.credentials``)."""
    fields: dict[str, str] = {}
    if bearer is not None:
        fields[BEARER] = bearer
    if basic is not None:
        fields[BASIC] = basic
    for name, value in (headers or {}).items():
        fields[header_field(name)] = value
    for name, value in (env or {}).items():
        fields[env_field(name)] = value
    return fields


def check_fields_for(transport: str, fields) -> None:
    """A stdio connection takes environment values only; the others take no environment values."""
    envs = [f for f in fields if f.startswith(ENV_PREFIX)]
    if transport == Transport.STDIO and len(envs) != len(fields):
        raise InvalidInput("a stdio connection takes environment values (--env), not headers or bearer tokens")
    if transport != Transport.STDIO and envs:
        raise InvalidInput("environment values (--env) are for stdio connections")


def validate_secret(field: str, value: str) -> None:
    try:
        kind, name = field_kind(field)
    except ValueError:
        raise InvalidInput(f"unknown credential {field!r}") from None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{field}: the value is empty")
    if len(value) > MAX_SECRET_CHARS:
        raise InvalidInput(f"{field}: the value is longer than {MAX_SECRET_CHARS} characters")
    if kind == "env":
        if not _ENV_NAME.fullmatch(name):
            raise InvalidInput(f"{name!r} is not an environment variable name")
        if "\0" in value:
            raise InvalidInput(f"{field}: the value contains a NUL character")
        return
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InvalidInput(f"{field}: the value contains control characters (a line break?)")
    if kind == "header":
        lowered = name.lower()
        if not _HEADER_NAME.fullmatch(name) or lowered in _RESERVED_HEADERS or lowered.startswith("mcp-"):
            raise InvalidInput(f"{name!r} cannot be a connection header")
    elif kind == BASIC:
        user, sep, _password = value.partition(":")
        if not sep or not user:
            raise InvalidInput("basic: the value must look like USER:PASSWORD")
    elif kind == BEARER and any(c.isspace() for c in value):
        raise InvalidInput("bearer: the token contains whitespace")


def find_connection(org: Organization, ref: str) -> Connection:
    """A connection of ``org`` by id, else by name, compared case-insensitively as names are kept
    unique (``connections.connection_name``)."""
    found = db.session.scalars(sa.select(Connection).where(
        Connection.org_id == org.id,
        sa.or_(Connection.id == ref, sa.func.lower(Connection.name) == ref.strip().lower())).limit(2)).all()
    by_id = [c for c in found if c.id == ref]
    if by_id:
        return by_id[0]
    if not found:
        raise NotFound(f"no connection {ref!r} in {org.slug}")
    return found[0]


def stage_secrets(connection: Connection, secrets: dict[str, str], remove: tuple[str, ...] = ()) -> None:
    """Seal and store (or remove) secrets of ``connection`` in the current transaction. The
    caller marks the org changed and commits (``set_secrets`` does both)."""
    for field, value in secrets.items():
        validate_secret(field, value)
    existing = {row.field: row for row in db.session.scalars(
        sa.select(ConnectionSecret).where(ConnectionSecret.connection_id == connection.id))}
    # Header names are case-insensitive: a new X-Api-Key replaces an old x-api-key.
    replaced = {canonical_field(f) for f in (*secrets, *remove)}
    kept = [f for f in existing if canonical_field(f) not in replaced]
    missing = [f for f in remove if canonical_field(f) not in {canonical_field(e) for e in existing}]
    if missing:
        raise NotFound(f"connection {connection.name!r} has no secret {missing[0]!r}")
    setting_authorization = [f for f in (*kept, *secrets) if sets_authorization(f)]
    if len(setting_authorization) > 1:
        raise InvalidInput("only one of bearer, basic and an Authorization header can be set on a connection "
                           f"(it would have: {', '.join(sorted(setting_authorization))})")
    vault = current_app.extensions["mesh.vault"]
    origin = origin_of(connection) if secrets else None
    for field, row in existing.items():
        if canonical_field(field) in replaced:
            db.session.delete(row)
    db.session.flush()
    for field, value in secrets.items():
        record = vault.seal_secret(connection.org_id, connection.id, field, value, origin=origin)
        db.session.add(ConnectionSecret(org_id=connection.org_id, connection_id=connection.id, field=field,
                                        envelope=record.to_json(), key_id=record.kid, hint=mask_secret(value)))


def set_secrets(org: Organization, connection: Connection, secrets: dict[str, str],
                remove: tuple[str, ...] = (), *, actor) -> None:
    from control_plane.services import audit, commit_and_publish, org_changed
    from control_plane.services.actors import require

    require(actor, org, "connections.write")
    if connection.org_id != org.id:
        raise NotFound(f"no connection {connection.id!r} in {org.slug}")
    if not secrets and not remove:
        raise InvalidInput("nothing to change: give a secret to set or one to remove")
    before = audit.describe(connection)
    try:
        stage_secrets(connection, secrets, remove)
    except Exception:
        db.session.rollback()
        raise
    org_changed(org.id)
    # The trail names which credentials changed, never their values.
    audit.record(actor, "connection.set_secrets", org_id=org.id, target=connection,
                 before={**before, "credentials": sorted(secrets) + [f"-{f}" for f in remove]})
    commit_and_publish(org.id)


def canonical_field(field: str) -> str:
    """The field as the vault compares it: header names are case-insensitive."""
    try:
        kind, name = field_kind(field)
    except ValueError:
        raise InvalidInput(f"unknown credential {field!r}") from None
    return f"{kind}:{name.lower()}" if kind == "header" else field


def origin_of(connection: Connection) -> str:
    """The origin the connection's secrets are sealed for (``shared.credentials.route_origin``)."""
    try:
        return route_origin(connection.transport, connection.url)
    except ValueError:
        raise InvalidInput(f"connection {connection.name!r} has no usable URL to bind its secrets to") from None


def stored_fields(connection: Connection) -> list[str]:
    return list(db.session.scalars(sa.select(ConnectionSecret.field)
                                   .where(ConnectionSecret.connection_id == connection.id)
                                   .order_by(ConnectionSecret.field)))


def clear_headers(connection: Connection) -> list[tuple[str, str]]:
    """The headers the connection's secrets become, opened with the master key for the origin the
    connection points at now: for the control plane's own probe of the upstream
    (``CONNECTION_TEST``), never stored or shown. Raises ``shared.envelope.EnvelopeError`` for a
    secret that does not open there."""
    vault = current_app.extensions["mesh.vault"]
    origin = origin_of(connection)
    headers = []
    for row in db.session.scalars(sa.select(ConnectionSecret).where(ConnectionSecret.connection_id == connection.id)):
        header = header_for(row.field, vault.open_secret(connection.org_id, connection.id, row.field, row.envelope,
                                                         origin=origin))
        if header is not None:
            headers.append(header)
    return headers
