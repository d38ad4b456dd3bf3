from __future__ import annotations

import pytest

from control_plane.services import connections, orgs
from control_plane.services.actors import OPERATOR
from shared.apikeys import hash_key
from shared.bus import BusKeys, ChangeMessage
from shared.envelope import Keyring, generate_key
from shared.snapshot import Snapshot
from shared.snapshot_mac import SnapshotRejected, open_snapshot, sign_snapshot


def test_an_older_snapshot_never_replaces_a_newer_one(app, published):
    first = orgs.bootstrap_first_run()
    publisher = app.extensions["mesh.publisher"]
    current = published(first.org.id)
    stale = Snapshot(org_id=first.org.id, version=current.version - 1)
    assert publisher.publish(stale) is False
    assert published(first.org.id) == current


def test_reconcile_republishes_everything_after_redis_lost_it(app, redis_client, bus_prefix, published):
    first = orgs.bootstrap_first_run()
    conn = connections.create_connection(first.org, "echo", "http://127.0.0.1:9/mcp", actor=OPERATOR)
    keys = BusKeys(bus_prefix)
    redis_client.delete(keys.snapshots, keys.versions)  # as after a restart of a Redis that keeps nothing
    publisher = app.extensions["mesh.publisher"]
    assert publisher.reconcile() == 1
    restored = published(first.org.id)
    assert conn.id in restored.connections
    assert publisher.reconcile() == 0  # in step: nothing more to do


def test_published_snapshots_are_signed_for_their_org_under_the_dataplane_key(app, redis_client, bus_prefix):
    first = orgs.bootstrap_first_run()
    stored = redis_client.hget(BusKeys(bus_prefix).snapshots, first.org.id)
    dataplane = app.extensions["mesh.vault"].dataplane_keyring()
    assert stored.startswith(f"mesh-snapshot/1.{dataplane.active}.".encode())
    assert hash_key(first.api_key) in open_snapshot(first.org.id, stored, dataplane).api_keys
    for org_id, keyring in ((first.org.id, Keyring.single(generate_key())), ("org_other", dataplane)):
        with pytest.raises(SnapshotRejected):
            open_snapshot(org_id, stored, keyring)


def test_the_first_reconcile_signs_again_what_an_older_gateway_or_a_forger_left_in_redis(app, redis_client, bus_prefix,
                                                                                         published):
    first = orgs.bootstrap_first_run()
    other = orgs.create_org("Other", orgs.find_user("admin@localhost"), actor=OPERATOR)
    keys = BusKeys(bus_prefix)
    current = published(first.org.id)
    # As an older gateway (no MAC) and a forger (no key) leave them; the versions stay in step.
    redis_client.hset(keys.snapshots, first.org.id, current.to_json())
    redis_client.hset(keys.snapshots, other.id, sign_snapshot(published(other.id), Keyring.single(generate_key())))
    pubsub = redis_client.pubsub()
    pubsub.subscribe(keys.changes)
    pubsub.get_message(timeout=1)  # the subscribe confirmation
    publisher = app.extensions["mesh.publisher"]
    assert publisher.reconcile() == 2
    assert published(first.org.id) == current  # the same version, now signed
    assert published(other.id).org_id == other.id
    announced = {ChangeMessage.from_json(pubsub.get_message(timeout=2)["data"]).org_id for _ in range(2)}
    assert announced == {first.org.id, other.id}  # so data planes that refused them fetch them again
    assert publisher.reconcile() == 0
    pubsub.close()


def test_a_version_written_into_redis_ahead_of_the_database_cannot_freeze_an_org(app, redis_client, bus_prefix,
                                                                                 published):
    first = orgs.bootstrap_first_run()
    keys = BusKeys(bus_prefix)
    publisher = app.extensions["mesh.publisher"]
    publisher.reconcile()  # the start-up check of stored snapshots, done
    redis_client.hset(keys.versions, first.org.id, 10**9)  # every later publish would be refused
    from control_plane.services import api_keys

    user = orgs.find_user("admin@localhost")
    _key, row = api_keys.create_api_key(first.org, user, name="made-after", actor=OPERATOR)
    assert row.key_hash not in published(first.org.id).api_keys  # the compare-and-set refused it
    assert publisher.reconcile() == 1
    after = published(first.org.id)
    assert row.key_hash in after.api_keys and int(redis_client.hget(keys.versions, first.org.id)) == after.version
    assert publisher.reconcile() == 0
