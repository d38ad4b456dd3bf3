from __future__ import annotations

import json

import pytest

from shared.jsonrpc import INVALID_REQUEST, PARSE_ERROR, JsonRpcError, error_body, parse_body


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
