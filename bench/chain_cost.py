"""The gateway's own cost per call, measured without the network: the addon chain run on synthetic
flows (``mitmproxy.test.tflow``) over a ``SnapshotStore`` holding the very snapshots the run
published, so the look-ups have a realistic size.

- token verification: what the data plane does per call to authenticate (SHA-256 of the key,
  one dict look-up), and the whole ``Authenticator.request`` hook;
- per addon: each hook called directly, so the table says where the chain's time goes;
- policy decision: the caller's compiled policy deciding one ``tools/call`` (``Policy.allows``);
- the chain through mitmproxy's own dispatch (``AddonManager.handle_lifecycle``, as the proxy
  calls it for the four HTTP hooks of a call), minus the same lean master without the chain;
- for comparison only, the chain's members added to mitmproxy one by one, as separate addons:
  what the chain cost before it became one ``AddonChain`` (mitmproxy dispatches every event to
  every addon it holds).

Each figure is the best of a few repeats: on a shared machine the minimum is the least noisy
estimate of a fixed cost.
"""

from __future__ import annotations

import asyncio
import json
import time
import timeit

import redis
from mitmproxy import http, options
from mitmproxy.addons import core, dns_resolver, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master
from mitmproxy.proxy.layers.http import (
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHeadersHook,
    HttpResponseHook,
)
from mitmproxy.test import taddons, tflow, tutils

from bench.mcp_request import echo_body, echo_headers
from dataplane_addon.chain import build_chain
from dataplane_addon.snapshot_store import SnapshotStore
from shared.apikeys import hash_key
from shared.bus import BusKeys
from shared.envelope import Keyring
from shared.snapshot_mac import open_snapshot

REPEATS = 3
HTTP_HOOKS = ("requestheaders", "request", "responseheaders", "response")  # in the order of one call
RESPONSE_BODY = json.dumps(
    {"jsonrpc": "2.0", "id": 1, "result": {"content": [{"type": "text", "text": "hello"}]}}).encode()


def load_store(redis_url: str, prefix: str, keyring: Keyring) -> SnapshotStore:
    """The snapshots the run published, read as the data plane reads them (MAC checked)."""
    store = SnapshotStore()
    client = redis.Redis.from_url(redis_url)
    try:
        for org_id, raw in client.hgetall(BusKeys(prefix).snapshots).items():
            store.apply(open_snapshot(org_id.decode(), raw, keyring))
    finally:
        client.close()
    return store


def make_flows(count: int, connection_id: str, api_key: str) -> list[http.HTTPFlow]:
    body = echo_body()
    headers = http.Headers(**{k.replace("-", "_"): v for k, v in echo_headers(api_key).items()},
                           content_length=str(len(body)))
    return [
        tflow.tflow(req=tutils.treq(method=b"POST", host="127.0.0.1", port=3000, path=f"/mcp/{connection_id}".encode(),
                                    headers=headers.copy(), content=body))
        for _ in range(count)
    ]


def make_response() -> http.Response:
    return tutils.tresp(headers=http.Headers(content_type="application/json", content_length=str(len(RESPONSE_BODY))),
                        content=RESPONSE_BODY)


def token_verification_ns(store: SnapshotStore, api_key: str, number: int = 10000) -> dict[str, float]:
    def best(statement) -> float:
        return min(timeit.repeat(statement, number=number, repeat=REPEATS)) / number * 1e9

    return {
        "sha256_and_lookup_ns": best(lambda: store.principal(hash_key(api_key))),
        "sha256_ns": best(lambda: hash_key(api_key)),
    }


def per_addon_us(store: SnapshotStore, connection_id: str, api_key: str, count: int = 500) -> dict[str, float]:
    """Each addon's hooks called directly, in chain order, on fresh flows: µs per call. Inside a
    test context that holds the chain's options, on an event loop, as mitmproxy runs them."""
    chain = build_chain(store)
    with taddons.context(chain):
        return asyncio.run(_per_addon_us(chain.members, connection_id, api_key, count))


async def _per_addon_us(chain: list, connection_id: str, api_key: str, count: int) -> dict[str, float]:
    best: dict[str, float] = {}
    for _ in range(REPEATS):
        flows = make_flows(count, connection_id, api_key)
        spent: dict[str, float] = {}
        for phase in HTTP_HOOKS:
            for addon in chain:
                hook = getattr(addon, phase, None)
                if hook is None:
                    continue
                name = type(addon).__name__
                started = time.perf_counter()
                for flow in flows:
                    hook(flow)
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - started
            if phase == "request":
                for flow in flows:
                    if flow.response is not None:
                        raise RuntimeError(f"the chain answered the benchmark call itself: {flow.response.status_code}")
                    flow.response = make_response()
        for name, seconds in spent.items():
            best[name] = min(best.get(name, float("inf")), seconds / count * 1e6)
    return best


def lean_master(chain: list) -> Master:
    master = Master(options.Options(), with_termlog=False)
    master.addons.add(core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(), tlsconfig.TlsConfig(),
                      dns_resolver.DnsResolver())
    if chain:
        master.addons.add(*chain)
    # Only the CA store from the ``running`` phase, which the lean addons' request hooks read; the
    # rest of ``running`` would start the Redis follower and the listening servers.
    master.addons.get("tlsconfig").running()
    return master


async def dispatch_us(chain: list, connection_id: str, api_key: str, count: int = 500) -> float:
    """µs per call for the four HTTP hooks through mitmproxy's dispatch, best of ``REPEATS``."""
    master = lean_master(chain)
    best = float("inf")
    for _ in range(REPEATS):
        flows = make_flows(count, connection_id, api_key)
        responses = [make_response() for _ in flows]
        started = time.perf_counter()
        for flow, response in zip(flows, responses):
            await master.addons.handle_lifecycle(HttpRequestHeadersHook(flow))
            await master.addons.handle_lifecycle(HttpRequestHook(flow))
            flow.response = response
            await master.addons.handle_lifecycle(HttpResponseHeadersHook(flow))
            await master.addons.handle_lifecycle(HttpResponseHook(flow))
        best = min(best, (time.perf_counter() - started) / count * 1e6)
    await master.done()  # detaches its log handler from this event loop
    return best


def measure_chain_cost(redis_url: str, prefix: str, keyring: Keyring, connection_id: str, api_key: str) -> dict:
    store = load_store(redis_url, prefix, keyring)
    lean = asyncio.run(dispatch_us([], connection_id, api_key))
    gateway = asyncio.run(dispatch_us([build_chain(store)], connection_id, api_key))
    separate = asyncio.run(dispatch_us(build_chain(store).members, connection_id, api_key))
    return {
        "store": store.stats(),
        "token_verification": token_verification_ns(store, api_key),
        "policy_decision_ns": policy_decision_ns(store, connection_id, api_key),
        "per_addon_us": per_addon_us(store, connection_id, api_key),
        "dispatch_lean_us": lean,
        "dispatch_gateway_us": gateway,
        "chain_us": gateway - lean,
        "dispatch_separate_addons_us": separate,
        "separate_addons_chain_us": separate - lean,
    }


def policy_decision_ns(store: SnapshotStore, connection_id: str, api_key: str, number: int = 20000) -> float:
    """The caller's policy deciding one tools/call, as ``ToolAuthorizer`` asks it."""
    policy = store.principal(hash_key(api_key)).policy
    return min(timeit.repeat(lambda: policy.allows("tools", connection_id, "echo"), number=number,
                             repeat=REPEATS)) / number * 1e9
