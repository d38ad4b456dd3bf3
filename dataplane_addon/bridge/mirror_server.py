"""The MCP server the bridge shows for one upstream: an ``mcp`` SDK low-level ``Server`` whose
handlers pass each request to the upstream's one long-lived ``ClientSession`` and return its
answer.

Why a server that proxies, rather than relaying JSON-RPC messages: a stdio child is one session
that speaks one protocol generation (usually 2025-xx, with an ``initialize`` handshake), while
the gateway's clients come in both generations and many at once. The SDK server speaks both to
them (legacy sessions with ``initialize`` and 2026-07-28 stateless requests) and the SDK client
speaks whatever the child negotiated, so the versions never have to match; many client sessions
share the one child.

What is mirrored: tools, prompts, resources (list, templates, read) and completions, as the
upstream advertises them. What is not: notifications and server-to-client requests (sampling,
elicitation, roots, log messages, list-changed, resource subscriptions); the advertised
capabilities say so (``listChanged``/``subscribe`` false).
"""

from __future__ import annotations

from typing import Any

import mcp_types as types
from mcp.server.lowlevel.server import Server
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED
from pydantic import BaseModel

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
# wire to this server; the upstream session stamps its own.
RESERVED_META_PREFIX = "io.modelcontextprotocol/"

_AnyRequest = types.Request[dict[str, Any] | None, str]


def upstream_params(params: dict[str, Any] | None) -> dict[str, Any] | None:
    """The caller's params as the upstream should get them: unchanged but for the envelope."""
    if not params:
        return None
    params = dict(params)
    meta = params.pop("_meta", None)
    if isinstance(meta, dict):
        kept = {k: v for k, v in meta.items() if not k.startswith(RESERVED_META_PREFIX)}
        if kept:
            params["_meta"] = kept
    return params or None


class MirrorServer(Server):
    def __init__(self, supervisor: UpstreamSupervisor) -> None:
        super().__init__(supervisor.spec.name)
        self.supervisor = supervisor
        self._tool_schemas: dict[str, Any] = {}
        for method, (params_type, _result_type) in FORWARDED.items():
            self.add_request_handler(method, params_type, self._forward)
        # 2026-07-28 calls carrying Mcp-Param-* headers are checked against the tool's schema;
        # without this the SDK would list the upstream's tools again for every such call.
        self.get_tool_input_schema = self._tool_schemas.get

    def adopt_identity(self, initialized: types.InitializeResult) -> None:
        """Introduce ourselves to clients as the upstream does."""
        info = initialized.server_info
        self.name, self.version, self.title = info.name, info.version, info.title
        self.description, self.website_url, self.icons = info.description, info.website_url, info.icons
        self.instructions = initialized.instructions

    def get_capabilities(self, notification_options=None, experimental_capabilities=None, extensions=None, *,
                         protocol_version: str | None = None) -> types.ServerCapabilities:
        upstream = self.supervisor.initialized.capabilities if self.supervisor.initialized else None
        if upstream is None:
            return types.ServerCapabilities()
        return types.ServerCapabilities(
            tools=types.ToolsCapability(list_changed=False) if upstream.tools else None,
            prompts=types.PromptsCapability(list_changed=False) if upstream.prompts else None,
            resources=types.ResourcesCapability(subscribe=False, list_changed=False) if upstream.resources else None,
            completions=types.CompletionsCapability() if upstream.completions else None,
        )

    async def _forward(self, ctx, _params: BaseModel) -> BaseModel:
        # The raw params, not the validated model: fields this SDK version does not know pass too.
        request = _AnyRequest(method=ctx.method, params=upstream_params(ctx.params))
        result_type = FORWARDED[ctx.method][1]
        # A request that met a dying child is sent again to its successor, unless it may have
        # had an effect: a tools/call may have run before the child died, so it is never repeated.
        attempts = 1 if ctx.method == "tools/call" else 2
        for attempt in range(1, attempts + 1):
            try:
                session = await self.supervisor.session()
                result = await session.send_request(request, result_type)
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
