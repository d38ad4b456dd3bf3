"""What the addons of one MCP call know about it, kept in ``flow.metadata[CALL]``, and the one
way they answer a client themselves."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from mitmproxy import http

from dataplane_addon.snapshot_store import Principal, Upstream
from shared.jsonrpc import Message, error_body

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
    timer: object | None = None  # the pending upstream timeout (asyncio.TimerHandle)
    started: float = field(default_factory=time.perf_counter)

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
