"""Tool-level authorization in flight, with the `mcp` SDK's client and a real upstream: a key
sees and calls exactly its role's tools, and a denied call never reaches the upstream."""

from __future__ import annotations

import json

import httpx2
import pytest
from mcp.shared.exceptions import MCPError

from tests.support import mcp_client, mcp_headers, rpc, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture(scope="module")
def connection_id(gateway, upstream):
    return gateway.add_connection("echo", upstream.url)


@pytest.fixture(scope="module")
def echo_only_key(gateway, connection_id):
    gateway.mesh("roles", "create", "--name", "echo-only", "--permissions", json.dumps({"tools": {connection_id: ["echo"]}}))
    gateway.add_user("eve@example.com", "echo-only")
    return gateway.create_key("eve", "--user", "eve@example.com")


def calls_to(upstream, tool: str) -> int:
    return sum(1 for r in upstream.requests() if f'"name":"{tool}"' in r["body"].replace(" ", ""))


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_key_sees_and_calls_only_its_roles_tools(gateway, upstream, connection_id, echo_only_key, mode):
    async with mcp_client(gateway.mcp_url(connection_id), echo_only_key, mode=mode) as client:
        assert [t.name for t in (await client.list_tools()).tools] == ["echo"]
        assert (await client.call_tool("echo", {"text": "allowed"})).content[0].text == "allowed"
        adds_before = calls_to(upstream, "add")
        with pytest.raises(MCPError) as denied:
            await client.call_tool("add", {"a": 1, "b": 2})
        message = str(denied.value)
        assert "add" in message and connection_id in message and "echo" in message  # tool, connection id and name
        assert calls_to(upstream, "add") == adds_before, "the denied call reached the upstream"


async def test_an_unrestricted_member_still_sees_every_tool(gateway, connection_id):
    key = gateway.create_key("owner-key")
    async with mcp_client(gateway.mcp_url(connection_id), key) as client:
        assert sorted(t.name for t in (await client.list_tools()).tools) == ["add", "count_slowly", "echo"]


def test_denied_call_is_a_json_rpc_error_over_plain_http(gateway, connection_id, echo_only_key):
    body = rpc("tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}}, request_id=77)
    response = httpx2.post(gateway.mcp_url(connection_id), json=body, headers=mcp_headers(body, echo_only_key))
    assert response.status_code == 200
    answer = response.json()
    assert answer["id"] == 77 and answer["error"]["code"] == -32003
    assert answer["error"]["data"] == {"tool": "add", "connection": connection_id}


def test_a_batch_with_a_denied_call_is_refused_whole(gateway, upstream, connection_id, echo_only_key):
    batch = [rpc("tools/call", {"name": "echo", "arguments": {"text": "x"}}, request_id=1),
             rpc("tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}}, request_id=2)]
    before = calls_to(upstream, "add")
    response = httpx2.post(gateway.mcp_url(connection_id), json=batch, headers=mcp_headers(None, echo_only_key))
    answers = {a["id"]: a for a in response.json()}
    assert answers[2]["error"]["data"]["tool"] == "add" and "error" in answers[1]
    assert calls_to(upstream, "add") == before


@pytest.mark.parametrize("version, status, code", [("2025-11-25", 200, -32003), ("2026-07-28", 404, -32601)])
def test_unknown_methods_are_refused_not_forwarded(gateway, upstream, connection_id, echo_only_key, version, status,
                                                   code):
    """Refused in both generations, each answering as its version says (2026-07-28: Method not found)."""
    body = rpc("tools/secret_backdoor", {"name": "add"})
    headers = {**mcp_headers(body, echo_only_key), "MCP-Protocol-Version": version}
    before = calls_to(upstream, "add")
    response = httpx2.post(gateway.mcp_url(connection_id), json=body, headers=headers)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert calls_to(upstream, "add") == before


def test_narrowed_key_gets_the_intersection_of_role_and_scope(gateway, connection_id):
    scope = json.dumps({"tools": {"*": ["add"]}})
    narrowed = gateway.create_key("add-only", "--scope", scope)
    body = rpc("tools/list")
    wait_for(lambda: httpx2.post(gateway.mcp_url(connection_id), json=body,
                                 headers=mcp_headers(body, narrowed)).status_code == 200, timeout=2)
    response = httpx2.post(gateway.mcp_url(connection_id), json=body, headers=mcp_headers(body, narrowed))
    text = response.text
    assert '"add"' in text and '"echo"' not in text


@pytest.mark.parametrize("method", ["GET", "DELETE", "POST"])
def test_another_orgs_key_gets_404_on_every_proxy_method(gateway, connection_id, method):
    org = gateway.mesh("orgs", "create", "--name", f"Tenant {method}")["id"]
    foreign = gateway.create_key("foreign", "--org", org)
    wait_for(lambda: httpx2.post(gateway.mcp_url("conn_none"), content=b"{}",
                                 headers={"Authorization": f"Bearer {foreign}"}).status_code == 404, timeout=2)
    response = httpx2.request(method, gateway.mcp_url(connection_id), content=b"{}" if method == "POST" else None,
                              headers={"Authorization": f"Bearer {foreign}", "Accept": "application/json, text/event-stream"})
    assert response.status_code == 404
