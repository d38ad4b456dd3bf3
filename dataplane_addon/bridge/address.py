"""How the data plane reaches the bridge: its address, the path of one bridged connection, and
the shared token that proves a request comes from the data plane.

Both processes import this module; it must stay free of mitmproxy and of the SDK.

The token: ``mesh up`` draws a fresh one per run and hands it to the data plane and the bridge
in the environment (``MESH_BRIDGE_TOKEN``), never on a command line, where any local user could
read it. The bridge refuses requests without it, so neither another local process nor an
``http`` connection that points at the bridge's loopback port (an org reaching into another
org's stdio server) gets past the data plane's authentication and authorization.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass

TOKEN_HEADER = "X-Mesh-Bridge-Token"
# The key the data plane authenticated for a call (it sets this, the caller cannot: only the
# headers ``inject.FORWARDED_HEADERS`` names pass): what a 2026-07-28 round trip is bound to.
CALLER_HEADER = "X-Mesh-Caller"
TOKEN_ENV = "MESH_BRIDGE_TOKEN"
PATH_PREFIX = "/bridge/"
PATH_SUFFIX = "/mcp"


def connection_path(connection_id: str) -> str:
    return f"{PATH_PREFIX}{connection_id}{PATH_SUFFIX}"


def connection_id_from_path(path: str) -> str | None:
    """The connection id in ``/bridge/<id>/mcp``; None for any other path."""
    if not (path.startswith(PATH_PREFIX) and path.endswith(PATH_SUFFIX)):
        return None
    connection_id = path[len(PATH_PREFIX):-len(PATH_SUFFIX)]
    return connection_id if connection_id and "/" not in connection_id else None


def token_matches(expected: str, presented: str | None) -> bool:
    return bool(expected) and presented is not None and hmac.compare_digest(expected.encode(), presented.encode())


@dataclass(frozen=True, slots=True)
class BridgeAddress:
    host: str
    port: int
    token: str = ""

    def __repr__(self) -> str:  # the token stays out of logs
        return f"BridgeAddress({self.host}:{self.port})"


def parse_bridge_address(spec: str, token: str | None = None) -> BridgeAddress:
    """``HOST:PORT`` (the token comes from ``MESH_BRIDGE_TOKEN`` unless given)."""
    host, sep, port = spec.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {spec!r}")
    return BridgeAddress(host, int(port), os.environ.get(TOKEN_ENV, "") if token is None else token)
