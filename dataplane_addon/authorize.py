"""Authorize: every JSON-RPC request in the body is decided by the caller's policy (the one
evaluator in ``shared.policy``) before anything is forwarded. A denied request is answered here
with a JSON-RPC error naming the tool (or prompt, or resource) and the connection; it never
reaches the upstream. A batch with any denied request is refused whole.

List requests are let through and noted, so ``inspect`` filters their answers.
"""

from __future__ import annotations

import json

from mitmproxy import http

from dataplane_addon.call import undecided_call
from shared.jsonrpc import FORBIDDEN, error_body
from shared.policy import LIST_METHODS, Unclassified, target_of


class ToolAuthorizer:
    def request(self, flow: http.HTTPFlow) -> None:
        call = undecided_call(flow)
        if call is None or not call.messages:
            return
        policy = call.principal.policy
        connection = call.upstream
        errors: dict = {}
        for message in call.messages:
            if message.kind == "response":
                continue
            try:
                target = target_of(message.method, message.params)
            except Unclassified as refusal:
                errors[message.id] = (f"Forbidden: {refusal}", {"method": message.method})
                continue
            if target is None:
                if message.method in LIST_METHODS and message.kind == "request":
                    call.lists[message.id] = message.method
            elif not policy.allows(target.kind, connection.connection_id, target.name):
                errors[message.id] = (
                    f"Forbidden: {target.label} {target.name!r} is not allowed on connection "
                    f"{connection.name!r} ({connection.connection_id}) for this API key",
                    {target.label: target.name, "connection": connection.connection_id},
                )
        if errors:
            flow.response = _refusal(call.messages, errors, batch=len(call.messages) > 1)


def _refusal(messages, errors: dict, batch: bool) -> http.Response:
    headers = {"Content-Type": "application/json"}
    if not batch:
        (request_id, (text, data)), = errors.items()
        return http.Response.make(200, error_body(FORBIDDEN, text, request_id, data), headers)
    answers = []
    for message in messages:
        if message.kind != "request":
            continue
        text, data = errors.get(message.id, ("Not forwarded: another request in this batch was refused", None))
        answers.append(json.loads(error_body(FORBIDDEN, text, message.id, data)))
    return http.Response.make(200, json.dumps(answers).encode(), headers)
