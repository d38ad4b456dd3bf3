from __future__ import annotations

import json

import pytest

from shared.jsonrpc import (
    INVALID_REQUEST,
    PARSE_ERROR,
    JsonRpcError,
    error_body,
    error_status,
    method_not_found,
    parse_body,
)


def test_a_request_a_notification_and_a_response_are_told_apart():
    request, = parse_body(b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo"}}').messages
    assert (request.kind, request.id, request.method, request.params) == ("request", 3, "tools/call", {"name": "echo"})
    note, = parse_body(b'{"jsonrpc":"2.0","method":"notifications/initialized"}').messages
    assert note.kind == "notification" and note.id is None
    answer, = parse_body(b'{"jsonrpc":"2.0","id":"s-1","result":{}}').messages
    assert answer.kind == "response" and answer.method is None


def test_a_batch_yields_each_message():
    messages = parse_body(json.dumps([{"jsonrpc": "2.0", "id": i, "method": "ping"} for i in range(3)]).encode()).messages
    assert [m.id for m in messages] == [0, 1, 2]


@pytest.mark.parametrize("body", [b"", b"nope", b"{", b"\xff\xfe\x00", b"[1,"])
def test_bytes_that_are_not_json_are_a_parse_error(body):
    with pytest.raises(JsonRpcError) as caught:
        parse_body(body)
    assert caught.value.code == PARSE_ERROR


@pytest.mark.parametrize("body", [
    b"42", b"[]", b'{"id":1,"method":"x"}', b'{"jsonrpc":"1.0","id":1,"method":"x"}',
    b'{"jsonrpc":"2.0","id":1,"method":7}', b'{"jsonrpc":"2.0","id":{},"method":"x"}',
    b'{"jsonrpc":"2.0","id":true,"method":"x"}', b'{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}',
    b'{"jsonrpc":"2.0","id":1}', b'[{"jsonrpc":"2.0","id":1,"method":"ok"}, 5]',
])
def test_json_that_is_not_json_rpc_is_an_invalid_request(body):
    with pytest.raises(JsonRpcError) as caught:
        parse_body(body)
    assert caught.value.code == INVALID_REQUEST


def test_an_invalid_request_keeps_the_id_when_it_can():
    with pytest.raises(JsonRpcError) as caught:
        parse_body(b'{"jsonrpc":"2.0","id":9,"method":""}')
    assert caught.value.request_id == 9


def test_error_bodies_are_json_rpc():
    assert json.loads(error_body(-32700, "Parse error", None)) == {
        "jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "Parse error"}}


@pytest.mark.parametrize("body", [
    b'{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}',
    b'{"jsonrpc":"2.0","id":1,"method":"ping","Method":"tools/call"}',
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","NAME":"add"}}',
    '{"jsonrpc":"2.0","id":1,"method":"x","params":{"params":1,"paramſ":2}}'.encode(),  # ſ folds to s
    '{"jsonrpc":"2.0","id":1,"method":"x","params":{"k":1,"\u212a":2}}'.encode(),  # the Kelvin sign folds to k
    b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{"a":1,"a":2}}}',
])
def test_duplicate_and_case_colliding_keys_are_refused_anywhere_in_the_message(body):
    with pytest.raises(JsonRpcError) as caught:
        parse_body(body)
    assert caught.value.code == INVALID_REQUEST


@pytest.mark.parametrize("body", [
    b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":NaN}}',
    b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":-Infinity}}',
    b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":1e400}}',
    b'{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":"\\ud800"}}',
    b'\xef\xbb\xbf{"jsonrpc":"2.0","id":1,"method":"x"}',
    '{"jsonrpc":"2.0","id":1,"method":"x"}'.encode("utf-16"),
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
])
def test_json_that_decoders_read_differently_is_a_parse_error(body):
    with pytest.raises(JsonRpcError) as caught:
        parse_body(body)
    assert caught.value.code == PARSE_ERROR


def test_two_requests_of_a_batch_may_not_share_an_id():
    same = [{"jsonrpc": "2.0", "id": 7, "method": "tools/list"}, {"jsonrpc": "2.0", "id": 7, "method": "prompts/list"}]
    with pytest.raises(JsonRpcError) as caught:
        parse_body(json.dumps(same).encode())
    assert caught.value.code == INVALID_REQUEST
    distinct = [{"jsonrpc": "2.0", "id": 7, "method": "tools/list"}, {"jsonrpc": "2.0", "id": "7", "method": "ping"}]
    assert len(parse_body(json.dumps(distinct).encode()).messages) == 2


def test_the_canonical_body_is_compact_utf8_json_of_exactly_what_was_parsed():
    sent = '{ "jsonrpc" : "2.0", "id" : 1, "method" : "tools/call", "params" : {"name": "\\u00e9cho", "x": 1.50}}'
    body = parse_body(sent.encode())
    assert body.canonical == '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"écho","x":1.5}}'.encode()
    assert json.loads(body.canonical) == body.messages[0].raw
    batch = parse_body(b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]')
    assert batch.canonical == b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]'


def request(method: str, version: str | None = None, **params) -> object:
    """One parsed request; ``version`` goes in params._meta, as 2026-07-28 clients send it."""
    if version is not None:
        params["_meta"] = {"io.modelcontextprotocol/protocolVersion": version,
                           "io.modelcontextprotocol/clientCapabilities": {}}
    message, = parse_body(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()).messages
    return message


REMOVED_IN_2026 = ["initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"]


@pytest.mark.parametrize("method", [*REMOVED_IN_2026, "unknown/method", "tasks/list", "tasks/get", "Tools/Call"])
def test_a_2026_request_for_a_method_that_version_lacks_is_method_not_found(method):
    reason = method_not_found(request(method, uri="file:///docs/readme"), "2026-07-28")
    assert reason == f"Method not found: {method!r} is not a method of MCP 2026-07-28"


def test_without_the_version_header_the_version_in_meta_decides():
    assert method_not_found(request("resources/subscribe", "2026-07-28"), None) is not None
    assert method_not_found(request("resources/subscribe", "2025-11-25"), None) is None
    assert method_not_found(request("resources/subscribe"), None) is None
    # the header wins, as the SDK's servers route on it
    assert method_not_found(request("resources/subscribe", "2026-07-28"), "2025-11-25") is None


@pytest.mark.parametrize("method", ["tools/call", "tools/list", "prompts/get", "prompts/list", "resources/read",
                                    "resources/list", "resources/templates/list", "completion/complete",
                                    "server/discover", "subscriptions/listen"])
def test_the_methods_of_2026_are_left_to_the_policy(method):
    assert method_not_found(request(method, "2026-07-28"), "2026-07-28") is None


@pytest.mark.parametrize("version", ["2025-11-25", "2025-06-18", "2025-03-26", None, "v999.0.0"])
def test_other_versions_keep_their_answers(version):
    """The 2025 versions (and a version no SDK knows) leave unknown methods to the policy's -32003."""
    for method in [*REMOVED_IN_2026, "unknown/method"]:
        assert method_not_found(request(method), version) is None


def test_notifications_and_answers_are_never_method_not_found():
    note, answer = parse_body(b'[{"jsonrpc":"2.0","method":"notifications/whatever"},'
                              b'{"jsonrpc":"2.0","id":4,"result":{}}]').messages
    assert method_not_found(note, "2026-07-28") is None and method_not_found(answer, "2026-07-28") is None


def test_method_not_found_is_answered_404_and_the_gateways_refusals_200():
    assert error_status(-32601) == 404 and error_status(-32600) == 400
    assert error_status(-32003) == 200 and error_status(-32603) == 200
