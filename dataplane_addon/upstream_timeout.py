"""Upstream timeout: an upstream that has not started answering an MCP call within
``mesh_upstream_timeout`` seconds is cut off, and the caller gets 504 with a JSON-RPC error
(written by ``protocol_errors``). Once the answer has begun (a stream may rightly last hours),
only the idle timeout applies.
"""

from __future__ import annotations

import asyncio

from mitmproxy import ctx, http

from dataplane_addon.call import CALL, close_upstream, undecided_call
from dataplane_addon.plane_options import parse_seconds


DEFAULT_TIMEOUT = "60"


class UpstreamTimeout:
    def __init__(self) -> None:
        self.seconds = parse_seconds("mesh_upstream_timeout", DEFAULT_TIMEOUT)  # until configured

    def load(self, loader) -> None:
        loader.add_option("mesh_upstream_timeout", str, DEFAULT_TIMEOUT,
                          "Seconds an upstream may take to start answering an MCP call; then 504.")

    def configure(self, updated) -> None:
        if "mesh_upstream_timeout" in updated:
            from mitmproxy.exceptions import OptionsError

            try:  # read once, not per call
                self.seconds = parse_seconds("mesh_upstream_timeout", ctx.options.mesh_upstream_timeout)
            except ValueError as exc:
                raise OptionsError(str(exc)) from None

    def request(self, flow: http.HTTPFlow) -> None:
        call = undecided_call(flow)
        if call is None or call.upstream is None:
            return
        call.timer = asyncio.get_running_loop().call_later(self.seconds, self._expire, flow)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._cancel(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._cancel(flow)

    @staticmethod
    def _cancel(flow: http.HTTPFlow) -> None:
        call = flow.metadata.get(CALL)
        if call is not None and call.timer is not None:
            call.timer.cancel()
            call.timer = None

    @staticmethod
    def _expire(flow: http.HTTPFlow) -> None:
        call = flow.metadata.get(CALL)
        if flow.response is not None or not flow.live or call is None:
            return
        call.timed_out = True
        close_upstream(flow)  # protocol_errors answers 504
