"""Connections: the upstream MCP servers an org reaches through the gateway. Their secrets live
in the vault (``services.secrets``); a connection row holds only what is not secret."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import sqlalchemy as sa

from control_plane.models import Connection, Organization, db, new_id
from control_plane.services import commit_and_publish, org_changed
from control_plane.services.errors import InvalidInput
from control_plane.services.secrets import credential_fields, stage_secrets

TRANSPORTS = ("http",)


def validate_upstream_url(url: str) -> str:
    """Refuse URLs that are not plain http(s) to a host, or that aim at addresses no MCP server
    lives on (link-local: cloud metadata endpoints; unspecified; multicast).

    Loopback and private addresses are allowed: a self-hosted gateway mostly fronts internal
    services. Names are checked again when the data plane connects (DNS can change).
    """
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"upstream URL must be http:// or https:// with a host, got {url!r}")
    if parts.username or parts.password:
        raise InvalidInput("upstream URL must not carry credentials; use --basic, --bearer or --header instead")
    if len(url) > 2048:
        raise InvalidInput("upstream URL is longer than 2048 characters")
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return url
    if address.is_link_local or address.is_unspecified or address.is_multicast or address.is_reserved:
        raise InvalidInput(f"upstream address {address} is not allowed")
    return url


def create_connection(org: Organization, name: str, url: str, headers: dict[str, str] | None = None,
                      transport: str = "http", secrets: dict[str, str] | None = None) -> Connection:
    """``headers`` and ``secrets`` (vault field -> value, see ``secrets.credential_fields``) are
    sealed into the vault in the same transaction as the connection."""
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("a connection needs a name of 1 to 200 characters")
    if transport not in TRANSPORTS:
        raise InvalidInput(f"unknown transport {transport!r}; expected one of {', '.join(TRANSPORTS)}")
    # The id is chosen here because the secrets' envelopes are bound to it.
    connection = Connection(id=new_id("conn"), org_id=org.id, name=name, url=validate_upstream_url(url),
                            transport=transport, status="active")
    db.session.add(connection)
    db.session.flush()
    try:
        stage_secrets(connection, {**credential_fields(headers=headers), **(secrets or {})})
    except Exception:
        db.session.rollback()
        raise
    org_changed(org.id)
    commit_and_publish(org.id)
    return connection


def list_connections(org: Organization) -> list[Connection]:
    return list(db.session.scalars(
        sa.select(Connection).where(Connection.org_id == org.id).order_by(Connection.created_at, Connection.id)
    ))
