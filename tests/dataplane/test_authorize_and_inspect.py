"""The authorizer and the listing filter, driven as mitmproxy drives them, on test flows."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from mitmproxy.test import taddons, tflow, tutils

from dataplane_addon.authorize import FORBIDDEN, ToolAuthorizer
from dataplane_addon.call import CALL, McpCall
from dataplane_addon.inspect import ListingFilter
from dataplane_addon.parse import JsonRpcParser
from dataplane_addon.snapshot_store import Principal, Upstream
from shared.policy import Policy

UPSTREAM = Upstream("conn_1", "org_a", "mail", "http", "127.0.0.1", 9, "/mcp", "", ())


def flow_for(body, scope=({"tools": {"conn_1": ["echo", "list_*"]}},)):
    flow = tflow.tflow(req=tutils.treq(method=b"POST", path=b"/mcp/conn_1", content=json.dumps(body).encode()))
    flow.metadata[CALL] = McpCall("conn_1", principal=Principal("org_a", "key_1", "usr_1", None, Policy(scope)),
                                  upstream=UPSTREAM)
    with taddons.context():
        JsonRpcParser().request(flow)
        ToolAuthorizer().request(flow)
    return flow


def call(name, request_id=1):
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": name, "arguments": {}}}


def test_an_allowed_call_goes_on_and_a_denied_one_is_answered_here():
    assert flow_for(call("echo")).response is None
    denied = flow_for(call("delete_everything", 5))
    answer = json.loads(denied.response.content)
    assert answer["id"] == 5 and answer["error"]["code"] == FORBIDDEN
    assert "'delete_everything'" in answer["error"]["message"] and "conn_1" in answer["error"]["message"]


def test_notifications_pings_and_responses_pass():
    for body in ({"jsonrpc": "2.0", "method": "notifications/initialized"},
                 {"jsonrpc": "2.0", "id": 1, "method": "ping"},
                 {"jsonrpc": "2.0", "id": "srv-1", "result": {}}):
        assert flow_for(body).response is None


TOOLS = {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in ("echo", "add", "list_mail", "delete")]}


def listed(flow, content_type: str, body: bytes) -> bytes:
    flow.response = tutils.tresp(content=body, headers=[(b"Content-Type", content_type.encode())])
    with taddons.context():
        ListingFilter().response(flow)
    return flow.response.content


def test_json_listings_keep_only_allowed_tools():
    flow = flow_for({"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
    out = json.loads(listed(flow, "application/json", json.dumps({"jsonrpc": "2.0", "id": 3, "result": TOOLS}).encode()))
    assert [t["name"] for t in out["result"]["tools"]] == ["echo", "list_mail"]


def relay(flow, chunks: list[bytes]) -> bytes:
    from dataplane_addon.stream import EventRelay

    relay_ = EventRelay(flow, flow.metadata[CALL], 16 * 1024 * 1024)
    out = []
    for chunk in chunks:
        produced = relay_(chunk)
        assert isinstance(produced, list) and all(produced), "mid-stream answers are lists of non-empty chunks"
        out.extend(produced)
    out.extend(relay_(b""))
    return b"".join(out)


def sse_stream() -> bytes:
    message = json.dumps({"jsonrpc": "2.0", "id": 3, "result": TOOLS})
    progress = json.dumps({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}})
    return f": hello\r\nid: ev-1\r\nevent: message\r\ndata: {progress}\r\n\r\nid: ev-2\ndata: {message}\n\n".encode()


def test_event_stream_listings_are_filtered_exactly_like_json_and_keep_event_fields():
    flow = flow_for({"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
    out = relay(flow, [sse_stream()]).decode()
    assert ": hello\n" in out and "id: ev-1\n" in out and "event: message\n" in out and "id: ev-2\n" in out
    data = [json.loads(line[6:]) for line in out.splitlines() if line.startswith("data: ")]
    assert data[0]["method"] == "notifications/progress"
    assert [t["name"] for t in data[1]["result"]["tools"]] == ["echo", "list_mail"]
    as_json = json.loads(listed(flow_for({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}), "application/json",
                                json.dumps({"jsonrpc": "2.0", "id": 3, "result": TOOLS}).encode()))
    assert data[1] == as_json


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=len(sse_stream()) - 1), max_size=12, unique=True))
def test_events_split_across_chunks_anywhere_come_out_the_same(cuts):
    stream = sse_stream()
    bounds = [0, *sorted(cuts), len(stream)]
    chunks = [stream[a:b] for a, b in zip(bounds, bounds[1:])]
    whole = relay(flow_for({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}), [stream])
    assert relay(flow_for({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}), chunks) == whole


def test_an_event_is_passed_on_as_soon_as_it_is_complete():
    from dataplane_addon.stream import EventRelay

    flow = flow_for({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "echo"}})
    relay_ = EventRelay(flow, flow.metadata[CALL], 16 * 1024 * 1024)
    assert relay_(b"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"") == []
    first = relay_(b",\"params\":{}}\n\ndata: {\"partial")
    assert len(first) == 1 and b"notifications/progress" in first[0] and b"partial" not in first[0]


def test_answers_to_other_requests_are_left_as_they_are():
    flow = flow_for(call("echo", 4))
    body = json.dumps({"jsonrpc": "2.0", "id": 4, "result": {"tools": [{"name": "add"}]}}).encode()
    assert listed(flow, "application/json", body) == body
