"""Stream: server-sent event answers go to the client event by event, as the upstream sends them
(a GET stream may stay open for hours; a tool's progress must arrive before its result), and
every JSON-RPC message inside passes the same inspection as a JSON body (``inspect``).

mitmproxy calls the stream callable per network chunk, and chunks do not align with events, so
``EventRelay`` keeps the incomplete tail of the last event until its blank line arrives. It
returns a list (an empty one while an event is incomplete: an empty bytes chunk would end an
HTTP/1 chunked body). Requests on MCP routes ask the upstream for no compression
(``inject``), so the chunks can be read.
"""

from __future__ import annotations

import json

from mitmproxy import http

from dataplane_addon.call import CALL, McpCall
from dataplane_addon.inspect import inspect_message
from shared.sse import Event, split_events


class EventRelay:
    def __init__(self, call: McpCall) -> None:
        self.call = call
        self.pending = b""

    def __call__(self, chunk: bytes) -> list[bytes]:
        if not chunk:  # the end of the stream: pass on whatever is left as it is
            rest, self.pending = self.pending, b""
            return [rest] if rest else []
        events, self.pending = split_events(self.pending + chunk)
        if not events:
            return []
        return [b"".join(self.relay(event) for event in events)]

    def relay(self, event: Event) -> bytes:
        data = event.data
        if data is None:
            return event.encode()
        try:
            message = json.loads(data)
        except ValueError:
            return event.encode()  # not JSON-RPC: nothing for us to decide on
        inspected = inspect_message(self.call, message)
        if inspected is message:
            return event.encode()
        return event.with_data(json.dumps(inspected, separators=(",", ":"))).encode()


class EventStreamInspector:
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        call = flow.metadata.get(CALL)
        if call is None or flow.response is None:
            return
        if flow.response.headers.get("Content-Type", "").startswith("text/event-stream"):
            flow.response.stream = EventRelay(call)
