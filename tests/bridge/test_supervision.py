"""Supervision with real child processes (the SDK-built stdio server of tests/upstreams), without
the rest of the gateway: restarts, failures that must not hang a caller, and connections that
disappear or change."""

from __future__ import annotations

import os
import signal
import sys
import time

import anyio
import pytest

from dataplane_addon.bridge.bridged_connections import BridgedConnections
from dataplane_addon.bridge.child_isolation import ChildIsolation
from dataplane_addon.bridge.supervisor import Backoff, UpstreamSupervisor, UpstreamUnavailable, process_alive
from dataplane_addon.bridge.upstream_session import UpstreamSpec
from shared.credentials import delivery_context, env_field
from shared.envelope import Keyring, seal
from shared.snapshot import ConnectionRoute
from tests.support import ROOT

pytestmark = pytest.mark.anyio


KEYRING = Keyring.single(bytes(range(32)))  # the data-plane key the test "control plane" seals under


def stdio_route(**env: str) -> ConnectionRoute:
    """A stdio route as the control plane delivers it: its environment sealed for conn_py of org_a."""
    values = {"PYTHONPATH": str(ROOT), **env}
    credentials = {env_field(k): seal(v.encode(), delivery_context("org_a", "conn_py", env_field(k), origin="stdio"),
                                      KEYRING).to_json()
                   for k, v in values.items()}
    return ConnectionRoute(name="py", url="", transport="stdio", command=sys.executable,
                           args=["-m", "tests.upstreams.stdio_server"], credentials=credentials)


async def eventually(check, timeout: float = 15.0, what: str = "condition"):
    with anyio.fail_after(timeout):
        while not (result := check()):
            await anyio.sleep(0.05)
    return result


async def whoami(supervisor: UpstreamSupervisor) -> int:
    result = await (await supervisor.session()).call_tool("whoami", {})
    return int(result.content[0].text)


async def test_a_killed_child_is_restarted_and_the_next_call_works(tmp_path):
    supervisor = UpstreamSupervisor("conn_py", UpstreamSpec.from_route("conn_py", "org_a", stdio_route(), KEYRING),
                                    ChildIsolation(tmp_path))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(supervisor.run)
        first = await whoami(supervisor)
        assert supervisor.pid == first, "the pid the bridge reports is the server's own"
        os.kill(first, signal.SIGKILL)
        await eventually(lambda: supervisor.state == "ready" and supervisor.pid not in (None, first),
                         what="a restarted child")
        assert await whoami(supervisor) == supervisor.pid != first
        assert supervisor.restarts == 1 and supervisor.last_error == "the process exited"
        tasks.cancel_scope.cancel()
    assert not process_alive(supervisor.pid or first)


async def test_a_command_that_cannot_start_fails_calls_quickly_and_is_retried(tmp_path):
    spec = UpstreamSpec("stdio", "broken", command=str(tmp_path / "no-such-server"))
    supervisor = UpstreamSupervisor("conn_broken", spec, ChildIsolation(tmp_path), Backoff(first=0.2, maximum=0.4))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(supervisor.run)
        started = time.monotonic()
        with pytest.raises(UpstreamUnavailable) as refused:
            await supervisor.session()
        assert time.monotonic() - started < 6.0, "a caller must never wait on a child that cannot start"
        assert "broken" in str(refused.value)
        await eventually(lambda: supervisor.restarts >= 3, what="repeated attempts")
        assert supervisor.state in ("starting", "waiting") and supervisor.last_error
        tasks.cancel_scope.cancel()


async def test_a_connection_that_disappears_or_changes_loses_its_child(tmp_path):
    async with anyio.create_task_group() as tasks:
        connections = BridgedConnections(tasks, ChildIsolation(tmp_path), KEYRING)
        connections.sync_org("org_a", {"conn_py": stdio_route(GREETING="one")})
        first = await eventually(lambda: connections.get("conn_py").supervisor.pid, what="the first child")

        connections.sync_org("org_a", {"conn_py": stdio_route(GREETING="two")})  # a changed env
        second = await eventually(lambda: connections.get("conn_py").supervisor.pid, what="the replacement")
        assert second != first
        await eventually(lambda: not process_alive(first), what="the old child to stop")
        session = await connections.get("conn_py").supervisor.session()
        assert (await session.call_tool("env", {"name": "GREETING"})).content[0].text == "two"

        connections.sync_org("org_b", {})  # another org's snapshot leaves this org's alone
        assert connections.get("conn_py") is not None
        connections.sync_org("org_a", {})  # the connection is gone
        assert connections.get("conn_py") is None
        await eventually(lambda: not process_alive(second), what="the child of a removed connection to stop")
        tasks.cancel_scope.cancel()
