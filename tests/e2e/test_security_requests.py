"""The security review's findings about requests and answers (issue #10, items 1–4 and 13–17),
each replayed against the real data plane under `mesh up`, with real upstreams that record
exactly what reached them: the upstream receives exactly what the gateway decided on, bodies are
refused before they are read, and listings are filtered whatever shape an answer takes."""

from __future__ import annotations

import base64
import gzip
import json
import select
import socket
import threading
import time
import zlib

import httpx2
import pytest

from tests.support import (
    ScriptedUpstream,
    cpu_seconds,
    mcp_headers,
    rpc,
    rss_kib,
    wait_for,
)

pytestmark = pytest.mark.e2e

READ_TIMEOUT = 2  # MESH_BODY_READ_TIMEOUT of this module's gateway


GATEWAY_ENV = {"MESH_BODY_READ_TIMEOUT": str(READ_TIMEOUT)}


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    server = ScriptedUpstream(tmp_path_factory.mktemp("scripted")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def echo(gateway, upstream):
    return gateway.add_connection("echo", upstream.url)


@pytest.fixture(scope="module")
def echo_only(gateway, echo):
    """The key of a member whose role allows the tool echo only (and every listing)."""
    gateway.mesh("roles", "create", "--name", "echoer", "--permissions", json.dumps({"tools": {"*": ["echo"]}}))
    gateway.add_user("echoer@example.com", "echoer")
    key = gateway.create_key("echoer", "--user", "echoer@example.com")
    wait_for(lambda: post(gateway, echo, key, rpc("tools/list")).status_code == 200, timeout=3,
             what="the key to be known")
    return key


def post(gateway, connection_id, key, body, headers=None, content: bytes | None = None) -> httpx2.Response:
    sent = {**mcp_headers(body if isinstance(body, dict) else None, key), **(headers or {})}
    data = content if content is not None else json.dumps(body).encode()
    return httpx2.post(gateway.mcp_url(connection_id), content=data, headers=sent, timeout=15)


def wait_until_known(gateway, connection_id, key) -> None:
    """Until the data plane knows a new connection (404 before), asking with a ping, which it
    forwards in a 2025-11-25 request (2026-07-28 has no ping: the gateway answers 404 itself)."""
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    wait_for(lambda: post(gateway, connection_id, key, ping, {"MCP-Protocol-Version": "2025-11-25"}).status_code != 404,
             timeout=3)


def received(upstream, since: int) -> list[dict]:
    """Requests with a body that reached the upstream after the first ``since`` log lines."""
    return [r for r in upstream.requests()[since:] if r.get("body_b64")]


def bodies(upstream, since: int) -> list[bytes]:
    return [base64.b64decode(r["body_b64"]) for r in received(upstream, since)]


# -- item 1 and 14: request encodings ---------------------------------------------------------

SMUGGLED = (b'{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"add","arguments":{"a":40,"b":2},'
            b'"x":"=22,=22name=22:=22echo"}}')


@pytest.fixture(scope="module")
def echo_session(gateway, echo, echo_only) -> str:
    """A 2025-11-25 session opened through the gateway by the echo-only key, as the review's client had."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "review", "version": "0"}}}
    opened = httpx2.post(gateway.mcp_url(echo), json=body, timeout=10, headers={
        "Authorization": f"Bearer {echo_only}", "Accept": "application/json, text/event-stream"})
    assert opened.status_code == 200, opened.text
    return opened.headers["mcp-session-id"]


@pytest.mark.parametrize("encoding, encode", [
    ("quopri", lambda b: b),  # the review's exploit: the gateway read `echo`, the upstream ran `add`
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("GZip", gzip.compress),
    ("identity, gzip", gzip.compress),
    ("base64", base64.b64encode),
    ("br", lambda b: b),
])
def test_a_request_body_in_any_content_encoding_is_refused_and_never_reaches_the_upstream(
        gateway, upstream, echo, echo_only, echo_session, encoding, encode):
    before = len(upstream.requests())
    # Exactly as the review sent it: in a session, no Mcp-Method/Mcp-Name headers, so nothing but the
    # body's reading decides (the gateway's used to read `echo`, the upstream ran `add`: 42).
    response = httpx2.post(gateway.mcp_url(echo), content=encode(SMUGGLED), timeout=15, headers={
        "Authorization": f"Bearer {echo_only}", "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json", "Content-Encoding": encoding, "Mcp-Session-Id": echo_session,
        "MCP-Protocol-Version": "2025-11-25"})
    assert "42" not in response.text, "the upstream ran a tool the gateway did not decide on"
    assert response.status_code == 415
    answer = response.json()
    assert answer["error"]["code"] == -32600 and "Content-Encoding" in answer["error"]["message"]
    assert received(upstream, before) == []


def test_a_decompression_bomb_is_refused_on_its_headers(gateway, upstream, echo, echo_only):
    bomb = gzip.compress(json.dumps(rpc("tools/call", {"name": "echo", "arguments": {"text": "x" * 8 * 2**20}})).encode())
    assert len(bomb) < 16 * 1024
    before = len(upstream.requests())
    response = post(gateway, echo, echo_only, None, {"Content-Encoding": "gzip"}, content=bomb)
    assert response.status_code == 415 and received(upstream, before) == []


def test_an_identity_encoding_is_no_encoding(gateway, echo, echo_only):
    body = rpc("tools/call", {"name": "echo", "arguments": {"text": "plain"}})
    response = post(gateway, echo, echo_only, body, {"Content-Encoding": "identity"})
    assert response.status_code == 200 and "plain" in response.text


# -- item 2: parser differentials and canonical forwarding ------------------------------------

@pytest.mark.parametrize("raw", [
    b'{"jsonrpc":"2.0","id":5,"method":"ping","Method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}',
    b'{"jsonrpc":"2.0","id":5,"method":"ping","method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}',
    b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","Name":"add","arguments":{"text":"x"}}}',
    b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","arguments":{"text":"x"}},'
    b'"PARAMS":{"name":"add"}}',
])
def test_messages_that_decoders_could_read_differently_are_refused(gateway, upstream, echo, echo_only, raw):
    before = len(upstream.requests())
    response = post(gateway, echo, echo_only, None, {"Mcp-Method": "tools/call"}, content=raw)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == -32600
    assert received(upstream, before) == []


def test_the_upstream_receives_the_canonical_bytes_of_the_message_decided_on(gateway, upstream, echo, echo_only):
    message = rpc("tools/call", {"name": "echo", "arguments": {"text": "café 😀"}}, request_id=41)
    # The same message spelled otherwise: spaces, newlines, escapes a decoder resolves.
    spelled = json.dumps(message, indent=2, ensure_ascii=True).replace('"tools/call"', '"tools\\/call"').replace(
        '"echo"', '"\\u0065cho"').encode()
    before = len(upstream.requests())
    response = post(gateway, echo, echo_only, None, {"Mcp-Method": "tools/call", "Mcp-Name": "echo"}, content=spelled)
    assert response.status_code == 200 and "café 😀" in response.json()["result"]["content"][0]["text"]
    got, = bodies(upstream, before)
    assert got == json.dumps(json.loads(spelled), ensure_ascii=False, separators=(",", ":")).encode()
    assert got.startswith(b'{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{"name":"echo"')


# -- item 3: GET and DELETE with a body -------------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_get_and_delete_with_a_body_are_refused(gateway, upstream, echo, echo_only, method):
    before = len(upstream.requests())
    body = json.dumps(rpc("tools/call", {"name": "add", "arguments": {"a": 40, "b": 2}})).encode()
    response = httpx2.request(method, gateway.mcp_url(echo), content=body, timeout=10, headers={
        "Authorization": f"Bearer {echo_only}", "X-HTTP-Method-Override": "POST", "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream"})
    assert response.status_code == 400 and response.json()["error"]["code"] == -32600
    chunked = httpx2.request(method, gateway.mcp_url(echo), content=iter([body]), timeout=10, headers={
        "Authorization": f"Bearer {echo_only}", "X-HTTP-Method-Override": "POST"})
    assert chunked.status_code == 400
    assert upstream.requests()[before:] == []


# -- item 4: request headers are allow-listed -------------------------------------------------

FORWARDED = {"host", "content-type", "content-length", "accept", "accept-encoding", "user-agent",
             "mcp-protocol-version", "mcp-session-id", "mcp-method", "mcp-name", "last-event-id", "traceparent",
             "tracestate"}


def test_only_the_headers_mcp_needs_reach_the_upstream(gateway, upstream, echo, echo_only):
    body = rpc("tools/call", {"name": "echo", "arguments": {"text": "headers"}})
    sent = {
        "Metadata-Flavor": "Google", "X-Forwarded-For": "10.0.0.1", "X-Forwarded-Host": "internal",
        "X-Forwarded-Proto": "https", "Forwarded": "for=10.0.0.1", "X-Real-IP": "10.0.0.1", "Cookie": "s=1",
        "Origin": "https://evil.example", "X-HTTP-Method-Override": "DELETE", "X-Method-Override": "DELETE",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==", "X-Custom": "1", "Referer": "https://evil.example",
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "mesh=1",
        "User-Agent": "tests/1.0", "Mcp-Param-Text": "headers",
    }
    before = len(upstream.requests())
    assert post(gateway, echo, echo_only, body, sent).status_code == 200
    request, = received(upstream, before)
    names = set(request["headers"])
    assert names - FORWARDED == {"mcp-param-text"}, names - FORWARDED
    assert request["headers"]["traceparent"] == sent["traceparent"] and request["headers"]["user-agent"] == "tests/1.0"
    assert request["headers"]["content-type"] == "application/json"


def test_a_header_the_gateway_reads_may_not_come_twice(gateway, upstream, echo, echo_only):
    before = len(upstream.requests())
    with socket.create_connection(("127.0.0.1", gateway.port)) as conn:
        body = json.dumps(rpc("ping")).encode()
        conn.sendall(b"POST /mcp/" + echo.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + echo_only.encode() + b"\r\nContent-Type: application/json\r\nMcp-Session-Id: a.b\r\n"
                     b"Mcp-Session-Id: c.d\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        answer = read_answer(conn, timeout=5)
    assert answer.startswith(b"HTTP/1.1 400") and b"appears more than once" in answer
    assert upstream.requests()[before:] == []


# -- item 13: bodies are refused before they are read -----------------------------------------

def read_answer(conn: socket.socket, timeout: float) -> bytes:
    """One HTTP/1 answer with a Content-Length: its head and its body."""
    conn.settimeout(timeout)
    data = b""
    while True:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            if len(body) >= length:
                return data
        try:
            chunk = conn.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def test_a_keyless_post_announcing_a_huge_body_is_answered_before_the_body_and_held_nowhere(gateway, echo):
    pid = gateway.plane_pid("data plane")
    rss_before = rss_kib(pid)
    with socket.create_connection(("127.0.0.1", gateway.port)) as conn:
        conn.sendall(b"POST /mcp/" + echo.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 60000000\r\n\r\n")
        started = time.monotonic()
        answer = read_answer(conn, timeout=5)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert time.monotonic() - started < 2, "the answer waited for the body"
        chunk = b"x" * 65536
        sent = 0
        try:  # the body arrives after all: it is read and dropped, never kept
            while sent < 40_000_000:
                conn.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # or the gateway closes the connection first
    time.sleep(0.5)
    assert rss_kib(pid) - rss_before < 16 * 1024, "the refused body was held in memory"


def test_an_oversized_content_length_is_answered_413_before_the_body(gateway, echo, echo_only):
    with socket.create_connection(("127.0.0.1", gateway.port)) as conn:
        conn.sendall(b"POST /mcp/" + echo.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + echo_only.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: 60000000\r\n\r\n")
        answer = read_answer(conn, timeout=5)
    assert answer.startswith(b"HTTP/1.1 413") and b"Payload too large" in answer


def test_a_chunked_body_is_cut_off_as_soon_as_it_passes_the_limit(gateway, upstream, echo, echo_only):
    before = len(upstream.requests())
    with socket.create_connection(("127.0.0.1", gateway.port)) as conn:
        conn.sendall(b"POST /mcp/" + echo.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + echo_only.encode() + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"x" * 65536
        sent = 0
        while sent < 12 * 2**20 and not select.select([conn], [], [], 0)[0]:  # until the answer comes
            conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
        answer = read_answer(conn, timeout=5)
    assert answer.startswith(b"HTTP/1.1 413")
    # Answered while the body was still coming (socket buffers let the client write a few MiB
    # more before the answer is seen), not at mitmproxy's 64 MiB memory cap.
    assert sent < 12 * 2**20, "the gateway read on past its limit"
    assert received(upstream, before) == []


def test_a_body_that_does_not_arrive_in_time_closes_the_connection(gateway, upstream, echo, echo_only):
    before = len(upstream.requests())
    with socket.create_connection(("127.0.0.1", gateway.port)) as conn:
        conn.sendall(b"POST /mcp/" + echo.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + echo_only.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        started = time.monotonic()
        conn.settimeout(READ_TIMEOUT + 5)
        try:
            rest = conn.recv(1024)
        except ConnectionResetError:
            rest = b""
        assert rest == b"", "the connection stays open"
        assert READ_TIMEOUT - 0.5 < time.monotonic() - started < READ_TIMEOUT + 3
    assert received(upstream, before) == []
    assert "did not arrive within" in gateway.log()


# -- item 16: deep nesting --------------------------------------------------------------------

def test_deeply_nested_json_is_a_parse_error_logged_in_one_line(gateway, echo, echo_only):
    for nested in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 20_000 + b"1" + b"}" * 20_000):
        response = post(gateway, echo, echo_only, None, content=nested)
        assert response.status_code == 400 and response.json()["error"]["code"] == -32700
        assert "Traceback" not in response.text
    log = gateway.log()
    assert "RecursionError" not in log and "Traceback" not in log
    assert log.count("nested too deeply") >= 2
    body = rpc("tools/call", {"name": "echo", "arguments": {"text": "still serving"}})
    assert "still serving" in post(gateway, echo, echo_only, body).text


# -- item 17: the listing filter fails closed -------------------------------------------------

def listed_names(response: httpx2.Response) -> list[str]:
    text = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        messages = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]
        flat = [m for item in messages for m in (item if isinstance(item, list) else [item])]
    else:
        parsed = json.loads(text)
        flat = parsed if isinstance(parsed, list) else [parsed]
    return [t["name"] for m in flat for t in m.get("result", {}).get("tools", [])]


@pytest.fixture(scope="module")
def scripted_connections(gateway, scripted):
    made = {}

    def connection(scenario: str) -> str:
        if scenario not in made:
            made[scenario] = gateway.add_connection(f"scripted-{len(made)}", scripted.url_for(scenario))
        return made[scenario]

    return connection


@pytest.mark.parametrize("content_type", ["Application/JSON", "APPLICATION/JSON; charset=UTF-8", "none", "text/plain"])
def test_a_listing_is_filtered_whatever_its_content_type_says(gateway, scripted_connections, echo_only, content_type):
    conn = scripted_connections(f"json-type:{content_type}")
    response = wait_for(lambda: (r := post(gateway, conn, echo_only, rpc("tools/list"))).status_code != 404 and r,
                        timeout=3)
    assert response.status_code == 200
    assert listed_names(response) == ["echo"]
    assert b"delete_everything" not in response.content


def test_a_listing_inside_a_json_array_in_an_event_is_filtered(gateway, scripted_connections, echo_only):
    conn = scripted_connections("sse-array")
    response = wait_for(lambda: (r := post(gateway, conn, echo_only, rpc("tools/list"))).status_code != 404 and r,
                        timeout=3)
    assert listed_names(response) == ["echo"] and b"delete_everything" not in response.content


@pytest.mark.parametrize("scenario", ["json-deep", "json-gzip", "sse-gzip"])
def test_an_answer_the_gateway_cannot_check_is_withheld(gateway, scripted_connections, echo_only, scenario):
    conn = scripted_connections(scenario)
    response = wait_for(lambda: (r := post(gateway, conn, echo_only, rpc("tools/list", request_id=77))).status_code
                        != 404 and r, timeout=3)
    assert response.status_code == 502
    answer = response.json()
    assert answer["id"] == 77 and answer["error"]["code"] == -32603 and "withheld" in answer["error"]["message"]
    assert b"delete_everything" not in response.content


def test_an_event_the_stream_never_finishes_is_not_passed_on(gateway, scripted_connections, echo_only):
    conn = scripted_connections("sse-unterminated")
    response = wait_for(lambda: (r := post(gateway, conn, echo_only, rpc("tools/list"))).status_code != 404 and r,
                        timeout=3)
    assert b"delete_everything" not in response.content and b"add" not in response.content


def test_a_listing_replayed_on_a_get_stream_is_filtered_by_its_shape(gateway, scripted_connections, echo_only):
    conn = scripted_connections("replay")
    wait_until_known(gateway, conn, echo_only)
    response = httpx2.get(gateway.mcp_url(conn), timeout=10, headers={
        "Authorization": f"Bearer {echo_only}", "Accept": "text/event-stream", "Last-Event-ID": "40"})
    assert response.status_code == 200
    assert listed_names(response) == ["echo"] and b"delete_everything" not in response.content


def test_two_listings_in_a_batch_may_not_share_an_id(gateway, upstream, echo, echo_only):
    before = len(upstream.requests())
    batch = [{"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}]
    response = post(gateway, echo, echo_only, None, {"MCP-Protocol-Version": "2025-03-26"},
                    content=json.dumps(batch).encode())
    assert response.status_code == 400 and response.json()["error"]["code"] == -32600
    assert received(upstream, before) == []


# -- item 15: an event that never ends --------------------------------------------------------

def test_an_event_that_never_ends_is_cut_off_without_stalling_the_gateway(gateway, scripted_connections, echo_only):
    conn = scripted_connections("sse-endless-event:20")  # 20 MiB, past the 16 MiB an event may hold
    wait_until_known(gateway, conn, echo_only)
    pid = gateway.plane_pid("data plane")
    cpu_before = cpu_seconds(pid)
    slowest = []

    def watch_health():
        while not done.is_set():
            started = time.monotonic()
            httpx2.get(gateway.base + "/health", timeout=10)
            slowest.append(time.monotonic() - started)
            time.sleep(0.05)

    done = threading.Event()
    watcher = threading.Thread(target=watch_health)
    watcher.start()
    try:
        body = rpc("tools/call", {"name": "echo", "arguments": {}}, request_id=99)
        with httpx2.stream("POST", gateway.mcp_url(conn), json=body, headers=mcp_headers(body, echo_only),
                           timeout=30) as response:
            received_bytes = b"".join(response.iter_bytes())
    finally:
        done.set()
        watcher.join()
    events = [json.loads(line[5:]) for line in received_bytes.decode().splitlines() if line.startswith("data:")]
    assert events == [{"jsonrpc": "2.0", "id": 99, "error": {
        "code": -32603, "message": events[0]["error"]["message"]}}]
    assert "cut off" in events[0]["error"]["message"]
    assert len(received_bytes) < 4096, "the unfinished event must not reach the client"
    # Each byte is scanned once: 16 MiB cost the event loop well under a second (the review saw
    # 1.5 s of event-loop time for 4 MiB), and /health kept answering meanwhile.
    assert cpu_seconds(pid) - cpu_before < 5
    assert max(slowest) < 1.0, f"/health stalled {max(slowest):.2f}s"


# -- item 18: tasks ----------------------------------------------------------------------------

TASK_METHODS = [("tasks/get", {"taskId": "another-keys-task"}), ("tasks/result", {"taskId": "another-keys-task"}),
                ("tasks/cancel", {"taskId": "another-keys-task"}), ("tasks/list", {})]
TASK_CALL = ("tools/call", {"name": "echo", "arguments": {"text": "later"}, "task": {"ttl": 60000}})


@pytest.mark.parametrize("method, params", [*TASK_METHODS, TASK_CALL])
def test_tasks_are_refused_and_never_reach_the_upstream(gateway, upstream, echo, echo_only, method, params):
    """In a 2025-11-25 session, where tasks are part of the protocol."""
    before = len(upstream.requests())
    body = {"jsonrpc": "2.0", "id": 18, "method": method, "params": params}
    response = post(gateway, echo, echo_only, body, {"MCP-Protocol-Version": "2025-11-25"})
    answer = response.json()
    assert answer["id"] == 18 and answer["error"]["code"] == -32003
    assert "tasks are not available through the gateway" in answer["error"]["message"]
    assert received(upstream, before) == []


@pytest.mark.parametrize("method, params", [*TASK_METHODS, TASK_CALL])
def test_in_2026_task_methods_are_not_found_and_a_task_request_is_refused(gateway, upstream, echo, echo_only, method,
                                                                           params):
    """2026-07-28 has no tasks/* methods (the gateway does not offer the tasks extension either)."""
    before = len(upstream.requests())
    response = post(gateway, echo, echo_only, rpc(method, params, request_id=18))
    answer = response.json()
    if method.startswith("tasks/"):
        assert (response.status_code, answer["id"], answer["error"]["code"]) == (404, 18, -32601)
    else:
        assert answer["id"] == 18 and answer["error"]["code"] == -32003
        assert "tasks are not available through the gateway" in answer["error"]["message"]
    assert received(upstream, before) == []
