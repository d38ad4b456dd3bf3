"""Where the gateway must act inside mitmproxy's HTTP layer, which offers no hook for it:

- **Answers given on the request's headers go out before the body is read.** mitmproxy reads a
  request's whole body before it sends a response that an addon set in ``requestheaders``; a
  caller without a valid key could make it hold 60 MB that way. Here, such an answer is sent at
  once, with ``Connection: close``; what is left of the body is read and dropped (never kept),
  and an HTTP/1 connection is half-closed so the client sees the end of the answer.
  (``request_body`` bounds how long that may take.)
- **Bodies without a length stop at the limit.** A body sent without ``Content-Length`` is cut
  off with 413 as soon as it grows past ``request_body.BODY_LIMIT``, not at mitmproxy's much
  larger memory cap.
- **An upstream that cannot be reached (502) or does not answer in time (504)**, on MCP routes:
  a JSON-RPC error carrying the request's id, as long as nothing of the upstream's answer has
  reached the client yet. A call whose answer the gateway failed to check (``McpCall.failed``)
  gets a JSON-RPC internal error the same way; if the answer was an event stream already under
  way, the relay has sent its last event and the client's answer is ended properly.
- **A body over mitmproxy's hard size cap (413)**, on any route: a JSON-RPC error.

Each wrapper replaces one method or function once, when the addon loads, and hands every case it
does not own to mitmproxy's own code. ``tests/e2e`` pins these behaviours, so a mitmproxy upgrade
that changes the internals fails loudly.
"""

from __future__ import annotations

import time

from mitmproxy.proxy import commands
from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers.http import RequestData, ResponseEndOfMessage, ResponseProtocolError, SendHttp, _http1
from mitmproxy.proxy.layers.http._hooks import HttpResponseHeadersHook

from dataplane_addon.call import CALL, address_refused, rpc_answer, unchecked_answer
from dataplane_addon.request_body import BODY_LIMIT, too_large
from shared.jsonrpc import INVALID_REQUEST, UPSTREAM_TIMEOUT, UPSTREAM_UNAVAILABLE, error_body

HttpStream = http_layers.HttpStream
_original_handle_protocol_error = HttpStream.handle_protocol_error
_original_wait_for_request_headers = HttpStream.state_wait_for_request_headers
_original_consume_request_body = HttpStream.state_consume_request_body
_original_make_error_response = _http1.make_error_response


def _answer_before_the_body(self):
    """Send ``self.flow.response`` now, while the request's body is still arriving, and drop the
    rest of that body."""
    response = self.flow.response
    response.headers["Connection"] = "close"
    response.timestamp_start = time.time()
    yield HttpResponseHeadersHook(self.flow)
    yield from self.send_response()  # runs the response hook (metrics see the answer)
    yield SendHttp(ResponseEndOfMessage(self.stream_id), self.context.client)
    self.client_state = self.state_errored  # from now on, request data is consumed silently
    self.flow.live = False
    if not (self.flow.request.is_http2 or self.flow.request.is_http3):
        yield commands.CloseTcpConnection(self.context.client, half_close=True)


def _state_wait_for_request_headers(self, event):
    yield from _original_wait_for_request_headers(self, event)
    if (self.flow is not None and self.flow.response is not None and not event.end_stream
            and self.client_state == self.state_consume_request_body):
        yield from _answer_before_the_body(self)


def _state_consume_request_body(self, event):
    limit = self.flow.metadata.get(BODY_LIMIT)
    if (isinstance(event, RequestData) and limit is not None and self.flow.response is None
            and len(self.request_body_buf) + len(event.data) > limit):
        self.request_body_buf.clear()
        self.flow.response = too_large()
        yield from _answer_before_the_body(self)
        return
    yield from _original_consume_request_body(self, event)


def _nothing_sent_to_the_client(self) -> bool:
    return self.client_state == self.state_done and self.server_state in (
        self.state_wait_for_response_headers, self.state_consume_response_body)


def _handle_protocol_error(self, event):
    call = self.flow.metadata.get(CALL)
    if (call is not None and call.failed and isinstance(event, ResponseProtocolError)
            and self.server_state == self.state_stream_response_body):
        # A stream the gateway cut off (its relay sent the client a last error event and closed
        # the upstream): end the client's answer properly rather than break its connection.
        yield from self.send_response(already_streamed=True)
        return
    if call is not None and isinstance(event, ResponseProtocolError) and _nothing_sent_to_the_client(self):
        name = call.upstream.name if call.upstream else call.connection_id
        if call.failed:
            self.flow.response = unchecked_answer(call, call.failed)
        elif call.timed_out:
            self.flow.response = rpc_answer(504, UPSTREAM_TIMEOUT, f"Gateway timeout: the upstream of connection "
                                            f"{name!r} did not answer in time", call.request_id)
        elif call.refused_address is not None:
            self.flow.response = address_refused(call, call.refused_address)
        else:
            self.flow.response = rpc_answer(502, UPSTREAM_UNAVAILABLE, f"Bad gateway: the upstream of connection "
                                            f"{name!r} is unreachable", call.request_id)
        self.response_body_buf.clear()
        yield from self.send_response()
        return
    yield from _original_handle_protocol_error(self, event)


def _make_error_response(status_code: int, message: str = "") -> bytes:
    if status_code != 413:
        return _original_make_error_response(status_code, message)
    from mitmproxy import http
    from mitmproxy.net.http import http1

    body = error_body(INVALID_REQUEST, "Payload too large: the body exceeds the gateway's limit")
    return http1.assemble_response(http.Response.make(413, body, {"Content-Type": "application/json",
                                                                  "Connection": "close"}))


def install() -> None:
    HttpStream.handle_protocol_error = _handle_protocol_error
    HttpStream.state_wait_for_request_headers = _state_wait_for_request_headers
    HttpStream.state_consume_request_body = _state_consume_request_body
    _http1.make_error_response = _make_error_response


class ProtocolErrors:
    """Addon whose only job is to install the wrappers above when the data plane loads."""

    def load(self, loader) -> None:
        install()
