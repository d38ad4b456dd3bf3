"""The policy evaluator under attack, through the real data plane (issue #10, items 5 and 6):

- a key scoped with a wildcard pattern built to make backtracking matchers blow up is answered at
  once, and the data plane keeps answering everyone else meanwhile;
- a key allowed ``file:///docs/*`` cannot read, subscribe to or complete anything outside it by
  walking out with dot segments in any spelling: each such request is refused with the JSON-RPC
  forbidden error, and the upstream's request log shows none of them arrived.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time

import httpx2
import pytest

from tests.support import MESH, ROOT, mcp_headers, rpc, wait_for

pytestmark = [pytest.mark.e2e]

FORBIDDEN = -32003
PROMPT = 1.0  # seconds: a bound on denial of service, not a performance figure (the review saw 3.8 s and 20 s)


@pytest.fixture(scope="module")
def connection_id(gateway, upstream):
    return gateway.add_connection("echo", upstream.url)


def post(gateway, connection_id, key, body, with_routing_headers=True, timeout=10.0, version=None):
    headers = mcp_headers(body if with_routing_headers else None, key)
    if version is not None:
        headers["MCP-Protocol-Version"] = version
    return httpx2.post(gateway.mcp_url(connection_id), json=body, headers=headers, timeout=timeout)


def live(gateway, connection_id, key, body) -> None:
    """Wait until the data plane knows the new key (it follows changes within a second)."""
    wait_for(lambda: post(gateway, connection_id, key, body).status_code != 401, timeout=5, what="the key to be live")


# -- item 5: wildcard patterns cannot stall the event loop ------------------------------------------

REVIEWS_PATTERN = "*a*a*a*a*a*a*b"  # 7 wildcards: 3.8 s per call against "a" * 72
MOST_WILDCARDS = "*a*a*a*a*a*a*a*b"  # 8, the most a pattern may have


def test_a_pattern_with_more_wildcards_than_allowed_is_refused_when_the_key_is_created(gateway):
    too_many = "*a" * 9 + "*b"  # 10 wildcards: over 20 s on a 40-character name
    result = subprocess.run([MESH, "keys", "create", "--name", "too-many", "--json",
                             "--scope", json.dumps({"tools": {"*": [too_many]}})],
                            env=gateway.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"invalid scope: tools.*: {too_many!r} has 10 wildcards; a pattern may have at most 8" in output
    assert "Traceback" not in output


def test_an_adversarial_wildcard_scope_is_answered_at_once_while_health_keeps_answering(gateway, connection_id):
    key = gateway.create_key("redos", "--scope", json.dumps({"tools": {"*": [REVIEWS_PATTERN, MOST_WILDCARDS]}}))
    live(gateway, connection_id, key, rpc("tools/call", {"name": "a", "arguments": {}}))

    health_seconds: list[float] = []
    calls_done = threading.Event()

    def probe_health():
        with httpx2.Client(timeout=10) as client:
            while not calls_done.is_set():
                started = time.monotonic()
                assert client.get(gateway.base + "/health").status_code == 200
                health_seconds.append(time.monotonic() - started)
                time.sleep(0.01)

    prober = threading.Thread(target=probe_health, daemon=True)
    prober.start()
    answers = []
    try:
        # 72 a's as in the review; 256, the longest tool name; 257 and far longer, over the cap.
        for length in (72, 72, 128, 256, 257, 100_000):
            body = rpc("tools/call", {"name": "a" * length, "arguments": {}}, request_id=length)
            started = time.monotonic()
            response = post(gateway, connection_id, key, body, with_routing_headers=length <= 256, timeout=5)
            answers.append((length, time.monotonic() - started, response.json()))
    finally:
        calls_done.set()
        prober.join(10)
    for length, seconds, answer in answers:
        assert answer["error"]["code"] == FORBIDDEN, (length, answer)
        assert seconds < PROMPT, f"a call naming a tool of {length} characters took {seconds:.2f} s"
    assert "limited to 256 characters" in answers[-1][2]["error"]["message"]
    assert health_seconds and max(health_seconds) < PROMPT, f"/health took up to {max(health_seconds):.2f} s"


def test_the_adversarial_scope_still_allows_what_it_matches(gateway, connection_id, upstream):
    key = gateway.create_key("redos-match", "--scope", json.dumps({"tools": {"*": [MOST_WILDCARDS]}}))
    name = "a" * 70 + "b"  # matches: allowed through, and the upstream (which has no such tool) answers
    body = rpc("tools/call", {"name": name, "arguments": {}})
    live(gateway, connection_id, key, body)
    answer = post(gateway, connection_id, key, body)
    assert str(FORBIDDEN) not in answer.text and any(name in r["body"] for r in upstream.requests())


# -- item 6: resource patterns cannot be walked out of ----------------------------------------------

DOCS_SCOPE = {"resources": {"*": ["file:///docs/*"]}}
TRAVERSALS = [
    ("resources/read", {"uri": "file:///docs/../etc/passwd"}),
    ("resources/read", {"uri": "file:///docs/%2e%2e/etc/passwd"}),
    ("resources/read", {"uri": "file:///docs/%2E%2E/etc/passwd"}),
    ("resources/read", {"uri": "file:///docs/..%2fetc/passwd"}),
    ("resources/read", {"uri": "file:///docs/.%2E/private/plan"}),
    ("resources/read", {"uri": "file:///docs/%252e%252e/private/plan"}),
    ("resources/read", {"uri": "FILE:///docs/.."}),
    ("resources/read", {"uri": "file:///docs/..\\private\\plan"}),
    ("resources/read", {"uri": "file:///docs/..;/private/plan"}),
    ("resources/read", {"uri": "file:///docs//private/plan"}),
    ("resources/read", {"uri": "file:///docs/readme?path=../../etc/passwd"}),
    ("resources/read", {"uri": "file:///docs/readme#/../../private/plan"}),
    ("resources/read", {"uri": "file:///docs/\uff0e\uff0e/private/plan"}),
    ("resources/read", {"uri": "file:///docs/readme\r\n/../x"}),
    ("resources/subscribe", {"uri": "file:///docs/../private/plan"}),
    ("resources/unsubscribe", {"uri": "file:///docs/%2e%2e/private/plan"}),
    ("completion/complete", {"ref": {"type": "ref/resource", "uri": "file:///docs/../{name}"},
                             "argument": {"name": "name", "value": "p"}}),
]
# Methods of the 2025 versions only (2026-07-28 removed them; test_transport has their answer there).
SUBSCRIPTIONS = ("resources/subscribe", "resources/unsubscribe")


def uris_that_reached(upstream) -> set[str]:
    seen = set()
    for request in upstream.requests():
        try:
            body = json.loads(request["body"] or "null")
        except ValueError:
            continue
        for message in body if isinstance(body, list) else [body]:
            params = message.get("params") if isinstance(message, dict) else None
            if isinstance(params, dict):
                ref = params.get("ref")
                uri = params.get("uri") or (ref.get("uri") if isinstance(ref, dict) else None)
                if uri:
                    seen.add(uri)
    return seen


@pytest.fixture(scope="module")
def docs_key(gateway, connection_id):
    key = gateway.create_key("docs-reader", "--scope", json.dumps(DOCS_SCOPE))
    live(gateway, connection_id, key, rpc("resources/read", {"uri": "file:///docs/readme"}))
    return key


def test_a_docs_key_reads_its_docs(gateway, connection_id, docs_key):
    body = rpc("resources/read", {"uri": "file:///docs/readme"})
    assert "the docs' readme" in post(gateway, connection_id, docs_key, body).text
    listing = post(gateway, connection_id, docs_key, rpc("resources/list")).text
    assert "file:///docs/readme" in listing and "file:///private/plan" not in listing


@pytest.mark.parametrize("method, params", TRAVERSALS)
def test_no_spelling_of_dot_segments_gets_a_docs_key_outside_docs(gateway, connection_id, upstream, docs_key, method,
                                                                   params):
    uri = params.get("uri") or params["ref"]["uri"]
    body = rpc(method, params, request_id=7)
    version = None
    if method in SUBSCRIPTIONS:  # 2026-07-28 has no such method: sent as in a 2025-11-25 session
        body, version = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}, "2025-11-25"
    # Mcp-Name carries the URI as it is only when it is printable ASCII; otherwise send the body alone,
    # as a client of an older protocol generation does.
    response = post(gateway, connection_id, docs_key, body, with_routing_headers=uri.isascii() and uri.isprintable(),
                    version=version)
    answer = response.json()
    assert answer["id"] == 7 and answer["error"]["code"] == FORBIDDEN, answer
    assert "is refused" in answer["error"]["message"]
    assert uri not in uris_that_reached(upstream), "the upstream received the refused URI"
    assert "file:///docs/readme" in uris_that_reached(upstream), "the upstream's request log is not being read"
