"""Request bodies: what may come, how much of it and how fast, decided on the request's headers
before a byte of the body is read.

- An MCP POST carries JSON: ``Content-Type: application/json`` (any letter case, parameters
  allowed) and no ``Content-Encoding``. The gateway decides on the bytes it parsed and forwards
  exactly those, so it decodes no request encoding at all (mitmproxy's decoder falls back to
  Python codecs such as ``quopri``: deciding on a decoded body and forwarding the raw one let a
  denied call through). Either refusal is 415 with a JSON-RPC error.
- An MCP GET or DELETE carries no body (400): a body there would reach the upstream undecided.
- Every proxied request (MCP calls and control-plane paths): a ``Content-Length`` over
  ``mesh_max_request_body`` is answered 413 at once; a body without a length is cut off with 413
  as soon as it grows past the limit (``protocol_errors`` enforces ``BODY_LIMIT`` while mitmproxy
  reads); and the whole body must arrive within ``mesh_body_read_timeout`` seconds, else the
  client's connection is closed.

An answer given here goes out without the body being read (``protocol_errors``), so a caller
cannot make the gateway hold a large body it will refuse anyway.
"""

from __future__ import annotations

import asyncio
import logging
from typing import NamedTuple

from mitmproxy import ctx, http
from mitmproxy.utils import human

from dataplane_addon.call import CALL, LOCAL, connection_handler, rpc_answer
from dataplane_addon.plane_options import parse_seconds
from shared.jsonrpc import INVALID_REQUEST

log = logging.getLogger(__name__)

BODY_LIMIT = "mesh.body_limit"  # flow.metadata: the most body bytes protocol_errors lets mitmproxy read
JSON = "application/json"


def too_large() -> http.Response:
    return rpc_answer(413, INVALID_REQUEST, "Payload too large: the body exceeds the gateway's limit")


class BodyHeaders(NamedTuple):
    """What a request's headers say of its body, read in one pass."""

    length: str | None = None
    chunked: bool = False
    encoding: str | None = None
    media_type: str = ""

    @classmethod
    def of(cls, request: http.Request) -> "BodyHeaders":
        length = encoding = None
        chunked, content_type = False, ""
        for name, value in request.headers.fields:
            lowered = name.lower()
            if lowered == b"content-length":
                length = value.decode("latin-1").strip()
            elif lowered == b"transfer-encoding":
                chunked = True
            elif lowered == b"content-encoding":
                encoding = value.decode("latin-1").strip()
            elif lowered == b"content-type":
                content_type = media_type(value.decode("latin-1"))
        return cls(length, chunked, encoding, content_type)

    @property
    def has_body(self) -> bool:
        return self.chunked or (self.length is not None and self.length != "0")

    def too_long(self, limit: int | None) -> bool:
        return limit is not None and self.length is not None and self.length.isdigit() and int(self.length) > limit


def media_type(value: str | None) -> str:
    return (value or "").partition(";")[0].strip().lower()


def refusal(method: str, body: BodyHeaders) -> http.Response | None:
    """Why an MCP request's body is refused before it is read, as the answer; None if it is not."""
    if method in ("GET", "DELETE"):
        if body.has_body:
            return rpc_answer(400, INVALID_REQUEST, f"Bad request: an MCP {method} carries no body")
        return None
    if body.encoding is not None and body.encoding.lower() != "identity":
        return rpc_answer(415, INVALID_REQUEST, "Unsupported Media Type: the gateway does not accept "
                          f"Content-Encoding {body.encoding!r}; send the body uncompressed",
                          headers={"Accept-Encoding": "identity"})
    if body.media_type != JSON:
        return rpc_answer(415, INVALID_REQUEST, "Unsupported Media Type: an MCP POST must carry "
                          "'Content-Type: application/json'")
    return None


DEFAULT_MAX_BODY = "4m"
DEFAULT_READ_TIMEOUT = "30"


class RequestBodyGuard:
    def __init__(self) -> None:
        # Until configured (the options' defaults, declared below).
        self.max_body: int | None = human.parse_size(DEFAULT_MAX_BODY)
        self.read_timeout = parse_seconds("mesh_body_read_timeout", DEFAULT_READ_TIMEOUT)
        # Flows whose body is still arriving -> the loop time by which it must have. A sweep
        # closes the late ones: cheaper per request than a timer each.
        self.reading: dict[http.HTTPFlow, float] = {}
        self._sweeper: asyncio.Task | None = None

    def load(self, loader) -> None:
        loader.add_option("mesh_max_request_body", str, DEFAULT_MAX_BODY,
                          "Largest request body accepted (e.g. 4m, 512k); larger ones get 413.")
        loader.add_option("mesh_body_read_timeout", str, DEFAULT_READ_TIMEOUT,
                          "Seconds a client may take to send a request body; then its connection is closed.")

    def configure(self, updated) -> None:
        from mitmproxy.exceptions import OptionsError

        if "mesh_max_request_body" in updated:
            try:
                self.max_body = human.parse_size(ctx.options.mesh_max_request_body)
            except ValueError as exc:
                raise OptionsError(f"mesh_max_request_body: {exc}") from None
        if "mesh_body_read_timeout" in updated:
            try:
                self.read_timeout = parse_seconds("mesh_body_read_timeout", ctx.options.mesh_body_read_timeout)
            except ValueError as exc:
                raise OptionsError(str(exc)) from None

    def running(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    def done(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live or LOCAL in flow.metadata:
            return
        body = BodyHeaders.of(flow.request)
        if body.has_body:
            # Also for a request refused below: what is left of its body is read and dropped, for
            # no longer than this.
            flow.metadata[BODY_LIMIT] = self.max_body
            self.reading[flow] = asyncio.get_running_loop().time() + self.read_timeout
        if CALL in flow.metadata and (answer := refusal(flow.request.method, body)) is not None:
            flow.response = answer
        elif body.too_long(self.max_body):
            flow.response = too_large()

    def request(self, flow: http.HTTPFlow) -> None:
        self.reading.pop(flow, None)
        if flow.response or flow.error or not flow.live:
            return
        # A backstop: protocol_errors already stops reading at the limit.
        if self.max_body is not None and len(flow.request.raw_content or b"") > self.max_body:
            flow.response = too_large()

    def error(self, flow: http.HTTPFlow) -> None:
        self.reading.pop(flow, None)

    async def _sweep_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, self.read_timeout / 4))
            now = loop.time()
            for flow in [f for f, deadline in self.reading.items() if deadline <= now]:
                del self.reading[flow]
                self._expire(flow)

    def _expire(self, flow: http.HTTPFlow) -> None:
        handler = connection_handler(flow.client_conn)
        if handler is None:
            return
        if flow.response is not None and (flow.request.is_http2 or flow.request.is_http3):
            return  # a refused stream's leftovers are dropped; the connection serves other streams
        if flow.response is None:
            log.warning("closed the connection from %s: its request body did not arrive within %ss",
                        flow.client_conn.peername[0] if flow.client_conn.peername else "?", self.read_timeout)
        handler.close_connection(flow.client_conn)
