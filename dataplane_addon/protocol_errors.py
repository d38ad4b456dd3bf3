"""The gateway's own answers where mitmproxy writes an HTML error page and offers no hook:

- an upstream that cannot be reached (502) or does not answer in time (504), on MCP routes:
  a JSON-RPC error carrying the request's id;
- a body over mitmproxy's hard size cap (413), on any route: a JSON-RPC error. (MCP bodies over
  the configured limit are refused earlier, by ``routing``, with the same answer.)

mitmproxy 12 writes these answers inside its HTTP layer, after the ``error`` hook. So this
module wraps two things there, once, when the addon loads: ``HttpStream.handle_protocol_error``
(for flows marked as MCP calls where no response has begun, our response goes out through the
layer's normal ``send_response``, which runs the ``response`` hook so metrics see it; every
other case goes to mitmproxy's own code) and the HTTP/1 server's ``make_error_response`` (for
413 only). ``tests/e2e`` pins both behaviours, so a mitmproxy upgrade that changes them fails
loudly.
"""

from __future__ import annotations

from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers.http import ResponseProtocolError, _http1

from dataplane_addon.call import CALL, rpc_answer
from shared.jsonrpc import INVALID_REQUEST, UPSTREAM_TIMEOUT, UPSTREAM_UNAVAILABLE, error_body


_original_handle_protocol_error = http_layers.HttpStream.handle_protocol_error
_original_make_error_response = _http1.make_error_response


def _handle_protocol_error(self, event):
    call = self.flow.metadata.get(CALL)
    if (
        call is not None
        and isinstance(event, ResponseProtocolError)
        and self.flow.response is None
        and self.client_state == self.state_done
    ):
        name = call.upstream.name if call.upstream else call.connection_id
        if call.timed_out:
            self.flow.response = rpc_answer(504, UPSTREAM_TIMEOUT, f"Gateway timeout: the upstream of connection "
                                            f"{name!r} did not answer in time", call.request_id)
        else:
            self.flow.response = rpc_answer(502, UPSTREAM_UNAVAILABLE, f"Bad gateway: the upstream of connection "
                                            f"{name!r} is unreachable", call.request_id)
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
    http_layers.HttpStream.handle_protocol_error = _handle_protocol_error
    _http1.make_error_response = _make_error_response


class ProtocolErrors:
    """Addon whose only job is to install the wrappers above when the data plane loads."""

    def load(self, loader) -> None:
        install()
