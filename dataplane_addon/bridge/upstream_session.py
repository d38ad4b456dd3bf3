"""One bridged upstream, opened as an initialized ``mcp`` ``ClientSession``: a stdio command run
as a child process (``stdio_client``) or a legacy HTTP+SSE server (``sse_client``).

This module owns what an upstream *is* (``UpstreamSpec``, built from a snapshot's route) and how
one is opened; it does not decide when to open or reopen one (``supervisor.py`` does).

Environment values and header values are secrets: they are passed to the child or the server
and appear nowhere else (not in ``repr``, logs or errors). A child's environment, user and
working directory come from ``child_isolation.py``: the SDK's short default list (``HOME``,
``PATH``, …) plus the connection's own ``env``, never the bridge's (its token, the data-plane
key, the Redis URL), in an empty directory of its own.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import mcp_types as types
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED

from dataplane_addon.bridge.child_isolation import ChildIsolation
from shared.credentials import field_kind, header_for, mask_url, open_delivered, route_origin
from shared.guarded_http import guarded_client
from shared.upstream_addresses import AddressRules
from shared.vocabulary import Transport

# How long a fresh upstream may take to answer ``initialize`` (``npx`` may download a package).
START_TIMEOUT = 60.0
HTTP_TIMEOUT = 10.0
# A legacy SSE stream silent for this long is taken for dead; the supervisor's pings keep a
# healthy one busy well within it.
SSE_READ_TIMEOUT = 120.0

CLIENT_INFO = types.Implementation(name="mcp-mesh-bridge", version="0.1.0")

# The child is started through ``sh`` only to learn its pid: the shell writes its own pid to a
# file and ``exec``s the command (through ``setpriv`` when it runs as another user, which
# ``exec``s it in turn), which keeps that pid. The shell writes the file before the user is
# switched, so the child cannot rewrite it. The command and its arguments travel as positional
# parameters, so nothing in them is ever interpreted by the shell.
_RECORD_PID_AND_EXEC = 'echo $$ > "$0" && exec "$@"'


class UpstreamStartFailed(Exception):
    """The upstream went away before ``initialize`` completed; the message says how."""


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    """Everything needed to open one bridged upstream; equal specs mean the same upstream."""

    transport: Transport  # STDIO or SSE
    name: str
    command: str = ""
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    url: str = ""
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    private_ok: bool = False  # sse: registered by the operator, so it may be on a private address

    @classmethod
    def from_route(cls, connection_id: str, org_id: str, route, keyring) -> UpstreamSpec:
        """From a ``shared.snapshot.ConnectionRoute`` whose transport is bridged, its credentials
        opened with the data-plane key: ``env:NAME`` for a stdio command, headers for sse.
        Raises ``EnvelopeError`` or ``ValueError`` (never with secret material) when they cannot be."""
        opened = {}
        if route.credentials:
            if keyring is None:
                raise ValueError("this bridge holds no data-plane key")
            origin = route_origin(route.transport, route.url)
            opened = {f: open_delivered(org_id, connection_id, f, r, keyring, origin=origin)
                      for f, r in route.credentials.items()}
        if route.transport == Transport.STDIO:
            env = {field_kind(f)[1]: v for f, v in opened.items() if field_kind(f)[0] == "env"}
            return cls(Transport.STDIO, route.name, command=route.command, args=tuple(route.args),
                       env=tuple(sorted(env.items())))
        headers = [h for f, v in opened.items() if (h := header_for(f, v)) is not None]
        return cls(Transport.SSE, route.name, url=route.url, headers=tuple(sorted(headers)), private_ok=route.allow_private)

    def describe(self) -> str:
        """For logs and ``/health``: the command line or URL (its query values masked), never env
        or header values."""
        if self.transport == Transport.STDIO:
            return shlex.join([self.command, *self.args])
        return mask_url(self.url)


class WatchedReadStream:
    """A transport's read stream that notes when it ends (``ended``), so the supervisor learns
    at once that a child exited or an SSE stream dropped, without waiting for a failed call."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.ended = anyio.Event()

    @property
    def last_context(self):  # the dispatcher restores the sender's context from here, if any
        return getattr(self._inner, "last_context", None)

    async def receive(self):
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.ended.set()
            raise

    def __aiter__(self) -> WatchedReadStream:
        return self

    async def __anext__(self):
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self.ended.set()
        await self._inner.aclose()

    async def __aenter__(self) -> WatchedReadStream:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()


@dataclass(slots=True)
class OpenUpstream:
    session: ClientSession
    initialized: types.InitializeResult
    ended: anyio.Event
    pid: int | None = None


def _stdio_parameters(spec: UpstreamSpec, pid_file: Path, isolation: ChildIsolation,
                      cwd: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command="/bin/sh",
        args=["-c", _RECORD_PID_AND_EXEC, str(pid_file), *isolation.command_prefix(), spec.command, *spec.args],
        env=isolation.environment(dict(spec.env)), cwd=cwd)


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


@asynccontextmanager
async def open_upstream(spec: UpstreamSpec, pid_file: Path, isolation: ChildIsolation,
                        rules: AddressRules, callbacks: dict[str, Any] | None = None) -> AsyncIterator[OpenUpstream]:
    """Start (stdio) or connect to (sse) the upstream and complete ``initialize``, with
    ``callbacks`` (``relay.Relay.client_callbacks``) receiving what it sends; on exit the
    child's whole process group is stopped (the SDK closes stdin, then SIGTERM, then SIGKILL),
    then its working directory removed. An sse server is reached only where ``rules`` allow
    (checked at every connect, as the data plane checks its upstreams)."""
    with ExitStack() as workdir:
        if spec.transport == Transport.STDIO:
            pid_file.unlink(missing_ok=True)
            cwd = workdir.enter_context(isolation.working_directory())
            transport = stdio_client(_stdio_parameters(spec, pid_file, isolation, cwd))
        elif spec.transport == Transport.SSE:
            transport = sse_client(spec.url, headers=dict(spec.headers), timeout=HTTP_TIMEOUT,
                                   sse_read_timeout=SSE_READ_TIMEOUT,
                                   httpx_client_factory=functools.partial(guarded_client, rules, spec.private_ok))
        else:
            raise ValueError(f"transport {spec.transport!r} is not bridged")
        async with _initialized(spec, transport, pid_file, callbacks or {}) as upstream:
            yield upstream


@asynccontextmanager
async def _initialized(spec: UpstreamSpec, transport, pid_file: Path,
                       callbacks: dict[str, Any]) -> AsyncIterator[OpenUpstream]:
    """A client session over ``transport``, once the upstream has answered ``initialize``.

    An upstream that logs is asked for every level: it has one level for all the clients
    sharing it, so each client's own choice is applied by the bridge (``relay.py``)."""
    async with transport as (read_stream, write_stream):
        watched = WatchedReadStream(read_stream)
        async with ClientSession(watched, write_stream, client_info=CLIENT_INFO, **callbacks) as session:
            try:
                with anyio.fail_after(START_TIMEOUT):
                    initialized = await session.initialize()
            except MCPError as error:
                if error.code != CONNECTION_CLOSED:
                    raise
                what = "the process exited" if spec.transport == Transport.STDIO else "the SSE stream closed"
                # The child's own complaint (command not found, a crash) is on the bridge's stderr.
                raise UpstreamStartFailed(f"{what} before answering initialize") from None
            if initialized.capabilities.logging:
                with anyio.fail_after(START_TIMEOUT):
                    await session.send_request(types.SetLevelRequest(
                        params=types.SetLevelRequestParams(level="debug")), types.EmptyResult)
            pid = _read_pid(pid_file) if spec.transport == Transport.STDIO else None
            yield OpenUpstream(session, initialized, watched.ended, pid)
