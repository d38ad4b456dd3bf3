"""Keeping one bridged upstream running: start it, notice when it dies or stops answering, start
it again after an exponentially growing pause, and tell callers clearly when it is not there.

The child is started eagerly, as soon as its connection appears in a snapshot, rather than on
the first call: the first call is then as fast as any other, a command that cannot start shows
up in the logs and ``/health`` right away, and the bridge knows the upstream's capabilities
before a client asks. It runs until the connection disappears or changes (the owner cancels
``run``), or the bridge stops.

Restart pauses: 0.5 s, doubling up to 30 s; back to 0.5 s once an upstream has stayed up for a
minute. A call that arrives while the upstream is not ready waits for it up to ``READY_GRACE``
seconds and otherwise fails at once with ``UpstreamUnavailable``: never a hang.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import anyio
import mcp_types as types
from mcp import ClientSession
from mcp.shared.exceptions import MCPError

from dataplane_addon.bridge.child_isolation import ChildIsolation
from dataplane_addon.bridge.upstream_session import OpenUpstream, UpstreamSpec, UpstreamStartFailed, open_upstream
from shared.upstream_addresses import AddressRules
from shared.vocabulary import Transport

log = logging.getLogger("mesh.bridge")

READY_GRACE = 5.0
LIVENESS_INTERVAL = 0.5
PING_INTERVAL = 20.0
PING_TIMEOUT = 10.0


class UpstreamUnavailable(Exception):
    """The upstream cannot take a call now; the message says why, for the caller to read."""


@dataclass(slots=True)
class Backoff:
    """Pauses between restarts: ``first`` doubling up to ``maximum``; back to ``first`` after an
    upstream stayed up ``healthy_after`` seconds (a crash a day is not a crash loop)."""

    first: float = 0.5
    maximum: float = 30.0
    healthy_after: float = 60.0
    _next: float = 0.0

    def pause_after(self, uptime: float) -> float:
        if uptime >= self.healthy_after or self._next == 0.0:
            self._next = self.first
        pause = self._next
        self._next = min(self._next * 2, self.maximum)
        return pause


def describe_failure(error: BaseException) -> str:
    """A short reason for logs and callers. Exception texts of our own never carry env or
    header values; the SDK's connection errors name the URL at most."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    if isinstance(error, TimeoutError):
        return "it did not answer initialize in time"
    if isinstance(error, MCPError):
        return error.message
    if isinstance(error, UpstreamStartFailed):
        return str(error)
    text = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class UpstreamSupervisor:
    def __init__(self, connection_id: str, spec: UpstreamSpec, isolation: ChildIsolation,
                 rules: AddressRules | None = None, backoff: Backoff | None = None,
                 callbacks: dict[str, Any] | None = None) -> None:
        self.connection_id = connection_id
        self.callbacks = callbacks or {}  # what the upstream sends goes there (relay.Relay.client_callbacks)
        self.spec = spec
        self.isolation = isolation
        self.rules = rules or AddressRules()  # where an sse server may be
        self.pid_file = isolation.pid_file(connection_id)
        self.backoff = backoff or Backoff()
        self.state = "starting"  # starting | ready | stopped (gone, being cleaned up) | waiting (to restart)
        self.pid: int | None = None
        self.restarts = 0
        self.last_error: str | None = None
        self.retry_at: float | None = None  # monotonic time of the next start, while waiting
        self.initialized: types.InitializeResult | None = None  # the latest upstream's, kept across restarts
        self._session: ClientSession | None = None
        self._ready = anyio.Event()

    # -- for callers --------------------------------------------------------------------------

    @property
    def label(self) -> str:
        return f"{self.spec.name!r} ({self.connection_id})"

    async def wait_ready(self, timeout: float = READY_GRACE) -> bool:
        if self._session is not None:
            return True
        if self.state == "waiting" and self.retry_at is not None and self.retry_at - time.monotonic() > timeout:
            return False  # the next start is further away than anyone should wait
        with anyio.move_on_after(timeout):
            await self._ready.wait()
        return self._session is not None

    async def session(self) -> ClientSession:
        """The live upstream session, or ``UpstreamUnavailable`` within ``READY_GRACE`` seconds.

        A child found dead here is given up at once rather than at the watcher's next look, so
        this call waits for its successor instead of failing on a closed pipe."""
        if self._session is not None and self.pid is not None and not process_alive(self.pid):
            self._lost()
        if await self.wait_ready():
            return self._session
        raise UpstreamUnavailable(self.unavailable_reason())

    def discard(self, session: ClientSession) -> None:
        """A call found ``session`` closed: stop handing it out (the watcher restarts the child)."""
        if self._session is session:
            self._lost()

    def unavailable_reason(self) -> str:
        what = f"the upstream of connection {self.label}"
        if self.state == "waiting" and self.retry_at is not None:
            pause = max(0.0, self.retry_at - time.monotonic())
            return f"{what} is restarting after a failure ({self.last_error}); next start in {pause:.1f}s"
        return f"{what} is starting and not ready yet; try again shortly"

    def health(self) -> dict:
        return {"name": self.spec.name, "transport": self.spec.transport, "state": self.state, "pid": self.pid,
                "restarts": self.restarts, "last_error": self.last_error}

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep the upstream running until cancelled."""
        while True:
            self.state, self.retry_at = "starting", None
            up_since: float | None = None
            try:
                async with open_upstream(self.spec, self.pid_file, self.isolation, self.rules, self.callbacks) as upstream:
                    up_since = time.monotonic()
                    self._became_ready(upstream)
                    self.last_error = await self._watch(upstream)
            except Exception as error:  # noqa: BLE001 - any failure of one upstream means: restart it
                self.last_error = describe_failure(error)
            finally:
                self._lost()
            pause = self.backoff.pause_after(time.monotonic() - up_since if up_since else 0.0)
            self.restarts += 1
            self.state, self.retry_at = "waiting", time.monotonic() + pause
            log.warning("bridged connection %s stopped: %s; restarting in %.1fs", self.label, self.last_error, pause)
            await anyio.sleep(pause)

    def _became_ready(self, upstream: OpenUpstream) -> None:
        self._session, self.initialized, self.pid = upstream.session, upstream.initialized, upstream.pid
        self.state = "ready"
        self._ready.set()
        pid = f", pid {upstream.pid}" if upstream.pid else ""
        log.info("bridged connection %s is ready: %s%s", self.label, self.spec.describe(), pid)

    def _lost(self) -> None:
        self._session, self.pid = None, None
        if self.state == "ready":
            self.state = "stopped"
        if self._ready.is_set():  # an anyio Event cannot be cleared: waiters from now on get a new one
            self._ready = anyio.Event()

    async def _watch(self, upstream: OpenUpstream) -> str:
        """Return, with the reason, once the upstream has ended or stopped answering pings.

        A stdio child counts as ended when its own process exits, even if processes it started
        still hold its pipes (``npx`` runs the server as a grandchild): leaving the expiry of the
        process we started unnoticed would leave an unsupervised server behind. Stopping the
        upstream then ends its whole process group."""
        next_ping = time.monotonic() + PING_INTERVAL
        while True:
            with anyio.move_on_after(LIVENESS_INTERVAL):
                await upstream.ended.wait()
                return "the process exited" if self.spec.transport == Transport.STDIO else "the SSE stream closed"
            if upstream.pid is not None and not process_alive(upstream.pid):
                return "the process exited"
            if time.monotonic() >= next_ping:
                try:
                    with anyio.fail_after(PING_TIMEOUT):
                        await upstream.session.send_ping()
                except Exception as error:  # noqa: BLE001
                    return f"it did not answer a ping ({describe_failure(error)})"
                next_ping = time.monotonic() + PING_INTERVAL


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs; on Linux a zombie (exited, not yet reaped by the event loop) does
    not. Elsewhere the kernel is asked, which counts a zombie as alive until it is reaped."""
    if _HAS_PROC:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                return stat.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_HAS_PROC = os.path.exists("/proc/self/stat")
