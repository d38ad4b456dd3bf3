"""Connecting to an upstream MCP server from the control plane, with the `mcp` SDK's client, to
see that it answers and what it offers (``CONNECTION_TEST``). The only place the control plane
talks MCP to an upstream; proxied calls never come here."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from shared.guarded_http import guarded_client
from shared.upstream_addresses import AddressRules


@dataclass
class ProbeResult:
    ok: bool
    latency_ms: float
    server: dict[str, Any] = field(default_factory=dict)
    tools: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def _reason(error: BaseException) -> str:
    """What went wrong, for the admin: the gateway's own refusals in words (they name an address,
    never a secret), anything else by its type."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    seen = error
    while seen is not None:
        if isinstance(seen, httpx2.ConnectError) and str(seen).startswith(("address not allowed", "cannot resolve")):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    return "timed out" if isinstance(error, TimeoutError) else type(error).__name__


async def probe(url: str, headers: dict[str, str], rules: AddressRules, private_ok: bool,
                timeout: float = 10.0) -> ProbeResult:
    """Connect to ``url`` only where ``rules`` allow (checked at connect time, like the data
    plane), with ``headers`` (the connection's opened credentials)."""
    started = time.perf_counter()
    try:
        with anyio.fail_after(timeout):
            async with guarded_client(rules, private_ok, headers=headers, timeout=timeout) as http:
                async with Client(streamable_http_client(url, http_client=http)) as client:
                    listed = await client.list_tools()
                    info = client.server_info
        tools = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in listed.tools]
        server = info.model_dump(mode="json", exclude_none=True) if info is not None else {}
        return ProbeResult(True, round((time.perf_counter() - started) * 1000, 1), server, tools)
    except Exception as exc:  # any failure is the result of the test, described without secrets
        return ProbeResult(False, round((time.perf_counter() - started) * 1000, 1), error=_reason(exc))


def probe_blocking(url: str, headers: dict[str, str], rules: AddressRules, private_ok: bool,
                   timeout: float = 10.0) -> ProbeResult:
    """``probe`` from synchronous service code: on the caller's event loop when called from one
    of its worker threads (the management server), else on a loop of its own (the CLI)."""
    try:
        return anyio.from_thread.run(probe, url, headers, rules, private_ok, timeout)
    except RuntimeError:  # not in a worker thread of an event loop
        return anyio.run(probe, url, headers, rules, private_ok, timeout)
