"""Changing a role, revoking a key or removing a member takes effect at every running data plane
within a second: two data plane processes on one Redis, changed through the `mesh` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.support import ROOT, call_tool_status, free_port, port_open, wait_for

pytestmark = pytest.mark.e2e
WITHIN = 1.0


@pytest.fixture(scope="module")
def second_data_plane(gateway):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "dataplane_addon", "--set", f"listen_port={port}",
                             "--set", f"mesh_control_plane=127.0.0.1:{gateway.control_plane_port}",
                             "--set", f"mesh_redis_prefix={gateway.prefix}",
                             "--set", f"mesh_dataplane_key_file={gateway.dataplane_key_file}"],
                            env={**os.environ, "REDIS_URL": gateway.redis_url}, cwd=ROOT)
    wait_for(lambda: port_open(port), what="the second data plane")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def planes(gateway, second_data_plane):
    return [gateway.base, second_data_plane]


@pytest.fixture(scope="module")
def connection_id(gateway, upstream):
    return gateway.add_connection("echo", upstream.url)


def status(plane: str, connection_id: str, key: str, tool: str) -> tuple[int, bool]:
    code, answer = call_tool_status(f"{plane}/mcp/{connection_id}", key, tool, {"text": "x", "a": 1, "b": 2})
    return code, code == 200 and "result" in answer


def settles_everywhere(planes, check) -> float:
    """Seconds until ``check(plane)`` holds on every plane (measured from now)."""
    start = time.monotonic()
    for plane in planes:
        wait_for(lambda: check(plane), timeout=5, interval=0.01, what=f"the change at {plane}")
    return time.monotonic() - start


def test_a_role_change_reaches_every_data_plane_within_a_second(gateway, planes, connection_id):
    gateway.mesh("roles", "create", "--name", "caller", "--permissions", json.dumps({"tools": {"*": ["echo"]}}))
    gateway.add_user("rita@example.com", "caller")
    key = gateway.create_key("rita", "--user", "rita@example.com")
    settles_everywhere(planes, lambda p: status(p, connection_id, key, "echo")[1])
    assert all(not status(p, connection_id, key, "add")[1] for p in planes)

    gateway.mesh("roles", "update", "caller", "--permissions", json.dumps({"tools": {"*": ["echo", "add"]}}))
    assert settles_everywhere(planes, lambda p: status(p, connection_id, key, "add")[1]) < WITHIN


def test_a_revoked_key_is_refused_by_every_data_plane_within_a_second(gateway, planes, connection_id):
    created = gateway.mesh("keys", "create", "--name", "to-revoke")
    settles_everywhere(planes, lambda p: status(p, connection_id, created["key"], "echo")[1])
    gateway.mesh("keys", "revoke", created["id"])
    assert settles_everywhere(planes, lambda p: status(p, connection_id, created["key"], "echo")[0] == 401) < WITHIN


def test_a_removed_members_keys_stop_working_everywhere_within_a_second(gateway, planes, connection_id):
    gateway.add_user("mo@example.com", "member")
    key = gateway.create_key("mo", "--user", "mo@example.com")
    settles_everywhere(planes, lambda p: status(p, connection_id, key, "echo")[1])
    subprocess.run([sys.executable, "-m", "control_plane.cli", "members", "remove", "--email", "mo@example.com"],
                   env=gateway.env, cwd=ROOT, check=True, capture_output=True)
    assert settles_everywhere(planes, lambda p: status(p, connection_id, key, "echo")[0] == 401) < WITHIN
