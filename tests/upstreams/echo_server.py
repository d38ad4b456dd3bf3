"""A real upstream MCP server for tests, built with the `mcp` SDK: tools ``echo`` and ``add``,
resources ``file:///docs/readme`` and ``file:///private/plan`` (one inside ``file:///docs/``, one
outside, for resource permissions).

Run as ``python -m tests.upstreams.echo_server PORT [HEADER_LOG] [--require-bearer TOKEN]``.
Every request's method, path, headers and body (as text, and its exact bytes in base64) are
appended to HEADER_LOG as JSON lines, so tests can assert on exactly what reached the upstream
(and that a denied call never did). With
``--require-bearer`` every request without ``Authorization: Bearer TOKEN`` is answered 401
(after being logged), as an upstream with its own credentials would.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json

import uvicorn
from mcp.server.mcpserver import Context, MCPServer


def build(header_log: str | None, required_bearer: str | None = None):
    server = MCPServer("echo-upstream")

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return text

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.resource("file:///docs/readme", name="readme", mime_type="text/plain")
    def readme() -> str:
        return "the docs' readme"

    @server.resource("file:///private/plan", name="plan", mime_type="text/plain")
    def plan() -> str:
        return "the private plan"

    @server.tool()
    async def count_slowly(ctx: Context, steps: int = 3, interval: float = 1.0) -> str:
        """Report progress ``steps`` times, ``interval`` seconds apart, then answer."""
        try:
            for step in range(1, steps + 1):
                await ctx.report_progress(step, steps, f"step {step}")
                await asyncio.sleep(interval)
        except asyncio.CancelledError:
            if header_log:  # so tests can see that a caller's disconnect reached the tool
                with open(header_log, "a") as log:
                    log.write(json.dumps({"method": "CANCELLED", "path": "count_slowly", "headers": {}, "body": ""}) + "\n")
            raise
        return f"counted to {steps}"

    app = server.streamable_http_app()
    if header_log is None and required_bearer is None:
        return app

    async def recording(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        entry = {"method": scope["method"], "path": scope["path"], "headers": headers, "body": ""}
        if header_log is not None:
            with open(header_log, "a") as log:
                log.write(json.dumps(entry) + "\n")
        if required_bearer is not None and headers.get("authorization") != f"Bearer {required_bearer}":
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"www-authenticate", b'Bearer realm="echo-upstream"')]})
            await send({"type": "http.response.body", "body": b'{"error": "unauthorized"}'})
            return
        chunks: list[bytes] = []

        async def receive_and_record():
            message = await receive()
            if message["type"] == "http.request" and header_log is not None:
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    with open(header_log, "a") as log:
                        raw = b"".join(chunks)
                        log.write(json.dumps({**entry, "body": raw.decode(errors="replace"),
                                              "body_b64": base64.b64encode(raw).decode()}) + "\n")
            return message

        await app(scope, receive_and_record, send)

    return recording


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("header_log", nargs="?")
    parser.add_argument("--require-bearer", metavar="TOKEN")
    args = parser.parse_args()
    uvicorn.run(build(args.header_log, args.require_bearer), host="127.0.0.1", port=args.port,
                log_level="warning", lifespan="on")
