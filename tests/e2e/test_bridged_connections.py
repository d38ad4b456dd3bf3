"""Upstreams that do not speak Streamable HTTP, end to end through `mesh up` and the bridge: a
Python stdio server built with the SDK, the official `@modelcontextprotocol/server-everything`
run by `npx`, and a legacy HTTP+SSE server, each used by the SDK's client in both generations;
children killed and restarted; the bridge closed to everyone but the data plane."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import anyio
import httpx2
import pytest
from mcp import MCPError
from mcp.shared.subscriptions import ToolsListChanged
from mcp_types import (CreateMessageResult, ElicitResult, EmptyResult, InputRequiredResult, ResourceUpdatedNotification,
                       ListRootsResult, Root, SetLevelRequest, SetLevelRequestParams, TextContent,
                       ToolListChangedNotification)

from dataplane_addon.bridge.supervisor import process_alive
from tests.conftest import unavailable
from tests.support import (
    MESH,
    MODERN,
    ROOT,
    STDIO_SERVER,
    Gateway,
    call_tool_status,
    free_port,
    mcp_client,
    mcp_headers,
    port_open,
    rpc,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

NPM_CACHE = ROOT / ".cache" / "npm"
SECRET = "s3cret-env-value-never-shown"
MODES = ["auto", "legacy"]


@pytest.fixture(scope="session")
def npm_cache():
    """server-everything in a local npm cache, so the test runs npx offline (see the script)."""
    if not (NPM_CACHE / "_npx").is_dir():
        subprocess.run([str(ROOT / "scripts" / "install-test-upstreams")], timeout=300, check=False)
    if not (NPM_CACHE / "_npx").is_dir():
        unavailable("@modelcontextprotocol/server-everything in .cache/npm (scripts/install-test-upstreams)")
    return NPM_CACHE


def wait_ready(gateway, connection_id: str, other_than_pid: int | None = None) -> dict:
    def ready():
        state = gateway.bridge_health().get(connection_id)
        fresh = other_than_pid is None or state and state["pid"] != other_than_pid
        return state if state and state["state"] == "ready" and fresh else None

    return wait_for(ready, timeout=30, interval=0.1, what=f"bridged connection {connection_id} to be ready")


def routable(gateway, connection_id: str, key: str) -> None:
    wait_for(lambda: call_tool_status(gateway.mcp_url(connection_id), key, "no-such-tool")[0] != 404, timeout=5,
             what="the data plane to know the connection")


@pytest.fixture(scope="module")
def api_key(gateway):
    return gateway.create_key("bridge-tests")


@pytest.fixture(scope="module")
def python_stdio(gateway, api_key):
    cid = gateway.add_stdio_connection("py-stdio", STDIO_SERVER, f"MESH_TEST_SECRET={SECRET}")
    wait_ready(gateway, cid)
    routable(gateway, cid, api_key)
    return cid


@pytest.fixture(scope="module")
def everything(gateway, api_key, npm_cache):
    cid = gateway.add_stdio_connection("everything", "npx -y @modelcontextprotocol/server-everything",
                                       f"npm_config_cache={npm_cache}", "npm_config_offline=true")
    wait_ready(gateway, cid)
    routable(gateway, cid, api_key)
    return cid


@pytest.fixture(scope="module")
def legacy_sse(gateway, api_key):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tests.upstreams.stdio_server", "sse", str(port)], cwd=ROOT,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: port_open(port), what="the legacy SSE upstream")
        cid = gateway.mesh("connections", "add", "--name", "legacy", "--sse-url", f"http://127.0.0.1:{port}/sse",
                           "--header", f"X-Upstream-Key: {SECRET}")["id"]
        wait_ready(gateway, cid)
        routable(gateway, cid, api_key)
        yield cid
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.parametrize("mode", MODES)
async def test_a_python_stdio_server_works_through_the_gateway(gateway, python_stdio, api_key, mode):
    async with mcp_client(gateway.mcp_url(python_stdio), api_key, mode=mode) as client:
        names = sorted(t.name for t in (await client.list_tools()).tools)
        assert names == ["add", "announce", "echo", "env", "header", "say", "surroundings", "whoami"]
        assert (await client.call_tool("echo", {"text": "over stdio"})).content[0].text == "over stdio"
        assert (await client.call_tool("add", {"a": 2, "b": 40})).structured_content == {"result": 42}
        # The connection's env reaches the child (and only the child).
        assert (await client.call_tool("env", {"name": "MESH_TEST_SECRET"})).content[0].text == SECRET
        assert (await client.call_tool("env", {"name": "MESH_BRIDGE_TOKEN"})).content[0].text == ""
        prompt = await client.get_prompt("greet", {"name": "Ada"})
        assert prompt.messages[0].content.text == "Hello, Ada!"
        motd = await client.read_resource("mesh://motd")
        assert motd.contents[0].text == "bridged resources work"


@pytest.mark.parametrize("mode", MODES)
async def test_server_everything_from_npm_works_through_the_gateway(gateway, everything, api_key, mode):
    async with mcp_client(gateway.mcp_url(everything), api_key, mode=mode) as client:
        assert client.server_info.name == "mcp-servers/everything"
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"echo", "get-sum"} <= names
        assert (await client.call_tool("echo", {"message": "hi"})).content[0].text == "Echo: hi"
        assert "42" in (await client.call_tool("get-sum", {"a": 2, "b": 40})).content[0].text
        assert (await client.list_prompts()).prompts
        assert (await client.list_resources()).resources


@pytest.mark.parametrize("mode", MODES)
async def test_a_legacy_http_sse_server_works_through_the_bridge(gateway, legacy_sse, api_key, mode):
    async with mcp_client(gateway.mcp_url(legacy_sse), api_key, mode=mode) as client:
        assert (await client.call_tool("echo", {"text": "over sse"})).content[0].text == "over sse"
        assert (await client.call_tool("add", {"a": 1, "b": 2})).structured_content == {"result": 3}
        # The connection's headers reach the SSE server; the caller's key and the bridge token do not.
        assert (await client.call_tool("header", {"name": "X-Upstream-Key"})).content[0].text == SECRET
        for never in ("Authorization", "X-Mesh-Bridge-Token"):
            assert (await client.call_tool("header", {"name": never})).content[0].text == ""


async def test_a_killed_stdio_child_is_restarted_and_the_next_call_works(gateway, python_stdio, api_key):
    async with mcp_client(gateway.mcp_url(python_stdio), api_key, mode="legacy") as client:
        first = int((await client.call_tool("whoami", {})).content[0].text)
        before = gateway.bridge_health()[python_stdio]
        assert before["pid"] == first
        os.kill(first, signal.SIGKILL)
        # Straight away, on the same client session: a listing meets the dead child or waits
        # for its successor, and is answered either way.
        assert len((await client.list_tools()).tools) == 8
        after = wait_ready(gateway, python_stdio, other_than_pid=first)
        assert int((await client.call_tool("whoami", {})).content[0].text) == after["pid"]
    assert after["restarts"] == before["restarts"] + 1 and after["last_error"] == "the process exited"
    async with mcp_client(gateway.mcp_url(python_stdio), api_key) as client:
        assert (await client.call_tool("echo", {"text": "again"})).content[0].text == "again"


async def test_a_tool_call_that_meets_a_dying_child_gets_a_clear_error_not_a_hang(gateway, python_stdio, api_key):
    async with mcp_client(gateway.mcp_url(python_stdio), api_key, mode="legacy") as client:
        first = int((await client.call_tool("whoami", {})).content[0].text)
        os.kill(first, signal.SIGKILL)
        started = time.monotonic()
        try:
            # Either it reaches the restarted child, or it is refused: a call that may have run
            # is never sent twice.
            second = int((await client.call_tool("whoami", {})).content[0].text)
            assert second != first
        except MCPError as error:
            assert error.code == -32002 and "py-stdio" in error.message
        assert time.monotonic() - started < 8
    wait_ready(gateway, python_stdio, other_than_pid=first)


async def test_killing_npx_restarts_server_everything_and_the_next_call_works(gateway, everything, api_key):
    first = wait_ready(gateway, everything)["pid"]
    os.kill(first, signal.SIGKILL)  # npx itself; the server it started must not be left behind
    restarted = wait_ready(gateway, everything, other_than_pid=first)
    assert restarted["restarts"] >= 1
    async with mcp_client(gateway.mcp_url(everything), api_key) as client:
        assert (await client.call_tool("echo", {"message": "back"})).content[0].text == "Echo: back"
    wait_for(lambda: not live_processes_in_session(first), timeout=10,
             what="the processes npx had started to be stopped with it")


def live_processes_in_session(session_id: int) -> list[str]:
    """The processes of a session (the bridge starts each child as a session leader), zombies aside."""
    listing = subprocess.run(["ps", "-o", "pid=,stat=", "-g", str(session_id)], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if line.split()[1:2] and not line.split()[1].startswith("Z")]


def test_a_command_that_cannot_start_gets_a_quick_503_with_a_json_rpc_error(gateway, api_key):
    cid = gateway.add_stdio_connection("broken", "/nonexistent/mcp-server --flag")
    wait_for(lambda: gateway.bridge_health().get(cid, {}).get("restarts", 0) >= 1, timeout=10,
             what="the broken connection to have failed")
    started = time.monotonic()
    response = wait_for(lambda: (r := httpx2.post(gateway.mcp_url(cid), json=rpc("tools/list", request_id=9),
                                                   headers=mcp_headers(rpc("tools/list"), api_key), timeout=20))
                        .status_code != 404 and r, timeout=5, what="the connection to be routable")
    assert time.monotonic() - started < 8
    assert response.status_code == 503
    assert response.json()["error"]["code"] == -32002
    assert "broken" in response.json()["error"]["message"]


def test_bridged_connections_are_authorized_like_any_other(gateway, python_stdio):
    narrow = gateway.create_key("echo-only", "--scope", json.dumps({"tools": {python_stdio: ["echo"]}}))
    routable(gateway, python_stdio, narrow)
    status, answer = call_tool_status(gateway.mcp_url(python_stdio), narrow, "env", {"name": "MESH_TEST_SECRET"})
    assert answer["error"]["code"] == -32003 and SECRET not in json.dumps(answer)
    status, answer = call_tool_status(gateway.mcp_url(python_stdio), narrow, "echo", {"text": "ok"})
    assert status == 200 and answer["result"]["content"][0]["text"] == "ok"


def test_the_bridge_refuses_everyone_but_the_data_plane(gateway, python_stdio, api_key):
    bridge_url = f"http://127.0.0.1:{gateway.bridge_port}/bridge/{python_stdio}/mcp"
    body = rpc("tools/call", {"name": "env", "arguments": {"name": "MESH_TEST_SECRET"}})
    direct = httpx2.post(bridge_url, json=body, headers=mcp_headers(body), timeout=10)
    assert direct.status_code == 401 and SECRET not in direct.text
    # Nobody, not even the operator, registers the bridge's loopback URL as an http upstream: it
    # is one of the gateway's own ports (the data plane refuses to connect there too, whatever a
    # name resolves to by then: tests/e2e/test_security_addresses.py).
    refused = subprocess.run([MESH, "connections", "add", "--name", "sneaky", "--url", bridge_url, "--json"],
                             env=gateway.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "the gateway's own port" in refused.stderr
    assert all(c["name"] != "sneaky" for c in gateway.mesh("connections", "list"))


def test_env_values_never_show_in_listings_or_logs(gateway, python_stdio):
    listed = next(c for c in gateway.mesh("connections", "list") if c["id"] == python_stdio)
    assert listed["transport"] == "stdio" and listed["command"] == sys.executable
    assert listed["args"] == [str(ROOT / "tests" / "upstreams" / "stdio_server.py")]
    assert "env:MESH_TEST_SECRET" in listed["credentials"]
    assert SECRET not in json.dumps(listed)
    assert SECRET not in gateway.log()


def test_stopping_mesh_up_stops_every_stdio_child(tmp_path, redis_url):
    own = Gateway(tmp_path, redis_url).start()
    try:
        cid = own.add_stdio_connection("py-stdio", STDIO_SERVER)
        pid = wait_ready(own, cid)["pid"]
    finally:
        assert own.stop() == 0
    assert not process_alive(pid), "a stdio child outlived the gateway"


# -- what a stdio server says back while it works, relayed to the client it concerns ------------

async def arrival(received: list, timeout: float) -> None:
    """Wait, serving the client meanwhile, until something is in ``received``."""
    with anyio.fail_after(timeout):
        while not received:
            await anyio.sleep(0.05)


def sampler(answer: str):
    """A sampling callback that answers ``answer`` and records what it was asked."""
    asked = []

    async def sample(_context, params):
        asked.append(params.messages[0].content.text)
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text=answer), model="test-llm")

    sample.asked = asked
    return sample


@pytest.mark.parametrize("mode", MODES)
async def test_progress_of_a_stdio_tool_reaches_its_caller(gateway, everything, api_key, mode):
    seen = []

    async def progress(value, total, _message):
        seen.append((value, total))

    async with mcp_client(gateway.mcp_url(everything), api_key, mode=mode) as client:
        result = await client.call_tool("trigger-long-running-operation", {"duration": 0.6, "steps": 3},
                                        progress_callback=progress)
    assert "completed" in result.content[0].text
    assert seen == [(1, 3), (2, 3), (3, 3)]


@pytest.mark.parametrize("mode", MODES)
async def test_log_messages_of_a_stdio_server_reach_the_caller_at_its_level(gateway, everything, api_key, mode):
    messages = []

    async def logged(params):
        messages.append(params)

    async with mcp_client(gateway.mcp_url(everything), api_key, mode=mode, logging_callback=logged,
                          log_level="debug") as client:
        if mode == "legacy":
            await client.session.send_request(SetLevelRequest(params=SetLevelRequestParams(level="debug")),
                                              EmptyResult)
        try:
            started = await client.call_tool("toggle-simulated-logging", {})
            assert not started.is_error
            await arrival(messages, 5)
        finally:
            await client.call_tool("toggle-simulated-logging", {})  # off again: the child is shared
    assert "message" in str(messages[0].data).lower()  # "Info-level message", …


async def test_a_client_that_chose_a_log_level_gets_nothing_below_it(gateway, python_stdio, api_key):
    messages = []

    async def logged(params):
        messages.append((params.level, params.data))

    async with mcp_client(gateway.mcp_url(python_stdio), api_key, mode="legacy", logging_callback=logged) as client:
        await client.call_tool("say", {"level": "info", "text": "before any choice"})
        await client.session.send_request(SetLevelRequest(params=SetLevelRequestParams(level="warning")), EmptyResult)
        await client.call_tool("say", {"level": "info", "text": "too quiet"})
        await client.call_tool("say", {"level": "error", "text": "loud enough"})
    assert messages == [("info", "before any choice"), ("error", "loud enough")]


@pytest.mark.parametrize("mode", MODES)
async def test_sampling_by_a_stdio_server_is_answered_by_the_caller(gateway, everything, api_key, mode):
    sample = sampler("forty-two")
    async with mcp_client(gateway.mcp_url(everything), api_key, mode=mode, sampling_callback=sample) as client:
        assert (client.protocol_version == MODERN) == (mode == "auto")  # as input_required results, or not
        result = await client.call_tool("trigger-sampling-request", {"prompt": "the answer?", "maxTokens": 5})
    assert not result.is_error
    assert sample.asked == ["Resource trigger-sampling-request context: the answer?"]
    assert "forty-two" in result.content[0].text and "test-llm" in result.content[0].text


@pytest.mark.parametrize("mode", MODES)
async def test_elicitation_by_a_stdio_server_is_answered_by_the_caller(gateway, everything, api_key, mode):
    async def elicit(_context, params):
        assert "name" in params.requested_schema["properties"]
        return ElicitResult(action="accept", content={"name": "Ada Lovelace", "check": True})

    async with mcp_client(gateway.mcp_url(everything), api_key, mode=mode, elicitation_callback=elicit) as client:
        assert (client.protocol_version == MODERN) == (mode == "auto")
        result = await client.call_tool("trigger-elicitation-request", {})
    assert not result.is_error
    assert "Ada Lovelace" in json.dumps([c.model_dump() for c in result.content])


async def test_a_client_without_sampling_gets_an_error_and_no_request(gateway, everything, api_key):
    async with mcp_client(gateway.mcp_url(everything), api_key, mode="legacy") as client:
        result = await client.call_tool("trigger-sampling-request", {"prompt": "x", "maxTokens": 5})
    assert result.is_error


async def test_sampling_is_never_sent_to_a_client_it_may_not_concern(gateway, everything, api_key):
    """Two interactive calls in flight on the shared child: whose sampling request is it? The
    gateway cannot tell, so neither client is asked and the sampling tool reports an error."""
    bystander = sampler("not mine")
    requester = sampler("mine")
    url = gateway.mcp_url(everything)
    async with mcp_client(url, api_key, mode="legacy", sampling_callback=bystander) as slow, \
            mcp_client(url, api_key, mode="legacy", sampling_callback=requester) as asking:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(slow.call_tool, "trigger-long-running-operation", {"duration": 2, "steps": 1})
            await anyio.sleep(0.5)
            result = await asking.call_tool("trigger-sampling-request", {"prompt": "x", "maxTokens": 5})
    assert result.is_error
    assert bystander.asked == [] and requester.asked == []


@pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed")  # still 2025's way, which the test uses
async def test_resource_updates_reach_the_clients_that_subscribed(gateway, everything, api_key):
    updates = []

    async def handle(message):
        if isinstance(message, ResourceUpdatedNotification):
            updates.append(message.params.uri)

    url = gateway.mcp_url(everything)
    async with mcp_client(url, api_key, mode="legacy", message_handler=handle) as client, \
            mcp_client(url, api_key, mode="legacy") as other:
        uri = (await client.list_resources()).resources[0].uri
        await client.subscribe_resource(uri)
        await other.subscribe_resource(uri)
        await other.unsubscribe_resource(uri)  # the first subscriber keeps the upstream subscribed
        await client.call_tool("toggle-subscriber-updates", {})
        try:
            await arrival(updates, 12)
        finally:
            await client.call_tool("toggle-subscriber-updates", {})
    assert updates[0] == uri


async def test_a_round_trip_is_continued_only_by_the_key_that_started_it(gateway, everything, api_key):
    """A 2026-07-28 sampling request comes back as an input_required result; its requestState is
    refused to another key (even one allowed the same tool), and its caller can finish it."""
    other_key = gateway.create_key("bridge-tests-other")
    url = gateway.mcp_url(everything)
    arguments = {"prompt": "whose?", "maxTokens": 5}
    async with mcp_client(url, api_key, sampling_callback=sampler("mine")) as owner, \
            mcp_client(url, other_key, sampling_callback=sampler("stolen")) as thief:
        assert owner.protocol_version == MODERN and thief.protocol_version == MODERN
        first = await owner.session.call_tool("trigger-sampling-request", arguments, allow_input_required=True)
        assert isinstance(first, InputRequiredResult)
        (key, asked), = first.input_requests.items()
        assert asked.method == "sampling/createMessage"
        answer = {key: CreateMessageResult(role="assistant", content=TextContent(type="text", text="stolen"),
                                           model="test-llm")}
        with pytest.raises(MCPError) as refused:
            await thief.session.call_tool("trigger-sampling-request", arguments, input_responses=answer,
                                          request_state=first.request_state)
        assert refused.value.error.code == -32602
        answer[key].content.text = "mine"
        done = await owner.session.call_tool("trigger-sampling-request", arguments, input_responses=answer,
                                             request_state=first.request_state)
    assert "mine" in done.content[0].text and "stolen" not in done.content[0].text


async def test_list_changed_notifications_reach_every_client_with_a_stream(gateway, python_stdio, api_key):
    changes = {"watching": [], "announcing": []}

    def recorder(name: str):
        async def handle(message):
            if isinstance(message, ToolListChangedNotification):
                changes[name].append(message)
        return handle

    url = gateway.mcp_url(python_stdio)
    async with mcp_client(url, api_key, mode="legacy", message_handler=recorder("watching")), \
            mcp_client(url, api_key, mode="legacy", message_handler=recorder("announcing")) as announcing, \
            mcp_client(url, api_key) as modern:
        assert modern.protocol_version == MODERN
        async with modern.listen(tools_list_changed=True, resource_subscriptions=["mesh://motd"]) as listening:
            # Resource URIs are not honoured on a listen stream (nothing authorizes them there).
            assert listening.honored.tools_list_changed and not listening.honored.resource_subscriptions
            assert (await announcing.call_tool("announce", {})).content[0].text == "announced"
            with anyio.fail_after(5):
                event = await anext(listening)
        await arrival(changes["watching"], 5)
        await arrival(changes["announcing"], 5)
    assert isinstance(event, ToolsListChanged)


async def test_roots_are_not_offered_to_a_shared_child(gateway, everything, api_key):
    """A server keeps its session's roots (server-everything does): on the child all clients
    share, one client's directories would be shown to the next, so the child is told the client
    does not support roots and offers no roots tool."""
    async def roots(_context):
        return ListRootsResult(roots=[Root(uri="file:///home/alice/secret-project", name="alice")])

    async with mcp_client(gateway.mcp_url(everything), api_key, mode="legacy", list_roots_callback=roots) as client:
        names = {t.name for t in (await client.list_tools()).tools}
    assert "trigger-sampling-request" in names and "get-roots-list" not in names
