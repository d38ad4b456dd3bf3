"""One MCP tool call end to end through both planes: `mesh up`, a connection and a key made with
the `mesh` command, a real upstream MCP server, and the `mcp` SDK's client."""

from __future__ import annotations

import json
import time

import httpx2
import pytest

from tests.support import Upstream, mcp_client, mcp_headers, rpc, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture(scope="module")
def connection_id(gateway, upstream):
    return gateway.add_connection("echo", upstream.url)


@pytest.fixture(scope="module")
def api_key(gateway):
    return gateway.create_key("tests")


def post(gateway, connection_id, body, key=None, raw: bytes | None = None) -> httpx2.Response:
    headers = mcp_headers(body, key)
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx2.post(gateway.mcp_url(connection_id), content=content, headers=headers, timeout=10)


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_sdk_client_calls_the_upstream_through_the_gateway(gateway, connection_id, api_key, mode):
    async with mcp_client(gateway.mcp_url(connection_id), api_key, mode=mode) as client:
        tools = await client.list_tools()
        assert sorted(t.name for t in tools.tools) == ["add", "count_slowly", "echo"]
        result = await client.call_tool("echo", {"text": "through the mesh"})
        assert not result.is_error
        assert result.content[0].text == "through the mesh"
        total = await client.call_tool("add", {"a": 2, "b": 40})
        assert total.structured_content == {"result": 42}


async def test_first_run_key_printed_by_mesh_up_works(gateway, connection_id):
    assert gateway.first_run_key and gateway.first_run_key.startswith("mesh_")
    async with mcp_client(gateway.mcp_url(connection_id), gateway.first_run_key) as client:
        assert (await client.call_tool("echo", {"text": "x"})).content[0].text == "x"


def test_upstream_never_sees_the_callers_key(gateway, connection_id, api_key, upstream):
    response = post(gateway, connection_id, rpc("tools/list"), key=api_key)
    assert response.status_code == 200
    seen = upstream.requests()
    assert seen, "the upstream recorded no request"
    for request in seen:
        assert "authorization" not in request["headers"]
        assert api_key not in json.dumps(request)


def test_connection_headers_are_sent_to_the_upstream(gateway, upstream, api_key):
    conn = gateway.add_connection("with-header", upstream.url, "--header", "X-Upstream-Token: s3cret-value")
    wait_for(lambda: post(gateway, conn, rpc("tools/list"), key=api_key).status_code == 200, timeout=2)
    assert any(r["headers"].get("x-upstream-token") == "s3cret-value" for r in upstream.requests())
    listed = gateway.mesh("connections", "list")
    shown = next(c for c in listed if c["id"] == conn)
    assert "s3cret-value" not in json.dumps(shown), "connection listings must mask header values"


def test_no_key_gets_401_with_a_json_error(gateway, connection_id):
    response = post(gateway, connection_id, rpc("tools/list"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["message"].startswith("Unauthorized")


def test_unknown_key_gets_401(gateway, connection_id):
    response = post(gateway, connection_id, rpc("tools/list"), key="mesh_00000000_not-a-real-key")
    assert response.status_code == 401
    assert "error" in response.json()


def test_key_of_another_org_gets_the_same_404_as_an_unknown_connection(gateway, connection_id, api_key):
    other_org = gateway.mesh("orgs", "create", "--name", "Other Org")["id"]
    other_key = gateway.create_key("other", "--org", other_org)
    wait_for(lambda: post(gateway, "conn_doesnotexist", rpc("tools/list"), key=other_key).status_code == 404,
             timeout=2, what="the other org's key to be known")
    foreign = post(gateway, connection_id, rpc("tools/list"), key=other_key)
    unknown = post(gateway, "conn_doesnotexist", rpc("tools/list"), key=api_key)
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json() == unknown.json()
    # Even a junk body to a foreign connection says nothing but 404.
    assert post(gateway, connection_id, None, key=other_key, raw=b"junk").status_code == 404


@pytest.mark.parametrize("raw", [b"this is not json", b"{\"jsonrpc\": \"2.0\", \"id\": 1", b"\xff\xfe"])
def test_non_json_body_gets_a_parse_error(gateway, connection_id, api_key, raw):
    response = post(gateway, connection_id, None, key=api_key, raw=raw)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32700


def test_json_that_is_not_json_rpc_gets_invalid_request(gateway, connection_id, api_key):
    response = post(gateway, connection_id, {"hello": "world"}, key=api_key)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32600


def test_upstream_down_gets_502_and_other_connections_keep_working(gateway, connection_id, api_key, tmp_path):
    gone = Upstream(tmp_path)  # a port nobody listens on
    dead = gateway.add_connection("dead", gone.url)
    response = wait_for(lambda: (r := post(gateway, dead, rpc("tools/list", request_id=41), key=api_key)).status_code != 404 and r,
                        timeout=2, what="the dead connection to be routable")
    assert response.status_code == 502
    body = response.json()
    assert body["id"] == 41 and body["error"]["code"] < 0
    assert "Traceback" not in response.text
    assert post(gateway, connection_id, rpc("tools/list"), key=api_key).status_code == 200


def test_connection_added_while_running_is_routable_within_a_second(gateway, upstream, api_key):
    conn = gateway.add_connection("fresh", upstream.url)
    added = time.monotonic()
    wait_for(lambda: post(gateway, conn, rpc("tools/list"), key=api_key).status_code == 200, timeout=1.0,
             interval=0.02, what="the new connection to be routable")
    assert time.monotonic() - added < 1.0


def test_unknown_connection_and_bad_paths_get_404(gateway, api_key):
    for path in ("/mcp/conn_nope", "/mcp/", "/mcp/conn_x/extra"):
        response = httpx2.post(gateway.base + path, content=b"{}", headers={"Authorization": f"Bearer {api_key}"})
        assert response.status_code in (401, 404), path
        assert response.headers["content-type"] == "application/json"


def test_health_metrics_and_control_plane_paths_share_the_front_door(gateway):
    assert httpx2.get(gateway.base + "/health").json() == {"status": "ok"}, "details need the metrics token"
    health = gateway.health()
    assert health["status"] == "ok" and health["plane"] == "data" and health["redis"] == "connected"
    metrics = gateway.metrics()
    assert metrics.status_code == 200 and "mesh_requests_total" in metrics.text
    control = httpx2.get(gateway.base + "/api/health").json()
    assert control == {"plane": "control", "status": "ok"}
    assert "MCP Mesh" in httpx2.get(gateway.base + "/").text


def test_a_keys_last_use_reaches_the_control_plane(gateway, connection_id):
    created = gateway.mesh("keys", "create", "--name", "used-once")
    never = next(k for k in gateway.mesh("keys", "list") if k["id"] == created["id"])
    assert never["last_used_at"] is None
    wait_for(lambda: post(gateway, connection_id, rpc("tools/list"), key=created["key"]).status_code == 200,
             timeout=2, what="the new key to be known")
    # The data plane notes uses in memory and reports them to Redis every few seconds.
    used = wait_for(lambda: next(k for k in gateway.mesh("keys", "list") if k["id"] == created["id"])["last_used_at"],
                    timeout=15, interval=0.5, what="the key's last use to be reported")
    assert used
