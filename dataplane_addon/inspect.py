"""Inspect: every JSON-RPC message an upstream sends back, in a JSON body (here) or in an event
stream (``stream.EventRelay``), goes through ``inspect_message``: answers to ``tools/list``,
``prompts/list``, ``resources/list`` and ``resources/templates/list`` keep only what the caller's
policy allows.

It fails closed:
- An answer is a listing when it answers one of this call's listing requests (by id), and also
  when it answers none of this call's requests but has a listing's shape (a result holding
  ``tools``, ``prompts``, ``resources`` or ``resourceTemplates``): an event replayed on a
  resumed stream, say.
- A listing answer is always written anew from what was parsed, never passed on as the
  upstream's bytes, so no client can read it otherwise than the gateway did.
- The answer to a call holding a listing request is parsed as JSON whatever its
  ``Content-Type`` says (compared without regard to letter case; none at all counts as JSON),
  unless it is an event stream; an answer that the gateway cannot read or that was compressed
  although the request asked for none does not go out (``McpCall.failed``).
"""

from __future__ import annotations

import json
from typing import Any

from mitmproxy import http

from dataplane_addon.call import CALL, McpCall, close_upstream, unchecked_answer
from dataplane_addon.request_body import media_type
from shared.policy import LIST_METHODS, filter_listing

EVENT_STREAM = "text/event-stream"
_FIELDS = {field: method for method, (_kind, field, _key) in LIST_METHODS.items()}


def listing_methods(call: McpCall, message: dict) -> list[str]:
    """The listings ``message`` (a result) must be filtered as."""
    request_id = message.get("id")
    if (type(request_id), request_id) in call.request_ids:
        method = call.lists.get(request_id)
        return [method] if method else []
    result = message.get("result")
    if not isinstance(result, dict):
        return []
    return [method for field, method in _FIELDS.items() if field in result]


def inspect_message(call: McpCall, message: Any) -> Any:
    """The message as the caller may see it: the very same object when no decision was taken on
    it (it may go out as the upstream wrote it), a new one when it must be written anew."""
    if isinstance(message, list):
        inspected = [inspect_message(call, m) for m in message]
        return inspected if any(a is not b for a, b in zip(inspected, message)) else message
    if not isinstance(message, dict) or "result" not in message:
        return message
    methods = listing_methods(call, message)
    if not methods:
        return message
    result = message["result"]
    for method in methods:
        result = filter_listing(call.principal.policy, call.upstream.connection_id, method, result)
    return {**message, "result": result}


def encoded(response: http.Response) -> bool:
    value = response.headers.get("Content-Encoding")
    return value is not None and value.strip().lower() not in ("", "identity")


class ListingFilter:
    """Inspects JSON answers (event streams are inspected as they stream)."""

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        call = flow.metadata.get(CALL)
        if call is None or not call.lists or flow.response is None:
            return
        if media_type(flow.response.headers.get("Content-Type")) != EVENT_STREAM and encoded(flow.response):
            refuse_answer(flow, call, "the upstream compressed its answer although the gateway asked for none")

    def response(self, flow: http.HTTPFlow) -> None:
        call = flow.metadata.get(CALL)
        if call is None or flow.response is None:
            return
        if call.failed and not flow.response.stream:
            # Refused on its headers, and it arrived whole before the upstream was cut off.
            flow.response = unchecked_answer(call, call.failed)
            return
        if not call.lists or flow.response.stream:
            return  # only listings are changed; other JSON answers are not even parsed
        if media_type(flow.response.headers.get("Content-Type")) == EVENT_STREAM or not flow.response.raw_content:
            return
        try:
            doc = json.loads(flow.response.raw_content)
        except (ValueError, RecursionError):
            if 200 <= flow.response.status_code < 300:
                flow.response = unchecked_answer(call, "its answer to a listing is not JSON")
            return  # else an upstream's own error page: no listing in it
        inspected = inspect_message(call, doc)
        if inspected is not doc:
            flow.response.set_content(json.dumps(inspected, separators=(",", ":")).encode())


def refuse_answer(flow: http.HTTPFlow, call: McpCall, reason: str) -> None:
    """The upstream's answer must not reach the client: stop reading it, and have
    ``protocol_errors`` answer with a JSON-RPC error saying ``reason`` instead."""
    call.failed = reason
    flow.response.stream = False
    close_upstream(flow)
