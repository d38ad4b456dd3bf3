"""The benchmark's upstream: a real MCP server built with the ``mcp`` SDK (Streamable HTTP, one
``echo`` tool), stateless with JSON answers, as a production MCP server would run.

It runs under uvicorn with uvloop and httptools when they are installed (uvicorn's "standard"
extras, in the ``bench`` extra): with plain asyncio and h11 the SDK server costs ~1.1 ms of CPU
per call here, more than the proxy in front of it, so it and not the proxy would set every
throughput figure.

    python -m bench.upstream_server PORT
"""

from __future__ import annotations

import importlib.util
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer


def build_app():
    server = MCPServer("bench-upstream")

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return text

    return server.streamable_http_app(json_response=True, stateless_http=True)


def fastest_available() -> dict[str, str]:
    have = {name: importlib.util.find_spec(name) is not None for name in ("uvloop", "httptools")}
    return {"loop": "uvloop" if have["uvloop"] else "asyncio", "http": "httptools" if have["httptools"] else "h11"}


if __name__ == "__main__":
    uvicorn.run(build_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", lifespan="on",
                access_log=False, **fastest_available())
