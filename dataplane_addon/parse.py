"""Parse: the body of an MCP POST as JSON-RPC, once, with ``shared.jsonrpc``, and replace it by the
canonical bytes of what was parsed: the upstream receives exactly the message the gateway
decided on, whatever spelling the caller used.

Bodies that are not JSON-RPC, or that JSON decoders could read differently (duplicate or
case-colliding keys, ``NaN``, lone surrogates, nesting too deep), are answered 400 with the
JSON-RPC error code and never forwarded, and so are bodies whose ``Mcp-Method`` / ``Mcp-Name``
headers say something else (-32020 HeaderMismatch): a header must never smuggle a call past the
policy, which decides on the body. (``request_body`` has already refused encoded bodies, so the
raw bytes are the body.)"""

from __future__ import annotations

import logging

from mitmproxy import http

from dataplane_addon.call import rpc_answer, undecided_call
from shared.jsonrpc import HEADER_MISMATCH, TOO_DEEP, JsonRpcError, header_mismatch, parse_body

log = logging.getLogger(__name__)


class JsonRpcParser:
    def request(self, flow: http.HTTPFlow) -> None:
        call = undecided_call(flow)
        if call is None or flow.request.method != "POST":
            return
        try:
            body = parse_body(flow.request.raw_content or b"")
        except JsonRpcError as error:
            if error.message == TOO_DEEP:  # one line, not a traceback per request
                log.warning("refused a body nested too deeply for connection %s", call.connection_id)
            flow.response = rpc_answer(400, error.code, error.message, error.request_id)
            return
        call.messages = body.messages
        flow.request.raw_content = body.canonical
        mismatch = header_mismatch(call.messages, flow.request.headers.get_all)
        if mismatch is not None:
            flow.response = rpc_answer(400, HEADER_MISMATCH, f"Header mismatch: {mismatch}", call.request_id)
