"""The one call every measurement makes: a stateless (2026-07-28) ``tools/call`` of ``echo``,
with the headers the upstream requires (``Mcp-Method``, ``Mcp-Name``), as the SDK's client
sends it. Built once here, so wrk, the fixed-rate client, the propagation poller and the chain
micro-benchmark all send the same bytes."""

from __future__ import annotations

import json

PROTOCOL = "2026-07-28"


def echo_body(text: str = "hello", request_id: int = 1) -> bytes:
    meta = {
        "io.modelcontextprotocol/protocolVersion": PROTOCOL,
        "io.modelcontextprotocol/clientInfo": {"name": "mesh-bench", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    doc = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
           "params": {"name": "echo", "arguments": {"text": text}, "_meta": meta}}
    return json.dumps(doc).encode()


def echo_headers(api_key: str | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": PROTOCOL, "Mcp-Method": "tools/call", "Mcp-Name": "echo"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def raw_request(port: int, path: str, api_key: str | None = None) -> bytes:
    """The whole HTTP/1.1 request, keep-alive, ready to write to a socket."""
    body = echo_body()
    headers = {"Host": f"127.0.0.1:{port}", **echo_headers(api_key), "Content-Length": str(len(body))}
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode() + body
