"""The management server: an `mcp` SDK low-level ``Server`` whose tools are ``tools.TOOLS``.

- ``tools/list`` shows each caller only the tools their role (in the key's org) allows.
- ``tools/call`` validates the arguments against the tool's model (errors name each field),
  runs the handler in a worker thread inside a Flask app context (services are synchronous),
  and answers with ``structuredContent`` matching the tool's ``outputSchema``.
- Service errors (validation, permission, not found, conflict) become results with
  ``isError: true`` and the service's message; anything else is logged and answered with a
  plain "internal error", never a stack trace.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import anyio
import mcp_types as types
from flask import Flask
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.lowlevel import Server
from pydantic import ValidationError

from control_plane.management.tools import TOOLS, Caller, ToolSpec
from control_plane.models import Organization, db
from control_plane.services.errors import NotFound, ServiceError

log = logging.getLogger(__name__)


def _caller() -> Caller:
    token = get_access_token()
    if token is None:  # the SDK's bearer middleware lets nothing unauthenticated this far
        raise NotFound("not authenticated")
    expires = token.claims.get("expires_at")
    return Caller(user_id=token.subject, key_id=token.client_id, key_org_id=token.claims["org_id"],
                  scope=token.claims.get("scope"), expires_at=datetime.fromisoformat(expires) if expires else None)


def _tool(spec: ToolSpec) -> types.Tool:
    return types.Tool(name=spec.name, description=spec.description,
                      input_schema=spec.args.model_json_schema(), output_schema=spec.result.model_json_schema())


def _visible(caller: Caller) -> list[types.Tool]:
    org = db.session.get(Organization, caller.key_org_id)
    if org is None:
        return []
    try:
        actor = caller.actor_in(org)
    except NotFound:
        return []
    return [_tool(s) for s in TOOLS.values() if s.permission is None or actor.policy.may_manage(s.permission)]


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


def _validation_message(spec: ToolSpec, error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "arguments"
        problems.append(f"{where}: {item['msg']}")
    return f"Invalid arguments for {spec.name}: " + "; ".join(problems)


def build_server(app: Flask) -> Server:
    def in_app(fn, *args):
        with app.app_context():
            try:
                return fn(*args)
            finally:
                db.session.rollback()  # whatever the handler did not commit is not kept

    async def list_tools(ctx, params) -> types.ListToolsResult:
        caller = _caller()
        return types.ListToolsResult(tools=await anyio.to_thread.run_sync(in_app, _visible, caller))

    async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        spec = TOOLS.get(params.name)
        if spec is None:
            return _error(f"Unknown tool {params.name!r}")
        try:
            args = spec.args.model_validate(params.arguments or {})
        except ValidationError as error:
            return _error(_validation_message(spec, error))
        caller = _caller()
        try:
            result: dict[str, Any] = await anyio.to_thread.run_sync(in_app, spec.handler, caller, args)
        except ServiceError as error:
            return _error(str(error))
        except Exception:
            log.exception("management tool %s failed", spec.name)
            return _error(f"{spec.name} failed with an internal error; the control plane's log has the details")
        structured = spec.result.model_validate(result).model_dump(mode="json")
        return types.CallToolResult(content=[types.TextContent(type="text", text=json.dumps(structured))],
                                    structured_content=structured)

    return Server("mcp-mesh-management", version="0.1.0",
                  instructions="Administer MCP Mesh: organizations, members, roles, connections and API keys.",
                  on_list_tools=list_tools, on_call_tool=call_tool)
