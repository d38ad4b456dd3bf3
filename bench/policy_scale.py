"""Policy decision cost and snapshot memory at realistic and 10x sizes.

Builds one org's snapshot with C connections, K API keys and R custom roles (each role: a few
exact tool names and wildcard patterns on some connections, plus tools on every connection),
installs it in the data plane's ``SnapshotStore`` the way a change message would, and measures:

- memory held by the installed snapshot (tracemalloc), and the time to install it (MAC check,
  parse, compile, swap);
- token verification per call: SHA-256 of the key and the principal look-up;
- policy decision per call: ``Policy.allows`` for random (key, connection, tool), allowed and
  denied alike.

The decision must not grow with keys or connections: the run at 10x sizes shows it.
Run alone: ``python -m bench.policy_scale``; ``bench`` includes it.
"""

from __future__ import annotations

import gc
import json
import random
import time
import tracemalloc

from dataplane_addon.snapshot_store import SnapshotStore
from shared import envelope
from shared.apikeys import generate_key, hash_key
from shared.envelope import Keyring
from shared.snapshot import ConnectionRoute, KeyGrant, Snapshot
from shared.snapshot_mac import open_snapshot, sign_snapshot

BASE = {"connections": 1_000, "api_keys": 10_000, "roles": 100}
ORG = "org_bench"
TOOL_WORDS = ["SEND", "LIST", "GET", "CREATE", "DELETE", "SEARCH", "UPDATE", "READ"]
OBJECTS = ["EMAIL", "THREAD", "FILE", "ISSUE", "EVENT", "CONTACT", "INVOICE", "TASK"]


def tool_names() -> list[str]:
    return [f"{w}_{o}" for w in TOOL_WORDS for o in OBJECTS]


def build_snapshot(connections: int, api_keys: int, roles: int, seed: int = 7) -> tuple[Snapshot, list[str]]:
    rng = random.Random(seed)
    conn_ids = [f"conn_{i:08x}" for i in range(connections)]
    names = tool_names()
    policies = {}
    for r in range(roles):
        tools = {"*": rng.sample(names, 3) + ["search"]}
        for conn in rng.sample(conn_ids, min(20, connections)):
            tools[conn] = rng.sample(names, 4) + [f"{rng.choice(TOOL_WORDS)}_*"]
        policies[f"role:role_{r}"] = [{"tools": tools, "prompts": {"*": ["*"]}, "resources": {}, "manage": []}]
    keys, grants = [], {}
    for k in range(api_keys):
        key, _ = generate_key()
        keys.append(key)
        grants[hash_key(key)] = KeyGrant(key_id=f"key_{k}", user_id=f"usr_{k % 2000}", policy=f"role:role_{k % roles}")
    routes = {c: ConnectionRoute(name=c, url=f"http://10.0.{i // 250}.{i % 250}:8080/mcp") for i, c in enumerate(conn_ids)}
    return Snapshot(org_id=ORG, version=1, connections=routes, api_keys=grants, policies=policies), keys


def _installed(stored: str, keyring: Keyring, store: SnapshotStore | None = None) -> tuple[SnapshotStore, float]:
    """Install as the data plane does: check the MAC, parse, compile, swap in."""
    store = store or SnapshotStore()
    started = time.perf_counter()
    store.apply(open_snapshot(ORG, stored, keyring))
    return store, time.perf_counter() - started


def measure(connections: int, api_keys: int, roles: int, decisions: int = 200_000) -> dict:
    snapshot, keys = build_snapshot(connections, api_keys, roles)
    keyring = Keyring.single(envelope.generate_key())  # the data-plane key snapshots are MAC'd under
    raw = sign_snapshot(snapshot, keyring)
    gc.collect()
    tracemalloc.start()
    measured, _ = _installed(raw, keyring)
    held, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del measured
    gc.collect()
    store, install_seconds = _installed(raw, keyring)

    # The next version adds one key: unchanged policies and upstreams are reused.
    key, _ = generate_key()
    grants = {**snapshot.api_keys, hash_key(key): KeyGrant(key_id="key_new", user_id="usr_new", policy="role:role_0")}
    bumped = Snapshot(org_id=snapshot.org_id, version=2, connections=snapshot.connections, api_keys=grants,
                      policies=snapshot.policies)
    _, change_seconds = _installed(sign_snapshot(bumped, keyring), keyring, store)

    rng = random.Random(11)
    conn_ids = list(snapshot.connections)
    names = tool_names() + ["search", "not_a_tool"]
    sample_keys = [rng.choice(keys) for _ in range(1000)]
    principals = [store.principal(hash_key(k)) for k in sample_keys]
    asks = [(rng.choice(principals), rng.choice(conn_ids), rng.choice(names)) for _ in range(decisions)]

    def verify_ns() -> float:
        started = time.perf_counter()
        for k in sample_keys * 20:
            store.principal(hash_key(k))
        return (time.perf_counter() - started) / (len(sample_keys) * 20) * 1e9

    def decide_ns() -> float:
        started = time.perf_counter()
        for principal, conn, name in asks:
            principal.policy.allows("tools", conn, name)
        return (time.perf_counter() - started) / decisions * 1e9

    allowed = sum(p.policy.allows("tools", c, n) for p, c, n in asks)
    return {
        "connections": connections, "api_keys": api_keys, "roles": roles,
        "snapshot_json_mb": round(len(raw) / 1e6, 2), "memory_mb": round(held / 1e6, 1),
        "install_ms": round(install_seconds * 1000, 1), "change_install_ms": round(change_seconds * 1000, 1),
        # best of three: the figure least disturbed by whatever else the machine is doing
        "token_verification_ns": round(min(verify_ns() for _ in range(3))),
        "policy_decision_ns": round(min(decide_ns() for _ in range(3))),
        "allowed_share": round(allowed / decisions, 3),
    }


# 1x: the realistic org; then 10x keys and connections with the same roles (the decision
# must not grow with them), then 10x everything.
SCALES = ((1, 1), (10, 1), (10, 10))


def run(scales=SCALES) -> list[dict]:
    return [measure(BASE["connections"] * s, BASE["api_keys"] * s, BASE["roles"] * r) for s, r in scales]


def table(rows: list[dict]) -> str:
    head = (f"{'connections':>11} {'keys':>7} {'roles':>5} {'snapshot MB':>11} {'memory MB':>9} {'install ms':>10} "
            f"{'+1 key ms':>9} {'verify ns':>9} {'decide ns':>9}")
    lines = [head] + [
        f"{r['connections']:>11} {r['api_keys']:>7} {r['roles']:>5} {r['snapshot_json_mb']:>11} {r['memory_mb']:>9} "
        f"{r['install_ms']:>10} {r['change_install_ms']:>9} {r['token_verification_ns']:>9} "
        f"{r['policy_decision_ns']:>9}" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    results = run()
    print(table(results))
    print(json.dumps(results))
