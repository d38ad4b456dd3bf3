"""Connecting to an upstream MCP server from the control plane, with the `mcp` SDK's client, to
see that it answers and what it offers (``CONNECTION_TEST``). The only place the control plane
talks MCP to an upstream; proxied calls never come here.

An http connection is called directly, through ``shared.guarded_http`` (only where the address
rules allow); a stdio or sse one through the running bridge, which relays it for the data plane
too (``control_plane.bridge_client``). Either way the caller hands over the HTTP client to use."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from control_plane import bridge_client
from control_plane.models import Connection
from control_plane.services.secrets import clear_headers
from control_plane.settings import Settings
from shared.envelope import EnvelopeError
from shared.guarded_http import ADDRESS_REFUSED, NAME_NOT_RESOLVED, guarded_client
from shared.upstream_addresses import AddressRules
from shared.vocabulary import Status, Transport

TIMEOUT = 10.0
PICKUP_WAIT = 3.0  # a connection just added reaches the bridge through Redis within about a second


@dataclass
class ProbeResult:
    ok: bool
    latency_ms: float
    server: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def _causes(error: BaseException):
    """``error`` and what caused it, outermost first (the first of each exception group)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, BaseExceptionGroup) and error.exceptions:
            error = error.exceptions[0]
            continue
        yield error
        error = error.__cause__ or error.__context__


def reason(error: BaseException) -> str:
    """What went wrong, for the admin, in words: ``connection refused``, ``name not resolved``,
    ``TLS: …``, ``timed out``, ``HTTP 401``, the gateway's own refusals (they name an address,
    never a secret), the upstream's MCP error. Anything else by its type alone: an exception's
    text may quote a URL with its credentials."""
    for cause in _causes(error):
        if isinstance(cause, httpx2.ConnectError) and str(cause).startswith((ADDRESS_REFUSED, NAME_NOT_RESOLVED)):
            return str(cause)
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS: {cause.verify_message or 'certificate verify failed'}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS: {(cause.reason or type(cause).__name__).replace('_', ' ').lower()}"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return NAME_NOT_RESOLVED
        if isinstance(cause, (TimeoutError, httpx2.TimeoutException)):
            return "timed out"
        if isinstance(cause, httpx2.HTTPStatusError):
            return f"HTTP {cause.response.status_code} {cause.response.reason_phrase}".rstrip()
        if isinstance(cause, MCPError):
            return f"the upstream answered: {cause.message}"
    first = next(_causes(error), error)
    return type(first).__name__


async def probe(url: str, client: Callable[[], httpx2.AsyncClient], timeout: float = TIMEOUT) -> ProbeResult:
    """Talk MCP to ``url`` over ``client()`` (made on the probe's own event loop)."""
    started = time.perf_counter()
    try:
        with anyio.fail_after(timeout):
            async with client() as http:
                async with Client(streamable_http_client(url, http_client=http)) as client_session:
                    listed = await client_session.list_tools()
                    info = client_session.server_info
        tools = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in listed.tools]
        server = info.model_dump(mode="json", exclude_none=True) if info is not None else {}
        return ProbeResult(True, round((time.perf_counter() - started) * 1000, 1), server, tools)
    except Exception as exc:  # any failure is the result of the test, described without secrets
        return ProbeResult(False, round((time.perf_counter() - started) * 1000, 1), error=reason(exc))


def probe_blocking(url: str, client: Callable[[], httpx2.AsyncClient], timeout: float = TIMEOUT) -> ProbeResult:
    """``probe`` from synchronous service code: on the caller's event loop when called from one
    of its worker threads (the management server), else on a loop of its own (the CLI)."""
    try:
        return anyio.from_thread.run(probe, url, client, timeout)
    except RuntimeError:  # not in a worker thread of an event loop
        return anyio.run(probe, url, client, timeout)


def probe_connection(connection: Connection, settings: Settings, rules: AddressRules) -> ProbeResult:
    """``CONNECTION_TEST``: an http connection directly, where ``rules`` allow; a stdio or sse
    one through the bridge of the gateway running with ``settings``' data dir."""
    if Transport(connection.transport).bridged:
        return _through_bridge(connection, settings)
    return _directly(connection, rules)


def _directly(connection: Connection, rules: AddressRules) -> ProbeResult:
    # The secrets are opened with the master key, for the origin the connection points at now,
    # for this one probe, and not kept.
    try:
        headers = dict(clear_headers(connection))
    except EnvelopeError:
        return ProbeResult(False, 0.0, error="its secrets cannot be opened for its current URL: set them again")
    return probe_blocking(connection.url, lambda: guarded_client(rules, connection.allow_private, headers=headers,
                                                                 timeout=TIMEOUT))


def _through_bridge(connection: Connection, settings: Settings) -> ProbeResult:
    """The bridge runs the command (or holds the SSE stream) and opens the secrets itself; it
    knows the connection once the gateway has published it (within a second or two)."""
    deadline = time.monotonic() + PICKUP_WAIT
    while (health := bridge_client.health(settings)) is not None and connection.id not in health \
            and connection.status == Status.ACTIVE and time.monotonic() < deadline:
        time.sleep(0.2)
    if health is None:
        return ProbeResult(False, 0.0, error=f"{connection.transport} connections are tested through the gateway's "
                                             "bridge, and no gateway runs with this data dir: start it (`mesh up`)")
    state = health.get(connection.id)
    if state is None:
        why = "it is inactive" if connection.status != Status.ACTIVE else "it has not picked the connection up"
        return ProbeResult(False, 0.0, error=f"the bridge does not relay it: {why}")
    if state.get("state") == "waiting":  # starting: the bridge holds the request until it is ready
        restarts = state.get("restarts") or 0
        return ProbeResult(False, 0.0, error=f"the bridge cannot start it ({state.get('state')}, restarts {restarts}): "
                                             f"{state.get('last_error') or 'not ready yet'}")
    sent = bridge_client.headers(settings) or {}
    return probe_blocking(bridge_client.connection_url(settings, connection.id),
                          lambda: httpx2.AsyncClient(headers=sent, trust_env=False, timeout=TIMEOUT))
