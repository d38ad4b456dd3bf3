"""A real stdio MCP server for tests, built with the `mcp` SDK's ``MCPServer``.

Run as ``python tests/upstreams/stdio_server.py`` (``tests.support.STDIO_SERVER``: a bridged
child works in an empty directory, where ``-m tests…`` would not import) or ``python -m
tests.upstreams.stdio_server``; it speaks JSON-RPC on stdin/stdout, like the servers people start
with ``uvx …``. Tools ``echo``, ``add``, ``announce`` (sends ``notifications/tools/list_changed``,
as a server that just added a tool does), ``say`` (a log message at a given level), ``whoami`` (its own pid, so a test
can tell a restarted process from the first one), ``env`` (the value of one environment
variable, so a test can check what the bridge passed in), ``header`` (one header of the HTTP
request that carried the call; always empty on stdio) and ``surroundings`` (its user, groups,
working directory, the names in its environment, and which given paths it can read: what a test
of the bridge's isolation of stdio children asks); a prompt ``greet`` and a resource
``mesh://motd``, so prompts and resources are bridged too.

With the arguments ``sse PORT`` it serves the same tools over the legacy HTTP+SSE transport
(2024-11-05) on 127.0.0.1:PORT, ``/sse`` and ``/messages/``.
"""

from __future__ import annotations

import os
import sys

from mcp.server.mcpserver import Context, MCPServer


def build() -> MCPServer:
    server = MCPServer("stdio-upstream")

    @server.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return text

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    async def announce(ctx: Context) -> str:
        """Tell the client that the list of tools changed."""
        await ctx.session.send_tool_list_changed()
        return "announced"

    @server.tool()
    async def say(level: str, text: str, ctx: Context) -> str:
        """Send ``text`` to the client as a log message at ``level``."""
        await ctx.log(level, text)
        return "said"

    @server.tool()
    def whoami() -> int:
        """The process id of this server."""
        return os.getpid()

    @server.tool()
    def env(name: str) -> str:
        """The value of one environment variable ('' when unset)."""
        return os.environ.get(name, "")

    @server.tool()
    def header(name: str, ctx: Context) -> str:
        """One header of the HTTP request that carried this call ('' when absent or on stdio)."""
        return (ctx.headers or {}).get(name.lower(), "")

    @server.tool()
    def surroundings(paths: list[str]) -> dict:
        """This process's uid, gid, groups, working directory (path, owner, mode, entries), the
        names in its environment, and for each of ``paths`` whether it can read it."""
        cwd = os.getcwd()
        info = os.stat(cwd)
        return {"uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
                "cwd": cwd, "cwd_owner": info.st_uid, "cwd_mode": info.st_mode & 0o777,
                "cwd_entries": sorted(os.listdir(cwd)), "env_names": sorted(os.environ),
                "readable": {path: _readable(path) for path in paths}}

    @server.prompt()
    def greet(name: str) -> str:
        """A greeting for someone."""
        return f"Hello, {name}!"

    @server.resource("mesh://motd")
    def motd() -> str:
        """The message of the day."""
        return "bridged resources work"

    return server


def _readable(path: str) -> bool:
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            with open(path, "rb") as handle:
                handle.read(1)
        return True
    except OSError:
        return False


if __name__ == "__main__":
    if sys.argv[1:2] == ["sse"]:
        build().run(transport="sse", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        build().run()
