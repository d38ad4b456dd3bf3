"""Inspect: every JSON-RPC message an upstream sends back, in a JSON body (here) or in an event
stream (``stream.EventRelay``), goes through ``inspect_message``: answers to ``tools/list``,
``prompts/list``, ``resources/list`` and ``resources/templates/list`` keep only what the caller's
policy allows.
"""

from __future__ import annotations

import json
from typing import Any

from mitmproxy import http

from dataplane_addon.call import CALL, McpCall
from shared.policy import filter_listing


def inspect_message(call: McpCall, message: Any) -> Any:
    """The message as the caller may see it (the same object when nothing changes)."""
    if isinstance(message, dict) and "result" in message and call.lists:
        method = call.lists.get(message.get("id"))
        if method is not None:
            return {**message, "result": filter_listing(call.principal.policy, call.upstream.connection_id, method,
                                                        message["result"])}
    return message


class ListingFilter:
    """Inspects JSON answers (event streams are inspected as they stream)."""

    def response(self, flow: http.HTTPFlow) -> None:
        call = flow.metadata.get(CALL)
        if call is None or not call.lists or flow.response is None or flow.response.stream:
            return  # only listings are changed; other JSON answers are not even parsed
        if not flow.response.headers.get("Content-Type", "").startswith("application/json"):
            return
        try:
            doc = json.loads(flow.response.get_content(strict=False) or b"")
        except ValueError:
            return
        if isinstance(doc, list):
            inspected = [inspect_message(call, m) for m in doc]
            changed = any(a is not b for a, b in zip(inspected, doc))
        else:
            inspected = inspect_message(call, doc)
            changed = inspected is not doc
        if changed:
            flow.response.set_content(json.dumps(inspected, separators=(",", ":")).encode())
