"""The ``SnapshotFollower`` (data plane and bridge alike) against the real Redis: a snapshot is
used only once its MAC verifies under the data-plane key; anything else is refused whole, the
org keeps what it had, and the refusal is counted and logged once."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis

from dataplane_addon.snapshot_store import SnapshotFollower, SnapshotStore
from shared.bus import BusKeys, ChangeMessage
from shared.envelope import Keyring, generate_key
from shared.snapshot import KeyGrant, Snapshot
from shared.snapshot_mac import NO_KEY, UNAUTHENTICATED, sign_snapshot

pytestmark = pytest.mark.anyio

KEYRING = Keyring.single(generate_key())
POLICY = {"role:member": [{"tools": {"*": ["*"]}}]}


def snap(version: int, *key_hashes: str, org: str = "org_a") -> Snapshot:
    grants = {h: KeyGrant(key_id=f"key_{h}", user_id="usr_1", policy="role:member") for h in key_hashes}
    return Snapshot(org_id=org, version=version, policies=POLICY, api_keys=grants)


@pytest.fixture
async def bus(redis_url, bus_prefix):
    client = aioredis.Redis.from_url(redis_url)
    yield client, BusKeys(bus_prefix)
    await client.aclose()


def refusals(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.ERROR and "refused the snapshot" in r.getMessage()]


async def test_a_forged_snapshot_is_refused_and_the_org_keeps_its_previous_one(bus, caplog):
    client, keys = bus
    follower = SnapshotFollower(SnapshotStore(), lambda: KEYRING)
    await client.hset(keys.snapshots, "org_a", sign_snapshot(snap(1, "h_real"), KEYRING))
    assert await follower.load_all(client, keys) == 1

    forged = snap(2, "h_real", "h_forged").to_json()  # what a writer without the key can produce
    await client.hset(keys.snapshots, "org_a", forged)
    with caplog.at_level(logging.ERROR):
        for _ in range(3):  # a reload after a reconnect, or a flood of change messages
            assert await follower.load_all(client, keys) == 0
    assert follower.store.versions["org_a"] == 1
    assert follower.store.principal("h_real") and follower.store.principal("h_forged") is None
    assert follower.rejected == {UNAUTHENTICATED: 1}
    [message] = refusals(caplog)  # once per stored value
    assert "'org_a'" in message and "still serving its version 1" in message and "h_forged" not in message


async def test_a_snapshot_copied_from_another_orgs_field_is_refused(bus, caplog):
    client, keys = bus
    follower = SnapshotFollower(SnapshotStore(), lambda: KEYRING)
    await client.hset(keys.snapshots, "org_b", sign_snapshot(snap(5, "h_b", org="org_b"), KEYRING))
    await client.hset(keys.snapshots, "org_a", await client.hget(keys.snapshots, "org_b"))
    with caplog.at_level(logging.ERROR):
        assert await follower.load_all(client, keys) == 1  # org_b's own field only
    assert follower.store.versions == {"org_b": 5} and follower.rejected == {UNAUTHENTICATED: 1}
    assert "another org's field" in refusals(caplog)[0]


async def test_without_a_dataplane_key_every_snapshot_is_refused(bus, caplog):
    client, keys = bus
    follower = SnapshotFollower(SnapshotStore(), lambda: None)
    await client.hset(keys.snapshots, "org_a", sign_snapshot(snap(1, "h_real"), KEYRING))
    with caplog.at_level(logging.ERROR):
        assert await follower.load_all(client, keys) == 0
    assert follower.store.stats()["orgs"] == 0 and follower.rejected == {NO_KEY: 1}
    assert "no data-plane key" in refusals(caplog)[0]


async def test_a_field_name_that_is_not_utf8_is_refused_not_fatal(bus):
    client, keys = bus
    follower = SnapshotFollower(SnapshotStore(), lambda: KEYRING)
    await client.hset(keys.snapshots, b"org_\xff", b"anything")
    await client.hset(keys.snapshots, "org_a", sign_snapshot(snap(1, "h_real"), KEYRING))
    assert await follower.load_all(client, keys) == 1
    assert follower.store.principal("h_real") and follower.rejected == {UNAUTHENTICATED: 1}


async def test_forged_change_messages_only_make_it_fetch_and_it_keeps_following(redis_url, bus, caplog):
    client, keys = bus
    follower = SnapshotFollower(SnapshotStore(), lambda: KEYRING)
    await client.hset(keys.snapshots, "org_a", sign_snapshot(snap(1, "h_real"), KEYRING))
    caplog.set_level(logging.INFO)
    task = asyncio.create_task(follower.follow(redis_url, keys))
    try:
        await until(lambda: follower.connected and follower.store.versions.get("org_a") == 1)
        for garbage in (b"not json", b'{"org_id": "org_a"}', b'{"org_id": "org_a", "version": 1e400}', b"[]"):
            await client.publish(keys.changes, garbage)
        await client.publish(keys.changes, ChangeMessage("org_a", 99).to_json())  # nothing newer is stored
        await client.hset(keys.snapshots, "org_a", sign_snapshot(snap(2, "h_real", "h_new"), KEYRING))
        await client.publish(keys.changes, ChangeMessage("org_a", 2).to_json())
        await until(lambda: follower.store.principal("h_new") is not None)
        assert follower.connected and follower.rejected == {}
        said = [r.getMessage() for r in caplog.records]
        assert sum("dropped a malformed change message" in m for m in said) == 1  # said once, then dropped
        assert not any("lost Redis" in m for m in said)  # not mistaken for a broken connection
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def until(check, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)
