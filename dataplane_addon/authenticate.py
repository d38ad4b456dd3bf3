"""Authenticate: an MCP call needs ``Authorization: Bearer <API key>``; the key's hash must be
in a snapshot. Otherwise 401 with a JSON-RPC error and a ``WWW-Authenticate`` challenge.

Authentication happens on the request's headers, before its body is read (a caller without a
valid key cannot make the gateway hold a large body), and before the connection is looked up, so
a caller without a valid key learns nothing about which connections exist."""

from __future__ import annotations

import time

from mitmproxy import http

from dataplane_addon.call import rpc_answer, undecided_call
from dataplane_addon.snapshot_store import SnapshotStore
from shared.apikeys import hash_key
from shared.jsonrpc import UNAUTHORIZED

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="mcp-mesh"'}


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class Authenticator:
    def __init__(self, store: SnapshotStore) -> None:
        self.store = store

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        call = undecided_call(flow)
        if call is None:
            return
        token = bearer_token(flow.request.headers.get("Authorization"))
        if token is None:
            flow.response = rpc_answer(401, UNAUTHORIZED, "Unauthorized: send 'Authorization: Bearer <API key>'",
                                       headers=CHALLENGE)
            return
        principal = self.store.principal(hash_key(token))
        if principal is None or (principal.expires_at is not None and principal.expires_at <= time.time()):
            flow.response = rpc_answer(401, UNAUTHORIZED, "Unauthorized: the API key is not valid",
                                       headers={"WWW-Authenticate": 'Bearer realm="mcp-mesh", error="invalid_token"'})
            return
        call.principal = principal
