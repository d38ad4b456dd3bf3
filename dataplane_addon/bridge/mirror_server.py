"""The MCP server the bridge shows for one upstream: an ``mcp`` SDK low-level ``Server`` whose
handlers pass each request to the upstream's one long-lived ``ClientSession`` and return its
answer.

Why a server that proxies, rather than relaying JSON-RPC messages: a stdio child is one session
that speaks one protocol generation (usually 2025-xx, with an ``initialize`` handshake), while
the gateway's clients come in both generations and many at once. The SDK server speaks both to
them (legacy sessions with ``initialize`` and 2026-07-28 stateless requests) and the SDK client
speaks whatever the child negotiated, so the versions never have to match; many client sessions
share the one child.

What is mirrored: tools, prompts, resources (list, templates, read, and subscriptions for 2025
clients), completions and logging, as the upstream advertises them; and what the upstream sends
back while it works (progress, log messages, sampling and elicitation requests,
list-changed notifications, resource updates), each to the client it concerns (``relay.py``).
A 2026-07-28 caller gets the upstream's requests as ``input_required`` results: its request stays
with the upstream between rounds (``RoundTrips``), found again by a ``requestState`` the SDK's
``RequestStateBoundary`` seals (encrypted under a key of this process, bound to the method, the
tool and its arguments and the caller's API key, expiring with ``ROUND_TRIP_TTL``): only the
caller that started a request can continue it, and each of its rounds passes the data plane's
authorization like any request. They get list changes on a ``subscriptions/listen`` stream.
"""

from __future__ import annotations

import os
from typing import Any

import anyio
import anyio.abc
import mcp_types as types
from mcp.server.lowlevel.server import Server
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp_types import CONNECTION_CLOSED, INVALID_PARAMS
from mcp_types.methods import INPUT_REQUIRED_METHODS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel

from dataplane_addon.bridge.address import CALLER_HEADER
from dataplane_addon.bridge.relay import ROUND_TRIP_TTL, Exchange, LegacyExchange, Relay, RoundTrips, is_modern
from dataplane_addon.bridge.supervisor import UpstreamSupervisor, UpstreamUnavailable
from shared.jsonrpc import UPSTREAM_UNAVAILABLE

# method -> (its params, its result): both version-superset models of the SDK, so a result read
# from an upstream of one protocol version is re-shaped for a caller of another.
FORWARDED: dict[str, tuple[type[BaseModel], type[BaseModel]]] = {
    "tools/list": (types.PaginatedRequestParams, types.ListToolsResult),
    "tools/call": (types.CallToolRequestParams, types.CallToolResult),
    "prompts/list": (types.PaginatedRequestParams, types.ListPromptsResult),
    "prompts/get": (types.GetPromptRequestParams, types.GetPromptResult),
    "resources/list": (types.PaginatedRequestParams, types.ListResourcesResult),
    "resources/templates/list": (types.PaginatedRequestParams, types.ListResourceTemplatesResult),
    "resources/read": (types.ReadResourceRequestParams, types.ReadResourceResult),
    "completion/complete": (types.CompleteRequestParams, types.CompleteResult),
}
# The 2026-07-28 request envelope (version, client info, capabilities) describes the caller's
# wire to this server; the upstream session stamps its own. The progress token is the bridge's
# own per forwarded request (the caller's may collide with another caller's), and the round-trip
# fields are answered here, never by the upstream.
RESERVED_META_PREFIX = "io.modelcontextprotocol/"
_OWN_META = ("progressToken",)
_OWN_PARAMS = ("requestState", "inputResponses")

_AnyRequest = types.Request[dict[str, Any] | None, str]


def caller_of(ctx) -> str | None:
    """The API key the data plane authenticated for this request (``address.CALLER_HEADER``)."""
    return ctx.request.headers.get(CALLER_HEADER) if ctx.request is not None else None


def upstream_params(params: dict[str, Any] | None) -> dict[str, Any] | None:
    """The caller's params as the upstream should get them: unchanged but for the envelope."""
    if not params:
        return None
    params = {k: v for k, v in params.items() if k not in _OWN_PARAMS}
    meta = params.pop("_meta", None)
    if isinstance(meta, dict):
        kept = {k: v for k, v in meta.items() if not k.startswith(RESERVED_META_PREFIX) and k not in _OWN_META}
        if kept:
            params["_meta"] = kept
    return params or None


class MirrorServer(Server):
    def __init__(self, supervisor: UpstreamSupervisor, relay: Relay, audience: str) -> None:
        super().__init__(supervisor.spec.name)
        self.supervisor = supervisor
        self.relay = relay
        self._tool_schemas: dict[str, Any] = {}
        self._round_trips: dict[str, RoundTrips] = {}
        self._tasks: anyio.abc.TaskGroup | None = None
        for method, (params_type, _result_type) in FORWARDED.items():
            self.add_request_handler(method, params_type, self._forward)
        self.add_request_handler("logging/setLevel", types.SetLevelRequestParams, self._set_level)
        self.add_request_handler("resources/subscribe", types.SubscribeRequestParams, self._subscribe)
        self.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, self._unsubscribe)
        self.add_request_handler("subscriptions/listen", types.SubscriptionsListenRequestParams, relay.listen)
        security = RequestStateSecurity(keys=[os.urandom(32)], ttl=ROUND_TRIP_TTL, bind_principal=caller_of)
        self.middleware += [relay, RequestStateBoundary(security, default_audience=audience)]
        # 2026-07-28 calls carrying Mcp-Param-* headers are checked against the tool's schema;
        # without this the SDK would list the upstream's tools again for every such call.
        self.get_tool_input_schema = self._tool_schemas.get

    def adopt_identity(self, initialized: types.InitializeResult) -> None:
        """Introduce ourselves to clients as the upstream does."""
        info = initialized.server_info
        self.name, self.version, self.title = info.name, info.version, info.title
        self.description, self.website_url, self.icons = info.description, info.website_url, info.icons
        self.instructions = initialized.instructions

    async def run(self) -> None:
        """Hold 2026-07-28 callers' requests between their rounds, until cancelled."""
        async with anyio.create_task_group() as self._tasks:
            await anyio.sleep_forever()

    def get_capabilities(self, notification_options=None, experimental_capabilities=None, extensions=None, *,
                         protocol_version: str | None = None) -> types.ServerCapabilities:
        upstream = self.supervisor.initialized.capabilities if self.supervisor.initialized else None
        if upstream is None:
            return types.ServerCapabilities()
        # List changes reach 2025 sessions on their GET stream, 2026-07-28 clients on a
        # subscriptions/listen stream; resource updates only the former (see Relay.listen).
        legacy = protocol_version not in MODERN_PROTOCOL_VERSIONS

        def changes(capability) -> bool:
            return bool(capability and capability.list_changed)

        resources = upstream.resources
        return types.ServerCapabilities(
            tools=types.ToolsCapability(list_changed=changes(upstream.tools)) if upstream.tools else None,
            prompts=types.PromptsCapability(list_changed=changes(upstream.prompts)) if upstream.prompts else None,
            resources=types.ResourcesCapability(subscribe=legacy and bool(resources.subscribe),
                                                list_changed=changes(resources)) if resources else None,
            completions=types.CompletionsCapability() if upstream.completions else None,
            logging=types.LoggingCapability() if upstream.logging else None,
        )

    async def _forward(self, ctx, _params: BaseModel) -> BaseModel:
        if is_modern(ctx) and ctx.method in INPUT_REQUIRED_METHODS:
            return await self._round(ctx)
        return await self._send(ctx.method, ctx.params, LegacyExchange(ctx))

    async def _round(self, ctx) -> BaseModel:
        """One round of a 2026-07-28 caller's request (see the module docstring)."""
        state = (ctx.params or {}).get("requestState")
        if state is None:
            trips = RoundTrips(ctx)
            self._round_trips[trips.state] = trips
            self._tasks.start_soon(self._hold, ctx.method, ctx.params, trips)
        else:
            trips = self._round_trips.get(state)
            if trips is None:  # sealed by us, so it once existed: the upstream restarted or it was collected
                raise MCPError(code=INVALID_PARAMS, message="This request's earlier round is no longer held by "
                               "the gateway; send the request again without requestState")
            trips.answer((ctx.params or {}).get("inputResponses"))
        return await trips.round(ctx)

    async def _hold(self, method: str, params: dict[str, Any] | None, trips: RoundTrips) -> None:
        try:
            with anyio.move_on_after(ROUND_TRIP_TTL):
                try:
                    trips.finish(await self._send(method, params, trips), None)
                except Exception as error:  # noqa: BLE001 - handed to the caller's next round
                    trips.finish(None, error)
        finally:
            if trips.outcome is None:  # cancelled at the deadline: a round waiting now gets an answer
                trips.finish(None, MCPError(code=UPSTREAM_UNAVAILABLE, message="The request waited too long for "
                                            "the client's answers and was cancelled; send it again"))
            trips.abandon()  # the upstream request is over or cancelled: nothing may wait on the caller
            self._round_trips.pop(trips.state, None)  # the one place a held request is let go

    async def _set_level(self, ctx, params: types.SetLevelRequestParams) -> types.EmptyResult:
        # The upstream sends every level (the bridge asks it to); each client gets those it chose.
        self.relay.set_level(ctx, params.level)
        return types.EmptyResult()

    async def _subscribe(self, ctx, params: types.SubscribeRequestParams) -> types.EmptyResult:
        """The upstream is subscribed once per URI for all clients; updates go to the subscribers."""
        subscribed = self.relay.subscriptions(ctx)
        if params.uri not in subscribed:
            if not self.relay.subscribers(params.uri):
                await self._send("resources/subscribe", {"uri": params.uri}, LegacyExchange(ctx), types.EmptyResult)
            subscribed.add(params.uri)
        return types.EmptyResult()

    async def _unsubscribe(self, ctx, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        subscribed = self.relay.subscriptions(ctx)
        if params.uri in subscribed:
            subscribed.discard(params.uri)
            if not self.relay.subscribers(params.uri):
                await self._send("resources/unsubscribe", {"uri": params.uri}, LegacyExchange(ctx), types.EmptyResult)
        return types.EmptyResult()

    async def _send(self, method: str, params: dict[str, Any] | None, exchange: Exchange,
                    result_type: type[BaseModel] | None = None) -> BaseModel:
        # The raw params, not the validated model: fields this SDK version does not know pass too.
        request = _AnyRequest(method=method, params=upstream_params(params))
        result_type = result_type or FORWARDED[method][1]
        wants_progress = progress_token_from_params(params) is not None
        # A request that met a dying child is sent again to its successor, unless it may have
        # had an effect: a tools/call may have run before the child died, so it is never repeated.
        attempts = 1 if method == "tools/call" else 2
        for attempt in range(1, attempts + 1):
            try:
                session = await self.supervisor.session()
                with self.relay.forwarding(method, exchange):
                    result = await session.send_request(
                        request, result_type, progress_callback=exchange.progress if wants_progress else None)
                break
            except UpstreamUnavailable as unavailable:
                raise MCPError(code=UPSTREAM_UNAVAILABLE, message=str(unavailable)) from None
            except MCPError as error:
                if error.error.code != CONNECTION_CLOSED:
                    raise  # the upstream's own answer, passed on as it is
                self.supervisor.discard(session)
                if attempt == attempts:
                    raise MCPError(code=UPSTREAM_UNAVAILABLE, message=(
                        f"the upstream of connection {self.supervisor.label} went away during the call; "
                        "it is being restarted")) from None
        if isinstance(result, types.ListToolsResult):
            self._tool_schemas.update((tool.name, tool.input_schema) for tool in result.tools)
        return result
