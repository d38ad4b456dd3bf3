"""Stream: server-sent event answers go to the client event by event, as the upstream sends them
(a GET stream may stay open for hours; a tool's progress must arrive before its result), and
every JSON-RPC message inside (a message or a batch) passes the same inspection as a JSON body
(``inspect``).

mitmproxy calls the stream callable per network chunk, and chunks do not align with events, so
``EventRelay`` cuts the stream into whole events (``shared.sse.EventSplitter``, which scans each
byte once and holds at most ``mesh_max_event`` bytes of an unfinished event). It returns a list
(an empty one while an event is incomplete: an empty bytes chunk would end an HTTP/1 chunked
body). Requests on MCP routes ask the upstream for no compression (``inject``), so the chunks
can be read.

It fails closed: an event whose data is not JSON is not passed on (MCP events carry JSON-RPC); an
event that grows past the limit, or any failure while inspecting, ends the relay: the client gets
one last event with a JSON-RPC error (when the stream answers a request) and the upstream
connection is closed. An event the stream ends in the middle of is dropped, as ``EventSource``
does. A compressed event stream is refused before anything of it is sent (``inspect``).
"""

from __future__ import annotations

import json
import logging

from mitmproxy import ctx, http
from mitmproxy.utils import human

from dataplane_addon.call import CALL, McpCall, close_upstream
from dataplane_addon.inspect import EVENT_STREAM, encoded, inspect_message, refuse_answer
from dataplane_addon.request_body import media_type
from shared.jsonrpc import INTERNAL_ERROR, error_body
from shared.sse import Event, EventSplitter

log = logging.getLogger(__name__)


class EventRelay:
    def __init__(self, flow: http.HTTPFlow, call: McpCall, max_event: int) -> None:
        self.flow = flow
        self.call = call
        self.splitter = EventSplitter(max_event)
        self.ended = False  # the relay has given up on this stream: nothing more goes out

    def __call__(self, chunk: bytes) -> list[bytes]:
        if self.ended:
            return []
        try:
            if not chunk:  # the end of the stream
                self.splitter.close()
                return []
            events = self.splitter.feed(chunk)
            out = b"".join(self.relay(event) for event in events)
        except Exception as error:  # noqa: BLE001 - whatever went wrong, nothing unchecked goes out
            return self.give_up(error)
        return [out] if out else []

    def relay(self, event: Event) -> bytes:
        data = event.data
        if data is None:
            return event.encode()  # comments, retry hints, ids without data: nothing to decide on
        try:
            message = json.loads(data)
        except ValueError:
            return b""  # not JSON-RPC: no client of MCP can use it, and it is not checked
        inspected = inspect_message(self.call, message)
        if inspected is message:
            return event.encode()
        return event.with_data(json.dumps(inspected, separators=(",", ":"))).encode()

    def give_up(self, error: Exception) -> list[bytes]:
        self.ended = True
        name = self.call.upstream.name if self.call.upstream else self.call.connection_id
        log.error("stopped relaying the event stream of connection %s: %s", name, error)
        self.call.failed = f"its event stream could not be checked ({type(error).__name__})"
        close_upstream(self.flow)
        request_id = self.call.request_id
        if request_id is None:
            return []
        body = error_body(INTERNAL_ERROR, f"The answer of connection {name!r} was cut off: the gateway could not "
                                          "check the rest of it", request_id)
        return [Event([("data", body.decode())]).encode()]


DEFAULT_MAX_EVENT = "16m"


class EventStreamInspector:
    def __init__(self) -> None:
        self.max_event = human.parse_size(DEFAULT_MAX_EVENT)  # until configured

    def load(self, loader) -> None:
        loader.add_option("mesh_max_event", str, DEFAULT_MAX_EVENT,
                          "Largest server-sent event the gateway inspects; a larger one ends the stream.")

    def configure(self, updated) -> None:
        if "mesh_max_event" in updated:
            from mitmproxy.exceptions import OptionsError

            try:
                self.max_event = human.parse_size(ctx.options.mesh_max_event)
            except ValueError as exc:
                raise OptionsError(f"mesh_max_event: {exc}") from None

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        call = flow.metadata.get(CALL)
        if call is None or flow.response is None or call.failed:
            return
        if media_type(flow.response.headers.get("Content-Type")) != EVENT_STREAM:
            return
        if encoded(flow.response):
            refuse_answer(flow, call, "the upstream compressed its event stream although the gateway asked for none")
            return
        flow.response.stream = EventRelay(flow, call, self.max_event)
