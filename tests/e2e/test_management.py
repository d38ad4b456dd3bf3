"""The management MCP server at /mcp, driven with the `mcp` SDK's client through the gateway's
front door, authenticated with the same API keys as proxied calls."""

from __future__ import annotations

import json

import httpx2
import pytest

from control_plane.management.tools import TOOLS
from tests.support import mcp_client

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


# Connections created with the management tools point at the tests' loopback upstreams, which only
# an operator's MESH_ALLOW_PRIVATE_UPSTREAMS allows for connections made over the network.
GATEWAY_ENV = {"MESH_ALLOW_PRIVATE_UPSTREAMS": "127.0.0.1/32"}


async def call(gateway, key, tool, **arguments):
    async with mcp_client(gateway.base + "/mcp", key) as client:
        return await client.call_tool(tool, arguments)


async def test_an_owner_sets_up_an_org_whose_new_key_reaches_exactly_its_roles_tools(gateway, upstream):
    owner = gateway.first_run_key
    org = (await call(gateway, owner, "ORGANIZATION_CREATE", name="Acme Labs")).structured_content
    assert org["slug"] == "acme-labs"
    gateway.mesh("users", "create", "--email", "ana@acme.example", "--password-stdin", input="a long enough password\n")
    added = await call(gateway, owner, "ORGANIZATION_MEMBER_ADD", org_id=org["id"], email="ana@acme.example", role="member")
    assert added.structured_content["status"] == "invited"  # members join by accepting an invitation
    conn = (await call(gateway, owner, "COLLECTION_CONNECTIONS_CREATE", org_id=org["id"], name="echo", url=upstream.url,
                       headers={"X-Upstream-Secret": "sk-very-secret-value"})).structured_content
    assert "sk-very-secret-value" not in json.dumps(conn)
    tested = (await call(gateway, owner, "CONNECTION_TEST", org_id=org["id"], connection_id=conn["id"])).structured_content
    assert tested["ok"] and tested["server"]["name"] == "echo-upstream" and "echo" in tested["tools"]
    assert tested["latency_ms"] > 0
    got = (await call(gateway, owner, "COLLECTION_CONNECTIONS_GET", org_id=org["id"], connection_id=conn["id"]))
    assert got.structured_content["test_status"] == "ok"
    assert sorted(t["name"] for t in got.structured_content["tools"]) == ["add", "count_slowly", "echo"]
    role = (await call(gateway, owner, "ROLE_CREATE", org_id=org["id"], name="echo-user",
                       permissions={"tools": {conn["id"]: ["echo"]}})).structured_content
    created = await call(gateway, owner, "API_KEY_CREATE", org_id=org["id"], name="echo-only",
                         scope=role["permissions"])
    new_key = created.structured_content["key"]
    assert role["name"] == "echo-user"

    async def tools_seen():
        async with mcp_client(gateway.mcp_url(conn["id"]), new_key) as client:
            return sorted(t.name for t in (await client.list_tools()).tools)

    for _ in range(40):  # the data plane learns of the new key within a second
        try:
            seen = await tools_seen()
            break
        except Exception:
            import anyio
            await anyio.sleep(0.05)
    assert seen == ["echo"]


async def test_tools_list_shows_a_member_only_what_their_role_allows(gateway):
    gateway.add_user("max@example.com", "member")
    member_key = gateway.create_key("max", "--user", "max@example.com")
    async with mcp_client(gateway.base + "/mcp", member_key) as client:
        names = {t.name for t in (await client.list_tools()).tools}
    assert "ORGANIZATION_DELETE" not in names and "ROLE_CREATE" not in names
    assert "COLLECTION_CONNECTIONS_CREATE" not in names and "COLLECTION_CONNECTIONS_LIST" in names
    async with mcp_client(gateway.base + "/mcp", gateway.first_run_key) as client:
        assert {t.name for t in (await client.list_tools()).tools} == set(TOOLS)


async def test_a_member_calling_a_tool_anyway_is_told_the_missing_permission_and_nothing_changes(gateway):
    gateway.add_user("mia@example.com", "member")
    member_key = gateway.create_key("mia", "--user", "mia@example.com")
    before = gateway.mesh("orgs", "list")
    result = await call(gateway, member_key, "ORGANIZATION_DELETE", confirm_slug="default")
    assert result.is_error and "org.delete" in result.content[0].text
    result = await call(gateway, member_key, "ROLE_CREATE", name="sneaky", permissions={"tools": {"*": ["*"]}})
    assert result.is_error and "roles.manage" in result.content[0].text
    assert gateway.mesh("orgs", "list") == before
    assert not any(r["name"] == "sneaky" for r in gateway.mesh("roles", "list"))


def invalid_arguments(spec) -> list[dict]:
    """For one tool: an unknown field, a missing required field, a wrong type, an oversized string."""
    schema = spec.args.model_json_schema()
    properties, required = schema.get("properties", {}), schema.get("required", [])
    cases = [{"definitely_not_a_field": 1}]
    if required:
        cases.append({})
    for name, prop in properties.items():
        cases.append({name: {"an": "object"}} if prop.get("type") != "object" else {name: "not an object"})
        if prop.get("type") == "string" or any(p.get("type") == "string" for p in prop.get("anyOf", [])):
            cases.append({name: "x" * 5000})
    return cases


async def test_every_tool_refuses_invalid_arguments_with_a_clear_message(gateway):
    async with mcp_client(gateway.base + "/mcp", gateway.first_run_key) as client:
        for spec in TOOLS.values():
            for arguments in invalid_arguments(spec):
                result = await client.call_tool(spec.name, arguments)
                assert result.is_error, (spec.name, arguments)
                text = result.content[0].text
                assert text.startswith(f"Invalid arguments for {spec.name}") or "Input validation error" in text, text
                assert "Traceback" not in text


def test_the_management_endpoint_wants_a_key(gateway):
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    response = httpx2.post(gateway.base + "/mcp", json=body, headers={"Accept": "application/json, text/event-stream"})
    assert response.status_code == 401 and "Bearer" in response.headers["www-authenticate"]
    wrong = httpx2.post(gateway.base + "/mcp", json=body, headers={"Authorization": "Bearer mesh_nope_nope"})
    assert wrong.status_code == 401


async def test_another_orgs_key_cannot_reach_this_org_through_any_tool(gateway):
    stranger_org = gateway.mesh("orgs", "create", "--name", "Strangers")["id"]
    gateway.add_user("sam@strangers.example", "owner", org=stranger_org)
    stranger = gateway.create_key("sam", "--org", stranger_org, "--user", "sam@strangers.example")
    default_org = next(o["id"] for o in gateway.mesh("orgs", "list") if o["slug"] == "default")
    for name in ("ORGANIZATION_GET", "ORGANIZATION_MEMBER_LIST", "COLLECTION_CONNECTIONS_LIST", "ROLE_LIST",
                 "API_KEY_LIST"):
        result = await call(gateway, stranger, name, org_id=default_org)
        assert result.is_error and "no such organization" in result.content[0].text, name


async def test_connection_configure_seals_credentials_that_then_reach_the_upstream(gateway, upstream):
    owner = gateway.first_run_key
    conn = (await call(gateway, owner, "COLLECTION_CONNECTIONS_CREATE", name="configured", url=upstream.url)
            ).structured_content
    done = await call(gateway, owner, "CONNECTION_CONFIGURE", connection_id=conn["id"],
                      headers={"X-Configured": "cfg-secret-98765"})
    assert not done.is_error, done.content[0].text
    assert "header:X-Configured" in done.structured_content["credentials"]
    assert "cfg-secret-98765" not in json.dumps(done.structured_content)
    nothing = await call(gateway, owner, "CONNECTION_CONFIGURE", connection_id=conn["id"])
    assert nothing.is_error and "nothing to change" in nothing.content[0].text

    import anyio

    for _ in range(40):  # the data plane learns of the change within a second
        async with mcp_client(gateway.mcp_url(conn["id"]), owner) as client:
            await client.list_tools()
        if any(r["headers"].get("x-configured") == "cfg-secret-98765" for r in upstream.requests()):
            break
        await anyio.sleep(0.05)
    else:
        raise AssertionError("the configured header never reached the upstream")
