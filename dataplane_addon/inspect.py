"""Inspect: answers to ``tools/list``, ``prompts/list``, ``resources/list`` and
``resources/templates/list`` keep only what the caller's policy allows, whether the upstream
answered with JSON or with server-sent events. Such answers are short and are buffered to be
filtered (``stream`` leaves them alone); everything else streams through untouched.
"""

from __future__ import annotations

import json
import logging

from mitmproxy import http

from dataplane_addon.call import CALL
from shared.policy import filter_listing
from shared.sse import split_events

log = logging.getLogger(__name__)


class ListingFilter:
    def response(self, flow: http.HTTPFlow) -> None:
        call = flow.metadata.get(CALL)
        if call is None or not call.lists or flow.response is None or call.upstream is None:
            return
        content_type = flow.response.headers.get("Content-Type", "")
        body = flow.response.get_content(strict=False) or b""
        if content_type.startswith("application/json"):
            filtered = self._filter_json(call, body)
        elif content_type.startswith("text/event-stream"):
            events, rest = split_events(body)
            filtered = b"".join(self._filter_event(call, e) for e in events) + rest
        else:
            return
        if filtered is not None:
            flow.response.set_content(filtered)

    def _filter_message(self, call, message):
        if isinstance(message, dict) and message.get("id") in call.lists and "result" in message:
            method = call.lists[message["id"]]
            return {**message, "result": filter_listing(call.principal.policy, call.upstream.connection_id, method,
                                                        message["result"])}
        return message

    def _filter_json(self, call, body: bytes) -> bytes | None:
        try:
            doc = json.loads(body)
        except ValueError:
            return None
        doc = [self._filter_message(call, m) for m in doc] if isinstance(doc, list) else self._filter_message(call, doc)
        return json.dumps(doc, separators=(",", ":")).encode()

    def _filter_event(self, call, event) -> bytes:
        data = event.data
        if data is None:
            return event.encode()
        try:
            message = json.loads(data)
        except ValueError:
            return event.encode()
        return event.with_data(json.dumps(self._filter_message(call, message), separators=(",", ":"))).encode()
