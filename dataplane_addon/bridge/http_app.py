"""The bridge's HTTP side (ASGI): ``/bridge/<connection id>/mcp`` to that connection's Streamable
HTTP session manager, and ``/health``.

Every request, ``/health`` and unknown paths included, must carry the shared token
(``address.TOKEN_HEADER``); without it the answer is 401 and nothing else, so nobody who merely
reaches the loopback port (another local process, or an org's ``http`` connection pointed at it)
learns which connections exist. The token is removed before the MCP server sees a request.
Until a connection's upstream has been up once, its requests wait up to ``READY_GRACE`` seconds
and then get 503 with a JSON-RPC error, so a client never hangs on a child that cannot start.

``/health`` tells no secrets: per connection its org, name, transport, state, pid, restart count
and last error (never env or header values). Operators read it with the token ``mesh up`` keeps
in ``<data dir>/bridge.token`` while it runs.
"""

from __future__ import annotations

import json

from dataplane_addon.bridge.address import TOKEN_HEADER, connection_id_from_path, token_matches
from dataplane_addon.bridge.bridged_connections import BridgedConnections
from dataplane_addon.bridge.supervisor import READY_GRACE
from shared.jsonrpc import INVALID_REQUEST, UPSTREAM_UNAVAILABLE, error_body

_TOKEN_HEADER = TOKEN_HEADER.lower().encode()


async def _answer(send, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    raw_headers = [(b"content-type", b"application/json")]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class BridgeApp:
    def __init__(self, connections: BridgedConnections, token: str) -> None:
        self.connections = connections
        self.token = token

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        presented = next((v.decode("latin-1") for k, v in scope["headers"] if k == _TOKEN_HEADER), None)
        if not token_matches(self.token, presented):
            await _answer(send, 401, error_body(INVALID_REQUEST, "Unauthorized: only the data plane calls the bridge"))
            return
        path = scope["path"]
        if path == "/health":
            body = {"status": "ok", "plane": "bridge", "connections": self.connections.health()}
            await _answer(send, 200, json.dumps(body).encode())
            return
        connection_id = connection_id_from_path(path)
        if connection_id is None:
            await _answer(send, 404, error_body(INVALID_REQUEST, "Not found"))
            return
        connection = self.connections.get(connection_id)
        if connection is None:
            await _answer(send, 404, error_body(INVALID_REQUEST, "Not found: no such bridged connection"))
            return
        if not await connection.ready_for_clients(READY_GRACE):
            await _answer(send, 503, error_body(UPSTREAM_UNAVAILABLE, connection.supervisor.unavailable_reason()),
                          {"Retry-After": "1"})
            return
        scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != _TOKEN_HEADER]}
        await connection.sessions.handle_request(scope, receive, send)
