"""The words a connection is described with, on both planes: how the gateway reaches its
upstream (``Transport``) and whether it routes to it (``Status``). String enums: they compare
equal to, and serialize as, the plain strings the database, the snapshots and the management
tools carry, so every place that says "stdio" or "active" says it with one of these."""

from __future__ import annotations

from enum import StrEnum


class Transport(StrEnum):
    HTTP = "http"  # Streamable HTTP at the connection's URL: the data plane calls it directly
    SSE = "sse"  # the legacy HTTP+SSE transport (2024-11-05) at its URL, relayed by the bridge
    STDIO = "stdio"  # a command the bridge runs, speaking MCP on stdin/stdout; it has no URL

    @property
    def bridged(self) -> bool:
        """Reached through the bridge (``dataplane_addon/bridge``), not called directly."""
        return self in BRIDGED_TRANSPORTS

    @property
    def has_url(self) -> bool:
        return self is not Transport.STDIO


BRIDGED_TRANSPORTS = frozenset({Transport.SSE, Transport.STDIO})


class Status(StrEnum):
    """What an admin set: the gateway routes to an active connection only."""

    ACTIVE = "active"
    INACTIVE = "inactive"


# A route's status in a snapshot, never an admin's: an active connection whose credentials the
# control plane cannot open for the data plane (its calls get 503).
BROKEN = "broken"
