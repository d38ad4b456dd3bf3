"""The whole MCP transport in flight: streamed progress, sessions bound to their caller, headers
that disagree with the body, size limits, timeouts, and random input that must never break the
gateway."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import Gateway, mcp_client, mcp_headers, rpc, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture(scope="module")
def connection_id(gateway, upstream):
    return gateway.add_connection("echo", upstream.url)


@pytest.fixture(scope="module")
def key(gateway):
    return gateway.create_key("transport")


@pytest.fixture(scope="module")
def echo_only_key(gateway, connection_id):
    gateway.mesh("roles", "create", "--name", "echoer", "--permissions", json.dumps({"tools": {"*": ["echo"]}}))
    gateway.add_user("echoer@example.com", "echoer")
    return gateway.create_key("echoer", "--user", "echoer@example.com")


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_progress_is_streamed_before_the_result_and_in_order(gateway, connection_id, key, mode):
    arrivals: list[tuple[str, float, float]] = []

    async def progress(value, total, message):
        arrivals.append(("progress", value, time.monotonic()))

    async with mcp_client(gateway.mcp_url(connection_id), key, mode=mode) as client:
        started = time.monotonic()
        result = await client.call_tool("count_slowly", {"steps": 3, "interval": 1.0}, progress_callback=progress)
        finished = time.monotonic()
    assert result.content[0].text == "counted to 3"
    assert [value for _, value, _ in arrivals] == [1, 2, 3]
    first_at = arrivals[0][2]
    # The upstream sends the first notification at once and the result ~3 s later: a buffering
    # gateway would deliver them together.
    assert finished - first_at > 2.0, f"first progress came {finished - first_at:.2f}s before the result"
    assert first_at - started < 1.5


def initialize(gateway, connection_id, key) -> httpx2.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json, text/event-stream",
               "Content-Type": "application/json"}
    return httpx2.post(gateway.mcp_url(connection_id), json=body, headers=headers, timeout=10)


def in_session(gateway, connection_id, key, session, body) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json, text/event-stream",
               "Content-Type": "application/json", "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    return httpx2.post(gateway.mcp_url(connection_id), json=body, headers=headers, timeout=10)


def test_a_session_is_bound_to_the_key_that_opened_it(gateway, upstream, connection_id, key):
    opened = initialize(gateway, connection_id, key)
    session = opened.headers["mcp-session-id"]
    upstream_ids = {r["headers"].get("mcp-session-id") for r in upstream.requests()}
    assert session not in upstream_ids, "the client is given a bound id, not the upstream's own"
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    assert in_session(gateway, connection_id, key, session, ping).status_code == 200

    thief = gateway.create_key("thief")
    wait_for(lambda: in_session(gateway, connection_id, thief, "x", ping).status_code == 404, timeout=2)
    stolen = in_session(gateway, connection_id, thief, session, ping)
    assert stolen.status_code == 404 and "Session not found" in stolen.json()["error"]["message"]
    forged = in_session(gateway, connection_id, key, session.rpartition(".")[0], ping)
    assert forged.status_code == 404, "the bare upstream id must not work either"


def test_a_header_cannot_smuggle_a_denied_call_past_the_policy(gateway, upstream, connection_id, echo_only_key):
    body = rpc("tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}}, request_id=12)
    headers = {**mcp_headers(body, echo_only_key), "Mcp-Name": "echo"}
    before = [r for r in upstream.requests() if '"add"' in r["body"]]
    response = httpx2.post(gateway.mcp_url(connection_id), json=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32020 and response.json()["id"] == 12
    assert [r for r in upstream.requests() if '"add"' in r["body"]] == before
    method_lie = {**mcp_headers(body, echo_only_key), "Mcp-Method": "tools/list"}
    assert httpx2.post(gateway.mcp_url(connection_id), json=body, headers=method_lie).json()["error"]["code"] == -32020


# -- removed and unknown methods, answered as the request's protocol version says ---------------

REMOVED_IN_2026 = ["initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"]


@pytest.mark.parametrize("method", [*REMOVED_IN_2026, "unknown/method", "tasks/list"])
def test_a_2026_request_for_a_removed_or_unknown_method_is_404_method_not_found_as_from_the_upstream(
        gateway, upstream, connection_id, key, method):
    body = rpc(method, {"uri": "file:///docs/readme"}, request_id=500)
    direct = httpx2.post(upstream.url, json=body, headers=mcp_headers(body), timeout=10)
    assert (direct.status_code, direct.json()["id"], direct.json()["error"]["code"]) == (404, 500, -32601)
    before = len(upstream.requests())
    response = httpx2.post(gateway.mcp_url(connection_id), json=body, headers=mcp_headers(body, key), timeout=10)
    assert response.status_code == 404
    assert response.json() == {"jsonrpc": "2.0", "id": 500, "error": {
        "code": -32601, "message": f"Method not found: {method!r} is not a method of MCP 2026-07-28",
        "data": {"method": method}}}
    assert upstream.requests()[before:] == [], "refused by the gateway, never forwarded"


def test_a_2026_request_without_the_version_header_is_judged_by_the_version_in_its_meta(
        gateway, upstream, connection_id, key):
    body = rpc("resources/subscribe", {"uri": "file:///docs/readme"}, request_id=501)
    headers = {name: value for name, value in mcp_headers(body, key).items() if name != "MCP-Protocol-Version"}
    before = len(upstream.requests())
    response = httpx2.post(gateway.mcp_url(connection_id), json=body, headers=headers, timeout=10)
    assert (response.status_code, response.json()["error"]["code"]) == (404, -32601)
    assert upstream.requests()[before:] == []


def test_in_a_2025_session_an_unknown_method_is_still_refused_by_the_policy(gateway, upstream, connection_id, key):
    session = initialize(gateway, connection_id, key).headers["mcp-session-id"]
    before = len(upstream.requests())
    answer = in_session(gateway, connection_id, key, session,
                        {"jsonrpc": "2.0", "id": 502, "method": "unknown/method", "params": {}})
    assert answer.status_code == 200
    assert answer.json()["id"] == 502 and answer.json()["error"]["code"] == -32003
    assert "is not allowed through the gateway" in answer.json()["error"]["message"]
    assert upstream.requests()[before:] == []


def test_a_2026_tool_call_the_policy_denies_is_still_answered_forbidden_with_200(gateway, connection_id, echo_only_key):
    body = rpc("tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}}, request_id=503)
    response = httpx2.post(gateway.mcp_url(connection_id), json=body, headers=mcp_headers(body, echo_only_key),
                           timeout=10)
    assert (response.status_code, response.json()["error"]["code"]) == (200, -32003)


def test_an_oversized_body_gets_413_with_a_json_error(gateway, connection_id, key):
    body = rpc("tools/call", {"name": "echo", "arguments": {"text": "x" * (5 * 1024 * 1024)}})
    response = httpx2.post(gateway.mcp_url(connection_id), json=body, headers=mcp_headers(body, key), timeout=30)
    assert response.status_code == 413
    assert response.json()["error"]["message"].startswith("Payload too large")


@pytest.fixture
def silent_upstream():
    """A TCP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/mcp"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_an_upstream_that_never_answers_gets_504_and_others_keep_working(tmp_path, redis_url, upstream, silent_upstream):
    gateway = Gateway(tmp_path, redis_url, env={"MESH_UPSTREAM_TIMEOUT": "1"}).start()
    try:
        slow = gateway.add_connection("silent", silent_upstream)
        fine = gateway.add_connection("echo", upstream.url)
        key = gateway.create_key("timeouts")
        body = rpc("tools/call", {"name": "echo", "arguments": {"text": "hi"}}, request_id=31)
        wait_for(lambda: httpx2.post(gateway.mcp_url(fine), json=body, headers=mcp_headers(body, key)).status_code == 200,
                 timeout=3)
        started = time.monotonic()
        response = httpx2.post(gateway.mcp_url(slow), json=body, headers=mcp_headers(body, key), timeout=10)
        assert response.status_code == 504 and response.json()["id"] == 31
        assert 0.8 < time.monotonic() - started < 5
        assert httpx2.post(gateway.mcp_url(fine), json=body, headers=mcp_headers(body, key)).status_code == 200
    finally:
        assert gateway.stop() == 0


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
rpc_like = st.fixed_dictionaries({"jsonrpc": st.sampled_from(["2.0", "1.0", 2])}, optional={
    "id": st.one_of(st.integers(), st.text(max_size=8), st.none(), st.booleans()),
    "method": st.one_of(st.sampled_from(["tools/call", "tools/list", "ping", "initialize", "resources/read",
                                         "completion/complete", "notifications/x", "x/y"]), st.text(max_size=12)),
    "params": json_values, "result": json_values, "error": json_values,
})
bodies = st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                   rpc_like.map(lambda v: json.dumps(v).encode()),
                   st.lists(rpc_like, max_size=3).map(lambda v: json.dumps(v).encode()))
header_sets = st.fixed_dictionaries({}, optional={
    "Mcp-Method": st.sampled_from(["tools/call", "tools/list", "ping"]), "Mcp-Name": st.sampled_from(["echo", "add"]),
    "Mcp-Session-Id": st.text(alphabet="abcdef0123456789.", max_size=40), "Content-Type": st.just("application/json"),
})


def test_random_input_always_gets_a_well_formed_answer_and_the_gateway_keeps_serving(gateway, connection_id, key):
    url = gateway.mcp_url(connection_id)
    client = httpx2.Client(timeout=10)
    deadline = time.monotonic() + 40  # bounded in time as well as in count

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, headers=header_sets, method=st.sampled_from(["POST", "POST", "POST", "GET", "DELETE"]))
    def throw(body, headers, method):
        if time.monotonic() > deadline:
            return
        response = client.request(method, url, content=body if method == "POST" else None,
                                  headers={"Authorization": f"Bearer {key}", "Accept": "application/json, text/event-stream",
                                           **headers})
        assert response.status_code != 500, response.text
        assert "Traceback" not in response.text
        if response.status_code in (400, 401, 403, 404, 405, 413, 502, 504) and response.headers.get("server") != "uvicorn":
            answer = response.json()  # the gateway's own answers are JSON-RPC errors
            assert answer["jsonrpc"] == "2.0" and "code" in answer["error"]

    throw()
    client.close()
    health = httpx2.get(gateway.base + "/health").json()
    assert health["status"] == "ok"
    body = rpc("tools/call", {"name": "echo", "arguments": {"text": "still fine"}})
    assert "still fine" in httpx2.post(url, json=body, headers=mcp_headers(body, key)).text


def test_delete_ends_the_session_and_last_event_id_reaches_the_upstream(gateway, upstream, connection_id, key):
    session = initialize(gateway, connection_id, key).headers["mcp-session-id"]
    headers = {"Authorization": f"Bearer {key}", "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25",
               "Accept": "text/event-stream"}
    with httpx2.stream("GET", gateway.mcp_url(connection_id), headers=headers, timeout=10) as stream:
        assert stream.status_code == 200  # the server-to-client stream is open, and streaming
        assert stream.headers["content-type"].startswith("text/event-stream")
    # Resumption is the upstream's business (this one keeps no event store and fails it);
    # the gateway's is to pass the header through untouched.
    resume = {**headers, "Last-Event-ID": "resume-from-42"}
    with httpx2.stream("GET", gateway.mcp_url(connection_id), headers=resume, timeout=10) as stream:
        assert stream.headers.get("server") == "uvicorn", "the answer must be the upstream's own"
    assert any(r["headers"].get("last-event-id") == "resume-from-42" for r in upstream.requests())
    ended = httpx2.delete(gateway.mcp_url(connection_id), headers={"Authorization": f"Bearer {key}",
                                                                    "Mcp-Session-Id": session}, timeout=10)
    assert ended.status_code == 200
    ping = {"jsonrpc": "2.0", "id": 3, "method": "ping"}
    assert in_session(gateway, connection_id, key, session, ping).status_code == 404  # the upstream forgot it


def test_a_client_disconnect_cancels_the_upstream_call(gateway, upstream, connection_id, key):
    body = rpc("tools/call", {"name": "count_slowly", "arguments": {"steps": 20, "interval": 0.5}})
    body["params"]["_meta"]["progressToken"] = "p1"
    before = sum(1 for r in upstream.requests() if r["method"] == "CANCELLED")
    with httpx2.stream("POST", gateway.mcp_url(connection_id), json=body, headers=mcp_headers(body, key),
                       timeout=10) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                break  # the first progress event arrived: hang up
    wait_for(lambda: sum(1 for r in upstream.requests() if r["method"] == "CANCELLED") > before, timeout=5,
             what="the upstream to see the cancellation")
