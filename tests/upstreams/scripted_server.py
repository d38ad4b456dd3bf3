"""An upstream that answers the way a buggy or hostile MCP server might, for tests of what the
gateway lets through. The query names the scenario (``/mcp?s=<scenario>``); every
answer is to a ``tools/list`` and lists the tools ``echo``, ``add`` and ``delete_everything``,
which a caller allowed only ``echo`` must never see beyond ``echo``.

Run as ``python -m tests.upstreams.scripted_server PORT LOG``. Each request (method, path,
headers, body in base64) is appended to LOG as a JSON line.

Scenarios:
- ``json-type:<content type>``: a JSON answer with that ``Content-Type`` (``none``: no header).
- ``sse-array``: an event stream whose one event holds the answer inside a JSON array.
- ``json-deep``: a JSON answer nested 100,000 levels deep (no parser reads it).
- ``json-gzip`` / ``sse-gzip``: the answer compressed although the request asked for none.
- ``sse-endless-event:<MiB>``: an event that never ends: ``data:`` followed by that many MiB,
  sent in 4 KiB chunks, with no blank line.
- ``sse-unterminated``: the answer in an event the stream ends before its blank line.
- ``replay``: (GET) a stream replaying an answer to a listing whose id this GET never sent.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import sys
from urllib.parse import parse_qs

import uvicorn

TOOLS = {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in ("echo", "add", "delete_everything")]}


def answer(request_id) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "result": TOOLS}).encode()


def build(log_path: str):
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        with open(log_path, "a") as log:
            log.write(json.dumps({"method": scope["method"], "path": scope["path"], "headers": headers,
                                  "body_b64": base64.b64encode(body).decode()}) + "\n")
        scenario = parse_qs(scope["query_string"].decode()).get("s", [""])[0]
        try:
            request_id = json.loads(body).get("id") if body else None
        except (ValueError, AttributeError):
            request_id = None

        async def start(status: int, pairs: list[tuple[str, str]]):
            await send({"type": "http.response.start", "status": status,
                        "headers": [(k.encode(), v.encode()) for k, v in pairs]})

        async def chunk(data: bytes, more: bool = True):
            await send({"type": "http.response.body", "body": data, "more_body": more})

        if scenario.startswith("json-type:"):
            content_type = scenario.partition(":")[2]
            await start(200, [] if content_type == "none" else [("content-type", content_type)])
            await chunk(answer(request_id), more=False)
        elif scenario == "sse-array":
            await start(200, [("content-type", "text/event-stream")])
            await chunk(b"data: [" + answer(request_id) + b"]\n\n", more=False)
        elif scenario == "json-deep":
            await start(200, [("content-type", "application/json")])
            await chunk(b"[" * 100_000 + b"]" * 100_000, more=False)
        elif scenario == "json-gzip":
            await start(200, [("content-type", "application/json"), ("content-encoding", "gzip")])
            await chunk(gzip.compress(answer(request_id)), more=False)
        elif scenario == "sse-gzip":
            await start(200, [("content-type", "text/event-stream"), ("content-encoding", "gzip")])
            await chunk(gzip.compress(b"data: " + answer(request_id) + b"\n\n"), more=False)
        elif scenario.startswith("sse-endless-event:"):
            mebibytes = int(scenario.partition(":")[2])
            await start(200, [("content-type", "text/event-stream")])
            await chunk(b'data: {"jsonrpc":"2.0","id":' + json.dumps(request_id).encode() + b',"result":{"x":"')
            piece = b"a" * 4096
            for _ in range(mebibytes * 256):
                await chunk(piece)
            await asyncio.sleep(5)  # a stream that stays open: the gateway must end it
            await chunk(b"", more=False)
        elif scenario == "sse-unterminated":
            await start(200, [("content-type", "text/event-stream")])
            await chunk(b"data: " + answer(request_id) + b"\n", more=False)
        elif scenario == "replay":
            await start(200, [("content-type", "text/event-stream")])
            await chunk(b"id: 41\ndata: " + answer("an-earlier-request") + b"\n\n", more=False)
        else:
            await start(404, [("content-type", "text/plain")])
            await chunk(b"no such scenario", more=False)

    return app


if __name__ == "__main__":
    uvicorn.run(build(sys.argv[2]), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
