"""The chain runner: members' hooks in order, lifecycle forwarded, and a member that fails while a
request is decided stops the request here (fail closed) instead of letting it through half-checked."""

from __future__ import annotations

import json

import pytest
from mitmproxy.test import taddons, tflow

from dataplane_addon.chain import AddonChain, build_chain
from dataplane_addon.routing import Router


class Noting:
    def __init__(self, name, seen):
        self.name, self.seen = name, seen

    def load(self, loader):
        self.seen.append((self.name, "load"))

    def request(self, flow):
        self.seen.append((self.name, "request"))


class Broken:
    def request(self, flow):
        raise KeyError("a bug")


def test_members_run_in_order_and_see_the_lifecycle():
    seen = []
    chain = AddonChain([Noting("a", seen), Noting("b", seen)])
    with taddons.context(chain):
        chain.request(tflow.tflow())
    assert seen == [("a", "load"), ("b", "load"), ("a", "request"), ("b", "request")]


def test_a_failing_member_fails_the_request_closed_and_later_members_do_not_run():
    seen = []
    chain = AddonChain([Broken(), Noting("after", seen)])
    flow = tflow.tflow()
    with taddons.context(chain):
        chain.request(flow)
    assert flow.response.status_code == 500
    answer = json.loads(flow.response.content)
    assert answer["error"]["code"] == -32603 and "Traceback" not in flow.response.text
    assert ("after", "request") not in seen


def test_asynchronous_member_hooks_are_refused_at_build_time():
    class Async:
        async def request(self, flow):
            pass

    with pytest.raises(TypeError, match="synchronous"):
        AddonChain([Async()])


def test_the_gateway_chain_is_one_addon_holding_each_concern():
    chain = build_chain()
    assert isinstance(chain, AddonChain) and not hasattr(chain, "addons")
    assert isinstance(chain.member(Router), Router)
    assert len(chain.members) >= 10


class BrokenOnAnswers:
    def response(self, flow):
        raise ValueError("a bug while checking an answer")


def test_a_member_failing_on_an_answer_replaces_it_with_a_json_rpc_error():
    from dataplane_addon.call import CALL, McpCall
    from shared.jsonrpc import parse_body

    chain = AddonChain([BrokenOnAnswers()])
    flow = tflow.tflow(resp=True)
    flow.metadata[CALL] = McpCall("conn_1", messages=parse_body(b'{"jsonrpc":"2.0","id":4,"method":"tools/list"}').messages)
    flow.response.content = b'{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"secret"}]}}'
    with taddons.context(chain):
        chain.response(flow)
    answer = json.loads(flow.response.content)
    assert flow.response.status_code == 502 and answer["id"] == 4 and answer["error"]["code"] == -32603
    assert b"secret" not in flow.response.content
