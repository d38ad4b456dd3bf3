from __future__ import annotations

from dataplane_addon.snapshot_store import SnapshotStore
from shared.snapshot import ConnectionRoute, KeyGrant, Snapshot


def snap(version: int, org: str = "org_a", conns=("conn_1",), keys=("h1",), deleted=False) -> Snapshot:
    return Snapshot(
        org_id=org, version=version, deleted=deleted,
        connections={c: ConnectionRoute(name=c, url=f"https://up.example:8443/{c}?v=1") for c in conns},
        api_keys={k: KeyGrant(key_id=f"key_{k}", user_id="usr_1", policy="role:member") for k in keys},
        policies={"role:member": [{"tools": {"*": ["*"]}}]},
    )


def test_routes_and_principals_come_from_the_snapshot():
    store = SnapshotStore()
    assert store.apply(snap(1))
    upstream = store.upstream("conn_1")
    assert (upstream.org_id, upstream.scheme, upstream.host, upstream.port, upstream.path, upstream.query) == (
        "org_a", "https", "up.example", 8443, "/conn_1", "v=1")
    assert store.principal("h1").org_id == "org_a"


def test_older_or_equal_versions_are_ignored():
    store = SnapshotStore()
    store.apply(snap(5, conns=("conn_new",)))
    assert not store.apply(snap(4, conns=("conn_old",)))
    assert not store.apply(snap(5, conns=("conn_old",)))
    assert store.upstream("conn_old") is None and store.upstream("conn_new") is not None


def test_a_new_snapshot_replaces_the_orgs_entries_and_leaves_other_orgs_alone():
    store = SnapshotStore()
    store.apply(snap(1, conns=("conn_1", "conn_2"), keys=("h1", "h2")))
    store.apply(snap(1, org="org_b", conns=("conn_b",), keys=("hb",)))
    store.apply(snap(2, conns=("conn_2",), keys=("h2",)))
    assert store.upstream("conn_1") is None and store.principal("h1") is None
    assert store.upstream("conn_2") and store.principal("h2")
    assert store.upstream("conn_b").org_id == "org_b" and store.principal("hb").org_id == "org_b"


def test_a_tombstone_removes_the_org():
    store = SnapshotStore()
    store.apply(snap(1))
    assert store.apply(snap(2, deleted=True))
    assert store.upstream("conn_1") is None and store.principal("h1") is None
    assert store.stats() == {"orgs": 1, "connections": 0, "api_keys": 0}


def test_snapshots_survive_a_round_trip_through_json():
    original = snap(3, conns=("conn_1", "conn_2"), keys=("h1",))
    assert Snapshot.from_json(original.to_json()) == original


def test_a_key_whose_policy_is_missing_or_invalid_is_refused():
    store = SnapshotStore()
    store.apply(Snapshot(org_id="org_a", version=1, api_keys={
        "h_missing": KeyGrant(key_id="k1", user_id="u", policy="role:gone"),
        "h_invalid": KeyGrant(key_id="k2", user_id="u", policy="bad"),
        "h_ok": KeyGrant(key_id="k3", user_id="u", policy="ok"),
    }, policies={"bad": [{"tools": "not a mapping"}], "ok": [{"tools": {"conn_1": ["echo"]}}]}))
    assert store.principal("h_missing") is None and store.principal("h_invalid") is None
    assert store.principal("h_ok").policy.allows("tools", "conn_1", "echo")


def test_unchanged_policies_and_upstreams_are_reused_by_the_next_version():
    store = SnapshotStore()
    store.apply(snap(1, conns=("conn_1", "conn_2"), keys=("h1",)))
    policy, upstream = store.principal("h1").policy, store.upstream("conn_1")
    store.apply(snap(2, conns=("conn_1", "conn_2"), keys=("h1", "h2")))
    assert store.principal("h2").policy is policy and store.upstream("conn_1") is upstream
    changed = snap(3, conns=("conn_1",), keys=("h1",))
    changed.policies["role:member"] = [{"tools": {"*": ["echo"]}}]
    store.apply(changed)
    assert store.principal("h1").policy is not policy
    assert not store.principal("h1").policy.allows("tools", "conn_1", "add")
