"""What the addons of one MCP call know about it, kept in ``flow.metadata[CALL]``, and the one
way they answer a client themselves."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mitmproxy import ctx, http

from dataplane_addon.snapshot_store import Principal, Upstream
from shared.jsonrpc import INTERNAL_ERROR, UPSTREAM_UNAVAILABLE, Message, error_body

CALL = "mesh.call"
LOCAL = "mesh.local"


@dataclass(slots=True)
class McpCall:
    connection_id: str
    principal: Principal | None = None
    upstream: Upstream | None = None
    messages: list[Message] = field(default_factory=list)
    lists: dict = field(default_factory=dict)  # request id -> */list method, answers to filter
    timed_out: bool = False
    failed: str | None = None  # why the upstream's answer must not go out (it could not be checked)
    refused_address: str | None = None  # why the upstream's address was refused at connect time
    timer: object | None = None  # the pending upstream timeout (asyncio.TimerHandle)
    started: float = field(default_factory=time.perf_counter)

    @property
    def request_ids(self) -> set:
        """The ids of this call's requests (answers carrying any other id were not asked for)."""
        return {(type(m.id), m.id) for m in self.messages if m.kind == "request"}

    @property
    def request_id(self):
        """The id to echo in an error about this call (the first request's, if any)."""
        for message in self.messages:
            if message.kind == "request":
                return message.id
        return None


def undecided_call(flow) -> McpCall | None:
    """The flow's MCP call, or None when it is not one or an earlier addon has already answered
    (every request hook of the chain steps aside then, as mitmproxy's own addons do)."""
    if flow.response or flow.error or not flow.live:
        return None
    return flow.metadata.get(CALL)


def rpc_answer(status: int, code: int, message: str, request_id=None, headers: dict[str, str] | None = None) -> http.Response:
    """A JSON-RPC error as the HTTP answer. ``message`` is shown to the client: no secrets."""
    return http.Response.make(status, error_body(code, message, request_id),
                              {"Content-Type": "application/json", **(headers or {})})


def address_refused(call: McpCall, reason: str) -> http.Response:
    """The answer to a call whose upstream is at an address the gateway may not call."""
    name = call.upstream.name if call.upstream else call.connection_id
    return rpc_answer(502, UPSTREAM_UNAVAILABLE, f"Bad gateway: the upstream of connection {name!r} is at an address "
                      f"the gateway may not call ({reason})", call.request_id)


def unchecked_answer(call: McpCall, reason: str) -> http.Response:
    """The answer in place of an upstream's that the gateway could not check."""
    name = call.upstream.name if call.upstream else call.connection_id
    return rpc_answer(502, INTERNAL_ERROR, f"Bad gateway: the answer of connection {name!r} was withheld: {reason}",
                      call.request_id)


def connection_handler(client):
    """mitmproxy's handler of a client connection (it holds that client's connections to
    upstreams, and closes them); None once the client is gone, or where no proxy server runs."""
    proxyserver = ctx.master.addons.get("proxyserver")
    return proxyserver.connections.get(client.id) if proxyserver is not None else None


def close_upstream(flow) -> None:
    """Close the flow's connection to its upstream now. mitmproxy then ends the flow with a
    protocol error, which ``protocol_errors`` answers with a JSON-RPC error while nothing of the
    upstream's answer has reached the client."""
    handler = connection_handler(flow.client_conn)
    if handler is not None and flow.server_conn in handler.transports:
        handler.close_connection(flow.server_conn)
