"""The `mesh` command in another shell while `mesh up` runs: what it shows of the live gateway."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from shared.apikeys import hash_key
from tests.support import MESH, ROOT, STDIO_SERVER, free_port, mcp_client, port_open, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


def mesh_text(gateway, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MESH, *args], env=gateway.env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_connections_list_shows_a_stdio_command_that_cannot_start_as_waiting_with_its_restarts(gateway, upstream):
    broken = gateway.add_stdio_connection("broken", "/nonexistent/mcp-server --flag")
    working = gateway.add_connection("docs", upstream.url)
    # From the third restart on, the bridge waits 2 s and more before the next start: time to look.
    wait_for(lambda: gateway.bridge_health().get(broken, {}).get("restarts", 0) >= 3, timeout=20,
             what="the broken command to have been restarted three times")
    listed = mesh_text(gateway, "connections", "list")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith(broken))
    restarts = int(re.search(r"  waiting, restarts (\d+) ", line).group(1))
    assert 3 <= restarts <= gateway.bridge_health()[broken]["restarts"]
    assert re.search(r"  active +http ", next(line for line in listed.stdout.splitlines() if line.startswith(working)))

    shown = gateway.mesh("connections", "get", "broken")
    assert shown["status"] == "active" and shown["health"]["state"] == "waiting"
    assert shown["health"]["last_error"] and shown["health"]["restarts"] >= 3


# -- CONNECTION_TEST reaches stdio and sse connections through the bridge (issue #11, item 3) ---

def test_connections_test_runs_a_stdio_connection_through_the_bridge(gateway):
    gateway.add_stdio_connection("local", STDIO_SERVER, "MESH_TEST_SECRET=s3cret-value-for-the-child")
    tested = mesh_text(gateway, "connections", "test", "local")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.startswith("ok: ") and "echo" in tested.stdout
    shown = gateway.mesh("connections", "get", "local")
    assert shown["test_status"] == "ok" and "echo" in {tool["name"] for tool in shown["tools"]}


def test_a_stdio_command_that_cannot_start_fails_its_test_with_the_bridges_reason(gateway):
    gateway.add_stdio_connection("missing", "/nonexistent/another-mcp-server")
    wait_for(lambda: any(e.get("name") == "missing" and e.get("restarts", 0) >= 1
                         for e in gateway.bridge_health().values()), timeout=15, what="the command to have failed")
    tested = mesh_text(gateway, "connections", "test", "missing", "--json")
    assert tested.returncode == 1
    result = json.loads(tested.stdout)
    assert result["ok"] is False and result["error"].startswith("the bridge cannot start it (waiting, restarts ")


def test_connections_test_reaches_a_legacy_sse_server_through_the_bridge(gateway):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tests.upstreams.stdio_server", "sse", str(port)], cwd=ROOT,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: port_open(port), what="the legacy SSE upstream")
        gateway.mesh("connections", "add", "--name", "legacy", "--sse-url", f"http://127.0.0.1:{port}/sse")
        result = gateway.mesh("connections", "test", "legacy")
        assert result["ok"] is True and "echo" in result["tools"], result
    finally:
        server.terminate()
        server.wait(10)


async def test_the_connection_test_tool_takes_the_same_way_as_the_cli(gateway):
    cid = gateway.add_stdio_connection("via-tool", STDIO_SERVER)
    async with mcp_client(gateway.base + "/mcp", gateway.first_run_key) as client:
        result = await client.call_tool("CONNECTION_TEST", {"connection_id": cid})
    assert not result.is_error, result.content[0].text
    assert result.structured_content["ok"] is True and "echo" in result.structured_content["tools"]


def test_a_second_mesh_up_on_busy_ports_says_so_and_leaves_the_first_alone(gateway):
    token = gateway.bridge_token()
    second = subprocess.run([MESH, "up"], env=gateway.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    said = second.stdout + second.stderr
    assert second.returncode != 0 and "MCP Mesh is up" not in said
    assert f"port {gateway.port} on 127.0.0.1 (the data plane) is already in use" in said and "PORT" in said
    assert "Traceback" not in said
    assert gateway.bridge_token() == token and gateway.bridge_health() is not None  # the first one still serves


# -- issue #11, item 14 --------------------------------------------------------------------------

def test_a_command_from_another_shell_publishes_to_the_gateways_redis_without_being_told(gateway):
    recorded = gateway.data_dir / "redis.json"
    assert recorded.stat().st_mode & 0o777 == 0o600  # the URL may carry a password
    elsewhere = {k: v for k, v in gateway.env.items() if k not in ("REDIS_URL", "MESH_REDIS_PREFIX")}
    out = subprocess.run([MESH, "keys", "create", "--name", "other-shell", "--json"], env=elsewhere, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "could not publish" not in out.stdout + out.stderr
    created = json.loads(out.stdout)
    assert hash_key(created["key"]) in gateway.published(created["org_id"]).api_keys
