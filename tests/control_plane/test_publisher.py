from __future__ import annotations

from control_plane.services import connections, orgs
from shared.bus import BusKeys
from shared.snapshot import Snapshot


def test_an_older_snapshot_never_replaces_a_newer_one(app, redis_client, bus_prefix):
    first = orgs.bootstrap_first_run()
    publisher = app.extensions["mesh.publisher"]
    current = Snapshot.from_json(redis_client.hget(BusKeys(bus_prefix).snapshots, first.org.id))
    stale = Snapshot(org_id=first.org.id, version=current.version - 1)
    assert publisher.publish(stale) is False
    assert Snapshot.from_json(redis_client.hget(BusKeys(bus_prefix).snapshots, first.org.id)) == current


def test_reconcile_republishes_everything_after_redis_lost_it(app, redis_client, bus_prefix):
    first = orgs.bootstrap_first_run()
    conn = connections.create_connection(first.org, "echo", "http://127.0.0.1:9/mcp")
    keys = BusKeys(bus_prefix)
    redis_client.delete(keys.snapshots, keys.versions)  # as after a restart of a Redis that keeps nothing
    publisher = app.extensions["mesh.publisher"]
    assert publisher.reconcile() == 1
    restored = Snapshot.from_json(redis_client.hget(keys.snapshots, first.org.id))
    assert conn.id in restored.connections
    assert publisher.reconcile() == 0  # in step: nothing more to do
