"""Route: decide what each request is, as soon as its headers are in, before anything else looks
at it (and before its body is read).

- ``/mcp/<connection id>``: an MCP call, marked with ``McpCall`` for the addons after this one.
  Only POST, GET and DELETE; a header the gateway decides on may appear once.
- ``/health``, ``/metrics``: answered by the data plane itself (``record.LocalEndpoints``).
- anything else (``/api``, ``/.well-known``, the UI, the management endpoint ``/mcp``): the
  control plane's Flask app on its internal port.
"""

from __future__ import annotations

from mitmproxy import ctx, http

from dataplane_addon.call import CALL, LOCAL, McpCall, rpc_answer
from shared.jsonrpc import INVALID_REQUEST, NOT_FOUND

MCP_PREFIX = "/mcp/"
LOCAL_PATHS = frozenset({"/health", "/metrics"})
MCP_METHODS = frozenset({"POST", "GET", "DELETE"})
# Request headers the gateway reads (or rewrites) before forwarding: a second copy could be read
# by the upstream instead of the one decided on, so a request carrying one twice is refused.
SINGLE_HEADERS = frozenset(name.lower().encode() for name in (
    "Content-Type", "Content-Encoding", "Content-Length", "Transfer-Encoding", "Mcp-Session-Id",
    "MCP-Protocol-Version", "Mcp-Method", "Mcp-Name", "Last-Event-ID", "traceparent"))


def parse_control_plane(spec: str) -> tuple[str, int]:
    host, sep, port = spec.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {spec!r}")
    return host, int(port)


def not_found() -> http.Response:
    # The same answer for "does not exist" and "belongs to another org": nothing leaks.
    return rpc_answer(404, NOT_FOUND, "Not found: no such connection")


def repeated_header(headers: http.Headers) -> str | None:
    """The first of ``SINGLE_HEADERS`` that appears more than once, if any (one pass)."""
    seen = set()
    for name, _value in headers.fields:
        lowered = name.lower()
        if lowered in SINGLE_HEADERS:
            if lowered in seen:
                return name.decode("latin-1")
            seen.add(lowered)
    return None


DEFAULT_CONTROL_PLANE = "127.0.0.1:3001"


class Router:
    def __init__(self) -> None:
        self.control_plane = parse_control_plane(DEFAULT_CONTROL_PLANE)  # until configured

    def load(self, loader) -> None:
        loader.add_option("mesh_control_plane", str, DEFAULT_CONTROL_PLANE,
                          "HOST:PORT of the control plane's Flask app; every non-MCP path goes there.")

    def configure(self, updated) -> None:
        from mitmproxy.exceptions import OptionsError

        if "mesh_control_plane" in updated:
            try:
                self.control_plane = parse_control_plane(ctx.options.mesh_control_plane)
            except ValueError as exc:
                raise OptionsError(f"mesh_control_plane: {exc}") from None

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        request = flow.request
        path = request.path.partition("?")[0]
        if path.startswith(MCP_PREFIX):
            connection_id = path[len(MCP_PREFIX):]
            if not connection_id or "/" in connection_id:
                flow.response = not_found()
            elif request.method not in MCP_METHODS:
                flow.response = rpc_answer(405, INVALID_REQUEST, f"Method {request.method} is not allowed here",
                                           headers={"Allow": "POST, GET, DELETE"})
            elif (repeated := repeated_header(request.headers)) is not None:
                flow.response = rpc_answer(400, INVALID_REQUEST, f"Bad request: the {repeated} header appears "
                                                                 "more than once")
            else:
                flow.metadata[CALL] = McpCall(connection_id)
        elif path in LOCAL_PATHS:
            flow.metadata[LOCAL] = path
        else:
            client_host = request.host_header or ""
            request.headers["X-Forwarded-Host"] = client_host
            request.headers["X-Forwarded-Proto"] = "https" if flow.client_conn.tls_established else "http"
            request.headers["X-Forwarded-For"] = flow.client_conn.peername[0] if flow.client_conn.peername else ""
            request.scheme = "http"
            request.host, request.port = self.control_plane
