"""Connections: the upstream MCP servers an org reaches through the gateway."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import sqlalchemy as sa

from control_plane.models import Connection, Organization, db
from control_plane.services import commit_and_publish, org_changed
from control_plane.services.actors import OPERATOR, Actor, require
from control_plane.services.errors import InvalidInput

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
        raise InvalidInput("upstream URL must not carry credentials; use --header instead")
    if len(url) > 2048:
        raise InvalidInput("upstream URL is longer than 2048 characters")
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return url
    if address.is_link_local or address.is_unspecified or address.is_multicast or address.is_reserved:
        raise InvalidInput(f"upstream address {address} is not allowed")
    return url


def parse_header(spec: str) -> tuple[str, str]:
    name, sep, value = spec.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name or any(c in name for c in " \r\n") or "\n" in value or "\r" in value:
        raise InvalidInput(f"a header must look like 'Name: value', got {spec.split(':')[0]!r}…")
    return name, value


def create_connection(org: Organization, name: str, url: str, headers: dict[str, str] | None = None,
                      transport: str = "http", *, actor: Actor = OPERATOR) -> Connection:
    require(actor, org, "connections.write")
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("a connection needs a name of 1 to 200 characters")
    if transport not in TRANSPORTS:
        raise InvalidInput(f"unknown transport {transport!r}; expected one of {', '.join(TRANSPORTS)}")
    connection = Connection(org_id=org.id, name=name, url=validate_upstream_url(url), transport=transport,
                            status="active", headers=dict(headers or {}))
    db.session.add(connection)
    org_changed(org.id)
    commit_and_publish(org.id)
    return connection


def list_connections(org: Organization, *, actor: Actor = OPERATOR) -> list[Connection]:
    require(actor, org, "connections.read")
    return list(db.session.scalars(
        sa.select(Connection).where(Connection.org_id == org.id).order_by(Connection.created_at, Connection.id)
    ))


def mask_headers(headers: dict[str, str]) -> dict[str, str]:
    """Header values are treated as secrets: only a hint of them is ever shown."""
    return {k: (v[:3] + "…" + v[-2:] if len(v) > 8 else "…") for k, v in headers.items()}
