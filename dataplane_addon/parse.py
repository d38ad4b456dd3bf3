"""Parse: the body of an MCP POST as JSON-RPC, once, with ``shared.jsonrpc``. Bodies that are not
JSON-RPC are answered 400 with the JSON-RPC error code and never forwarded, and so are bodies
whose ``Mcp-Method`` / ``Mcp-Name`` headers say something else (-32020 HeaderMismatch): a header
must never smuggle a call past the policy, which decides on the body."""

from __future__ import annotations

from mitmproxy import http

from dataplane_addon.call import rpc_answer, undecided_call
from shared.jsonrpc import HEADER_MISMATCH, PARSE_ERROR, JsonRpcError, header_mismatch, parse_body


class JsonRpcParser:
    def request(self, flow: http.HTTPFlow) -> None:
        call = undecided_call(flow)
        if call is None or flow.request.method != "POST":
            return
        try:
            body = flow.request.get_content(strict=True) or b""
        except ValueError:
            flow.response = rpc_answer(400, PARSE_ERROR, "Parse error: the body's Content-Encoding cannot be decoded")
            return
        try:
            call.messages = parse_body(body)
        except JsonRpcError as error:
            flow.response = rpc_answer(400, error.code, error.message, error.request_id)
            return
        mismatch = header_mismatch(call.messages, flow.request.headers.get_all)
        if mismatch is not None:
            flow.response = rpc_answer(400, HEADER_MISMATCH, f"Header mismatch: {mismatch}", call.request_id)
