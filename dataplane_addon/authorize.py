"""Authorize: every JSON-RPC request in the body is decided by the caller's policy (the one
evaluator in ``shared.policy``) before anything is forwarded. A denied request is answered here
with a JSON-RPC error naming the tool (or prompt, or resource) and the connection; it never
reaches the upstream. A batch with any denied request is refused whole.

A request whose protocol version has no such method (2026-07-28: ``resources/subscribe``, an
unknown method, …) is refused here too, the way that version says: -32601 Method not found, HTTP
404 (``shared.jsonrpc.method_not_found``). In the 2025 versions an unknown method stays a policy
refusal (-32003, HTTP 200).

List requests are let through and noted, so ``inspect`` filters their answers.
"""

from __future__ import annotations

import json

from mitmproxy import http

from dataplane_addon.call import undecided_call
from shared.jsonrpc import (
    FORBIDDEN,
    MCP_PROTOCOL_VERSION_HEADER,
    METHOD_NOT_FOUND,
    error_body,
    error_status,
    method_not_found,
)
from shared.policy import LIST_METHODS, Unclassified, target_of

NOT_FORWARDED = (FORBIDDEN, "Not forwarded: another request in this batch was refused", None)


class ToolAuthorizer:
    def request(self, flow: http.HTTPFlow) -> None:
        call = undecided_call(flow)
        if call is None or not call.messages:
            return
        policy = call.principal.policy
        connection = call.upstream
        version_header = flow.request.headers.get(MCP_PROTOCOL_VERSION_HEADER)
        errors: dict = {}
        for message in call.messages:
            if message.kind == "response":
                continue
            missing = method_not_found(message, version_header)
            if missing is not None:
                errors[message.id] = (METHOD_NOT_FOUND, missing, {"method": message.method})
                continue
            try:
                target = target_of(message.method, message.params)
            except Unclassified as refusal:
                errors[message.id] = (FORBIDDEN, f"Forbidden: {refusal}", {"method": message.method})
                continue
            if target is None:
                if message.method in LIST_METHODS and message.kind == "request":
                    call.lists[message.id] = message.method
            elif not policy.allows(target.kind, connection.connection_id, target.name):
                errors[message.id] = (
                    FORBIDDEN,
                    f"Forbidden: {target.label} {target.name!r} is not allowed on connection "
                    f"{connection.name!r} ({connection.connection_id}) for this API key",
                    {target.label: target.name, "connection": connection.connection_id},
                )
        if errors:
            flow.response = _refusal(call.messages, errors, batch=len(call.messages) > 1)


def _refusal(messages, errors: dict, batch: bool) -> http.Response:
    headers = {"Content-Type": "application/json"}
    if not batch:
        (request_id, (code, text, data)), = errors.items()
        return http.Response.make(error_status(code), error_body(code, text, request_id, data), headers)
    answers = []
    for message in messages:
        if message.kind != "request":
            continue
        code, text, data = errors.get(message.id, NOT_FORWARDED)
        answers.append(json.loads(error_body(code, text, message.id, data)))
    return http.Response.make(200, json.dumps(answers).encode(), headers)
