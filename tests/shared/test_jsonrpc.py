from __future__ import annotations

import json

import pytest

from shared.jsonrpc import INVALID_REQUEST, PARSE_ERROR, JsonRpcError, error_body, parse_body


def test_a_request_a_notification_and_a_response_are_told_apart():
    request, = parse_body(b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo"}}')
    assert (request.kind, request.id, request.method, request.params) == ("request", 3, "tools/call", {"name": "echo"})
    note, = parse_body(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
    assert note.kind == "notification" and note.id is None
    answer, = parse_body(b'{"jsonrpc":"2.0","id":"s-1","result":{}}')
    assert answer.kind == "response" and answer.method is None


def test_a_batch_yields_each_message():
    messages = parse_body(json.dumps([{"jsonrpc": "2.0", "id": i, "method": "ping"} for i in range(3)]).encode())
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
