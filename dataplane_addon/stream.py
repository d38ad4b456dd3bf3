"""Stream: server-sent event answers go to the client as they come, never buffered whole (a GET
stream may stay open for hours). Inspection of each event arrives with the transport issue."""

from __future__ import annotations

from mitmproxy import http

from dataplane_addon.call import CALL


class EventStreamPassthrough:
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        call = flow.metadata.get(CALL)
        if call is None or flow.response is None or call.lists:
            return  # listings are buffered, to be filtered
        if flow.response.headers.get("Content-Type", "").startswith("text/event-stream"):
            flow.response.stream = True
