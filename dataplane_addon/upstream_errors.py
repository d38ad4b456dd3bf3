"""Upstream failures on MCP routes are answered with a JSON-RPC error carrying the request's id
(502 when the upstream cannot be reached), not mitmproxy's HTML error page.

mitmproxy 12 has no hook that shapes the answer to a failed upstream connection: its HTTP layer
writes an HTML page after the ``error`` hook. So this module wraps one method of that layer,
``HttpStream.handle_protocol_error``: for flows marked as MCP calls, where no response has begun,
it sends our response through the layer's normal path (``send_response``, which runs the
``response`` hook, so metrics see it). Every other case goes to mitmproxy's own code. The
wrapper is installed once, when the addon loads; ``tests/dataplane`` pins the behaviour, so a
mitmproxy upgrade that changes this method fails loudly.
"""

from __future__ import annotations

from mitmproxy.proxy.layers import http as http_layers
from mitmproxy.proxy.layers.http import ResponseProtocolError

from dataplane_addon.call import CALL, rpc_answer
from shared.jsonrpc import UPSTREAM_UNAVAILABLE

_original = http_layers.HttpStream.handle_protocol_error


def _handle_protocol_error(self, event):
    call = self.flow.metadata.get(CALL)
    if (
        call is not None
        and isinstance(event, ResponseProtocolError)
        and self.flow.response is None
        and self.client_state == self.state_done
    ):
        name = call.upstream.name if call.upstream else call.connection_id
        self.flow.response = rpc_answer(
            502, UPSTREAM_UNAVAILABLE, f"Bad gateway: the upstream of connection {name!r} is unreachable",
            call.request_id,
        )
        yield from self.send_response()
        return
    yield from _original(self, event)


def install() -> None:
    http_layers.HttpStream.handle_protocol_error = _handle_protocol_error


class UpstreamErrors:
    """Addon whose only job is to install the wrapper above when the data plane loads."""

    def load(self, loader) -> None:
        install()
