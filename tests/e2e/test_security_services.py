"""Regressions of the security review (issue #10), end to end: the real `mesh up`, its management
server at ``POST /mcp`` driven by the `mcp` SDK's client, and real upstream MCP servers, one of
which plays the attacker's listener (it records every request it receives)."""

from __future__ import annotations

import json
import re
import secrets

import anyio
import pytest

from tests.secret_scan import find_secret
from tests.support import Upstream, call_tool_status, mcp_client, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

# Unique per run, so finding one anywhere can only mean it leaked from this run.
OWNER_TOKEN = "owner-bearer-" + secrets.token_hex(12)
QUERY_SECRET = "query-secret-" + secrets.token_hex(12)


async def call(gateway, key, tool, **arguments):
    async with mcp_client(gateway.base + "/mcp", key) as client:
        return await client.call_tool(tool, arguments)


async def tools_seen(gateway, connection_id: str, key: str) -> list[str]:
    """The tools ``key`` sees on the connection, once the data plane knows the key."""
    for _ in range(60):
        try:
            async with mcp_client(gateway.mcp_url(connection_id), key) as client:
                return sorted(t.name for t in (await client.list_tools()).tools)
        except Exception:
            await anyio.sleep(0.05)
    raise AssertionError("the data plane never accepted the key")


# The attacker's listener is on loopback, like every test upstream: the operator lets members'
# connections reach it, so that what protects the owner's token here is the secrets' binding to
# their origin (an address check would stop the move first: test_security_addresses.py).
GATEWAY_ENV = {"MESH_ALLOW_PRIVATE_UPSTREAMS": "127.0.0.1/32"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """The owner's upstream: it answers only with the owner's bearer token."""
    server = Upstream(tmp_path_factory.mktemp("guarded"), required_bearer=OWNER_TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def listener(tmp_path):
    """A server of the attacker's choosing, on another origin, that records what it receives."""
    server = Upstream(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def editor_key(gateway):
    """The key of a member whose custom role holds only connections.read and connections.write."""
    gateway.mesh("roles", "create", "--name", "connection-editor",
                 "--permissions", json.dumps({"manage": ["connections.read", "connections.write"]}))
    gateway.add_user("eve@example.com", "connection-editor")
    return gateway.create_key("eve", "--user", "eve@example.com")


def owners_connection(gateway, guarded, name: str) -> str:
    conn = gateway.mesh("connections", "add", "--name", name, "--url", guarded.url, "--bearer-env", "OWNER_TOKEN",
                        env={"OWNER_TOKEN": OWNER_TOKEN})["id"]
    wait_for(lambda: call_tool_status(gateway.mcp_url(conn), gateway.first_run_key, "echo", {"text": "hi"})[0] == 200,
             timeout=5, what="the owner's connection to answer")
    return conn


def leaked(requests: list[dict], secret: str) -> list:
    return [r for r in requests if find_secret(json.dumps(r), secret)]


# -- 8 ------------------------------------------------------------------------------------------

async def test_an_editor_who_moves_a_connection_never_receives_the_owners_token(gateway, guarded, listener,
                                                                                editor_key):
    conn = owners_connection(gateway, guarded, "crm")
    moved = await call(gateway, editor_key, "COLLECTION_CONNECTIONS_UPDATE", connection_id=conn, url=listener.url)
    assert not moved.is_error, moved.content[0].text
    tested = await call(gateway, editor_key, "CONNECTION_TEST", connection_id=conn)
    assert not tested.is_error and tested.structured_content["ok"], tested.content[0].text
    assert listener.requests(), "CONNECTION_TEST did reach the listener"
    assert not leaked(listener.requests(), OWNER_TOKEN), "the owner's bearer token reached the editor's listener"

    assert moved.structured_content["credentials_dropped"] == ["bearer"]
    assert moved.structured_content["credentials"] == {}
    # Nor through the data plane, once it has the new snapshot.
    wait_for(lambda: call_tool_status(gateway.mcp_url(conn), gateway.first_run_key, "echo", {"text": "x"})[0] == 200,
             timeout=5, what="the moved connection to answer")
    assert not leaked(listener.requests(), OWNER_TOKEN)
    assert not find_secret(gateway.log(), OWNER_TOKEN)


async def test_an_editor_may_move_a_connection_with_a_secret_set_in_the_same_update(gateway, guarded, listener,
                                                                                    editor_key):
    conn = owners_connection(gateway, guarded, "crm-2")
    own = "editor-token-" + secrets.token_hex(8)
    moved = await call(gateway, editor_key, "COLLECTION_CONNECTIONS_UPDATE", connection_id=conn, url=listener.url,
                       bearer=own)
    assert not moved.is_error, moved.content[0].text
    assert moved.structured_content["credentials_dropped"] == []
    assert moved.structured_content["credentials"] == {"bearer": "…" + own[-4:]}
    tested = await call(gateway, editor_key, "CONNECTION_TEST", connection_id=conn)
    assert tested.structured_content["ok"], tested.content[0].text
    received = {r["headers"].get("authorization") for r in listener.requests()}
    assert received == {f"Bearer {own}"}
    assert not leaked(listener.requests(), OWNER_TOKEN)


async def test_a_credential_in_a_url_query_is_masked_in_answers_and_logs(gateway, listener, editor_key):
    url = f"{listener.url}?api_key={QUERY_SECRET}"
    created = await call(gateway, gateway.first_run_key, "COLLECTION_CONNECTIONS_CREATE", name="query", url=url)
    assert not created.is_error, created.content[0].text
    conn = created.structured_content["id"]
    got = await call(gateway, editor_key, "COLLECTION_CONNECTIONS_GET", connection_id=conn)
    assert got.structured_content["url"] == f"{listener.url}?api_key=…"
    listed = next(c for c in gateway.mesh("connections", "list") if c["id"] == conn)
    assert listed["url"] == f"{listener.url}?api_key=…"
    refused = await call(gateway, editor_key, "COLLECTION_CONNECTIONS_UPDATE", connection_id=conn,
                         url=f"gopher://127.0.0.1/?api_key={QUERY_SECRET}")
    assert refused.is_error and "gopher" in refused.content[0].text
    searched = await call(gateway, editor_key, "COLLECTION_CONNECTIONS_LIST", search=QUERY_SECRET[:16])
    assert searched.structured_content["items"] == []
    for text in (json.dumps(got.structured_content), refused.content[0].text, gateway.log(), *gateway.cli_output):
        assert not find_secret(text, QUERY_SECRET)


# -- 7 ------------------------------------------------------------------------------------------

async def test_a_key_scoped_to_one_tool_makes_keys_and_orgs_only_within_its_scope(gateway, upstream):
    conn = gateway.add_connection("scoped-echo", upstream.url)
    narrow = gateway.create_key("one-tool", "--scope", json.dumps({"tools": {conn: ["echo"]}}))
    assert await tools_seen(gateway, conn, narrow) == ["echo"]

    made = await call(gateway, narrow, "API_KEY_CREATE", name="made-without-a-scope")
    assert not made.is_error, made.content[0].text
    assert await tools_seen(gateway, conn, made.structured_content["key"]) == ["echo"], \
        "a key made through a scoped key must not get the member's full rights"
    assert made.structured_content["scope"] == [{"tools": {conn: ["echo"]}, "prompts": {}, "resources": {},
                                                 "manage": []}]

    orgs_before = gateway.mesh("orgs", "list")
    founded = await call(gateway, narrow, "ORGANIZATION_CREATE", name="Escape Hatch")
    assert founded.is_error and "scope" in founded.content[0].text
    assert gateway.mesh("orgs", "list") == orgs_before


# -- 9 ------------------------------------------------------------------------------------------

async def test_member_add_always_invites_and_says_nothing_of_the_address(gateway):
    gateway.mesh("users", "create", "--email", "known@example.com", "--password-stdin",
                 input="a long enough password\n")
    owner = gateway.first_run_key
    answers = {}
    for email in ("known@example.com", "nobody@example.com"):
        result = await call(gateway, owner, "ORGANIZATION_MEMBER_ADD", email=email, role="member")
        assert not result.is_error, result.content[0].text
        answers[email] = {k: v for k, v in result.structured_content.items() if k != "email"}
    assert answers["known@example.com"] == answers["nobody@example.com"] == {"status": "invited", "role": "member"}
    members = (await call(gateway, owner, "ORGANIZATION_MEMBER_LIST")).structured_content["items"]
    assert "known@example.com" not in {m["email"] for m in members}, "nobody becomes a member without accepting"

    emails = [p.read_text() for p in sorted((gateway.data_dir / "outbox").iterdir())]
    invitation = next(text for text in emails if "To: known@example.com" in text)
    token = re.search(r"inv_[A-Za-z0-9_-]+", invitation).group(0)
    for text in emails:
        assert not find_secret(gateway.log(), re.search(r"inv_[A-Za-z0-9_-]+", text).group(0))
    gateway.mesh("members", "accept", "--token", token)  # the user's consent
    members = (await call(gateway, owner, "ORGANIZATION_MEMBER_LIST")).structured_content["items"]
    assert "known@example.com" in {m["email"] for m in members}
