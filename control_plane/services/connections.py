"""Connections: the upstream MCP servers an org reaches through the gateway. Their secrets live
in the vault (``services.secrets``); a connection row holds only what is not secret.

A connection's URL may still carry a credential in its query string (``?api_key=…``): it is
shown, searched, logged and audited only through ``shared.credentials.mask_url``.

Secrets belong to an origin: moving a connection's URL to another scheme, host or port drops
its secrets unless the same call sets them again (``update_connection``), so whoever may edit a
connection cannot send its owner's credentials to a server of their choosing."""

from __future__ import annotations

from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.orm import selectinload

from control_plane.models import Connection, ConnectionSecret, Organization, db, new_id, utcnow
from control_plane.services import audit, commit_and_publish, org_changed
from control_plane.services.actors import Actor, require
from control_plane.services.errors import Conflict, InvalidInput, NotFound
from control_plane.services.secrets import (
    canonical_field,
    check_fields_for,
    credential_fields,
    origin_of,
    stage_secrets,
    stored_fields,
)
from shared.credentials import mask_url, route_origin
from shared.upstream_addresses import AddressRefused, resolve
from shared.vocabulary import Status, Transport

# Listings show each connection's secret masks: loaded for a whole page in one more query.
WITH_SECRETS = selectinload(Connection.sealed_secrets)


def connection_name(org: Organization, name: str, *, renaming: Connection | None = None) -> str:
    """``name`` stripped, if it is 1 to 200 characters and no other connection of ``org`` has it
    (compared case-insensitively: connections are found by name too, and MariaDB compares so)."""
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise InvalidInput("a connection needs a name of 1 to 200 characters")
    query = sa.select(Connection.id).where(Connection.org_id == org.id, sa.func.lower(Connection.name) == name.lower())
    if renaming is not None:
        query = query.where(Connection.id != renaming.id)
    if db.session.scalar(query.limit(1)) is not None:
        raise Conflict(f"{org.slug} already has a connection named {name!r}: choose another name")
    return name


def validate_upstream_url(url: str) -> str:
    """Refuse URLs that are not plain http(s) to a host. Where the host may be is
    ``check_upstream_address``'s business."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises for a port that is not a number from 0 to 65535
    except ValueError:
        raise InvalidInput(f"upstream URL is not a valid URL: {mask_url(url)!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"upstream URL must be http:// or https:// with a host, got {mask_url(url)!r}")
    if parts.username or parts.password:
        raise InvalidInput("upstream URL must not carry credentials; use --basic, --bearer or --header instead")
    if len(url) > 2048:
        raise InvalidInput("upstream URL is longer than 2048 characters")
    try:
        parts.port
    except ValueError:
        raise InvalidInput(f"upstream URL has an invalid port: {url!r}") from None
    return url


def check_upstream_address(url: str, *, actor: Actor) -> None:
    """Refuse an upstream whose host resolves to an address the gateway may not call
    (``shared.upstream_addresses``): never link-local, metadata or the gateway's own ports; for a
    connection registered over the network, no loopback or private address outside
    ``MESH_ALLOW_PRIVATE_UPSTREAMS``. The data plane checks again at every connect (DNS can
    change); this gives the person registering it a clear answer now."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = resolve(parts.hostname, port)
    except OSError:
        if actor.is_operator:
            return  # the operator may register a name that only resolves where the gateway runs
        raise InvalidInput(f"the upstream host {parts.hostname!r} cannot be resolved") from None
    try:
        current_app.extensions["mesh.address_rules"].check(addresses, port, private_ok=actor.is_operator)
    except AddressRefused as refused:
        raise InvalidInput(f"upstream address not allowed: {refused}") from None


def create_connection(org: Organization, name: str, url: str, headers: dict[str, str] | None = None,
                      secrets: dict[str, str] | None = None, *, actor: Actor) -> Connection:
    """A Streamable HTTP connection (the bridged transports: ``bridged_connections``).
    ``headers`` and ``secrets`` (vault field -> value, see ``secrets.credential_fields``) are
    sealed into the vault in the same transaction as the connection."""
    require(actor, org, "connections.write")
    check_fields_for(Transport.HTTP, secrets or {})
    name = connection_name(org, name)
    url = validate_upstream_url(url)
    check_upstream_address(url, actor=actor)
    # The id is chosen here because the secrets' envelopes are bound to it.
    connection = Connection(id=new_id("conn"), org_id=org.id, name=name, url=url,
                            transport=Transport.HTTP, status=Status.ACTIVE, allow_private=actor.is_operator)
    return save_new_connection(org, connection, {**credential_fields(headers=headers), **(secrets or {})}, actor=actor)


def save_new_connection(org: Organization, connection: Connection, secrets: dict[str, str], *,
                        actor: Actor) -> Connection:
    """Store a new connection of any transport with its secrets, sealed and bound to its id, in one
    transaction with its audit row; then publish the org."""
    db.session.add(connection)
    db.session.flush()
    try:
        stage_secrets(connection, secrets)
    except Exception:
        db.session.rollback()
        raise
    org_changed(org.id)
    audit.record(actor, "connection.create", org_id=org.id, target=connection)
    commit_and_publish(org.id)
    return connection


def list_connections(org: Organization, *, actor: Actor) -> list[Connection]:
    require(actor, org, "connections.read")
    return list(db.session.scalars(
        sa.select(Connection).where(Connection.org_id == org.id).order_by(Connection.created_at, Connection.id)
        .options(WITH_SECRETS)
    ))


def get_connection(org: Organization, connection_id: str, *, actor: Actor) -> Connection:
    require(actor, org, "connections.read")
    return _connection(org, connection_id)


def _connection(org: Organization, connection_id: str) -> Connection:
    """The org's connection, for a service that has already checked its actor's permission."""
    connection = db.session.scalar(sa.select(Connection).where(Connection.id == connection_id,
                                                               Connection.org_id == org.id))
    if connection is None:
        raise NotFound(f"no connection {connection_id!r} in {org.slug}")
    return connection


def update_connection(org: Organization, connection_id: str, *, name: str | None = None, url: str | None = None,
                      status: str | None = None, secrets: dict[str, str] | None = None,
                      actor: Actor) -> tuple[Connection, list[str]]:
    """Change a connection's name, URL or status, and set ``secrets`` (vault field -> value, see
    ``secrets.credential_fields``) in the same transaction. Returns the connection and the
    secrets that were dropped: all it had, when the URL moves to another origin (scheme, host,
    port), but those this call sets again."""
    require(actor, org, "connections.write")
    connection = _connection(org, connection_id)
    before = audit.describe(connection)
    secrets = dict(secrets or {})
    dropped: list[str] = []
    check_fields_for(connection.transport, secrets)
    if name is not None:
        connection.name = connection_name(org, name, renaming=connection)
    if url is not None:
        if not Transport(connection.transport).has_url:
            raise InvalidInput(f"a {connection.transport} connection has no URL: it runs a command")
        try:
            old_origin = route_origin(connection.transport, connection.url)
        except ValueError:
            old_origin = None  # a URL without an origin held no usable secret: nothing of it is kept
        connection.url = validate_upstream_url(url)
        check_upstream_address(connection.url, actor=actor)
        connection.allow_private = actor.is_operator
        if origin_of(connection) != old_origin:
            given = {canonical_field(f) for f in secrets}
            dropped = [f for f in stored_fields(connection) if canonical_field(f) not in given]
    if status is not None:
        if status not in set(Status):
            raise InvalidInput(f"unknown status {status!r}; expected one of {', '.join(Status)}")
        connection.status = Status(status)
    if secrets or dropped:
        try:
            stage_secrets(connection, secrets, tuple(dropped))
        except Exception:
            db.session.rollback()
            raise
    org_changed(org.id)
    # The trail names which credentials were set or dropped, never their values.
    changes = sorted(secrets) + [f"-{f}" for f in dropped]
    audit.record(actor, "connection.update", org_id=org.id, target=connection,
                 before={**before, "credentials": changes} if changes else before)
    commit_and_publish(org.id)
    return connection, dropped


def delete_connection(org: Organization, connection_id: str, *, actor: Actor) -> None:
    require(actor, org, "connections.write")
    connection = _connection(org, connection_id)
    audit.record(actor, "connection.delete", org_id=org.id, target=connection, before=audit.describe(connection),
                 deleted=True)
    # Its sealed secrets go in the same transaction: none may outlive it (rotation re-wraps every row).
    db.session.execute(sa.delete(ConnectionSecret).where(ConnectionSecret.connection_id == connection.id))
    db.session.delete(connection)
    org_changed(org.id)
    commit_and_publish(org.id)


SORTABLE = {"name": Connection.name, "created_at": Connection.created_at, "updated_at": Connection.updated_at}


def page_connections(org: Organization, *, search: str | None = None, status: str | None = None,
                     transport: str | None = None, sort: str = "created_at", descending: bool = False,
                     limit: int = 50, cursor: str | None = None,
                     actor: Actor) -> tuple[list[Connection], str | None]:
    """A page of the org's connections, filtered and sorted; returns the page and the cursor of
    the next one (None at the end). The cursor is an offset, opaque to callers.

    ``search`` matches the name or the URL as listings show it (``mask_url``): matching the
    stored URL would let a reader find a masked query value one character at a time."""
    require(actor, org, "connections.read")
    if sort not in SORTABLE:
        raise InvalidInput(f"cannot sort by {sort!r}; expected one of {', '.join(SORTABLE)}")
    try:
        offset = int(cursor or 0)
    except ValueError:
        raise InvalidInput("that cursor did not come from this listing") from None
    query = sa.select(Connection).where(Connection.org_id == org.id).options(WITH_SECRETS)
    if search:
        pattern = "%" + search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(sa.or_(sa.func.lower(Connection.name).like(pattern, escape="\\"),
                                   sa.func.lower(Connection.url).like(pattern, escape="\\")))
    if status:
        query = query.where(Connection.status == status)
    if transport:
        query = query.where(Connection.transport == transport)
    column = SORTABLE[sort]
    query = query.order_by(column.desc() if descending else column.asc(), Connection.id)
    if search:
        # The database narrows to candidates; the page is cut from those whose shown URL matches.
        needle = search.lower()
        matching = [c for c in db.session.scalars(query)
                    if needle in c.name.lower() or needle in mask_url(c.url).lower()]
        rows = matching[offset:offset + limit + 1]
    else:
        rows = list(db.session.scalars(query.offset(offset).limit(limit + 1)))
    more = len(rows) > limit
    return rows[:limit], (str(offset + limit) if more else None)


def test_connection(org: Organization, connection_id: str, *, actor: Actor):
    """Connect to the upstream with the connection's own credentials; keep its tool catalog
    (the permission matrix and policies are written against it) and the outcome. A stdio or
    sse connection is tested through the running bridge, as the data plane reaches it."""
    # Imported here for start-up time: the `mcp` SDK's client and types take about a second of
    # CPU to import, and only this test needs them; every `mesh` command would pay it otherwise.
    from control_plane.connection_probe import probe_connection

    require(actor, org, "connections.write")
    connection = _connection(org, connection_id)
    result = probe_connection(connection, current_app.config["MESH_SETTINGS"],
                              current_app.extensions["mesh.address_rules"])
    before = audit.describe(connection)
    connection.tested_at = utcnow()
    connection.test_status = "ok" if result.ok else "failed"
    if result.ok:
        connection.tool_catalog = result.tools
    audit.record(actor, "connection.test", org_id=org.id, target=connection, before=before)
    db.session.commit()
    return connection, result

