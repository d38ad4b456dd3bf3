"""The ``SnapshotReporter`` against the real Redis: it reports what its follower installed and
refused (the data plane's ACK/NACK), refreshes the report, writes it whole again once it has
expired, and never fails for Redis being away."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis

from dataplane_addon.snapshot_report import SnapshotReporter
from dataplane_addon.snapshot_store import SnapshotFollower, SnapshotStore
from shared.bus import BusKeys
from shared.dataplane_report import REPORT_TTL, read_report
from shared.envelope import Keyring, generate_key
from shared.snapshot import Snapshot
from shared.snapshot_mac import UNAUTHENTICATED, sign_snapshot
from tests.support import free_port

pytestmark = pytest.mark.anyio

KEYRING = Keyring.single(generate_key())


def snap(org: str, version: int) -> Snapshot:
    return Snapshot(org_id=org, version=version, policies={}, api_keys={})


@pytest.fixture
async def bus(redis_url, bus_prefix):
    client = aioredis.Redis.from_url(redis_url)
    yield client, BusKeys(bus_prefix)
    await client.aclose()


async def reports(client, keys) -> list:
    return [read_report(await client.hgetall(key)) async for key in client.scan_iter(match=keys.instance_reports)]


async def test_the_report_holds_installed_versions_and_refusals_and_expires(bus):
    client, keys = bus
    await client.hset(keys.snapshots, mapping={"org_a": sign_snapshot(snap("org_a", 3), KEYRING),
                                               "org_b": b"not a signed snapshot"})
    follower = SnapshotFollower(SnapshotStore(), lambda: KEYRING)
    await follower.load_all(client, keys)
    reporter = SnapshotReporter(follower, "dataplane")
    key = keys.instance_report(reporter.identity.instance)

    await reporter.report_once(client, key)
    [report] = await reports(client, keys)
    assert report.identity == reporter.identity and report.identity.kind == "dataplane"
    assert report.versions == {"org_a": 3}
    assert set(report.refused) == {"org_b"} and report.refused["org_b"].reason == UNAUTHENTICATED
    assert "MAC" in report.refused["org_b"].message
    assert 0 < await client.ttl(key) <= REPORT_TTL

    # An authentic snapshot of the refused org clears the refusal; the next report says so.
    await client.hset(keys.snapshots, "org_b", sign_snapshot(snap("org_b", 1), KEYRING))
    await follower.load_all(client, keys)
    assert follower.changed.is_set()
    await reporter.report_once(client, key)
    [report] = await reports(client, keys)
    assert report.versions == {"org_a": 3, "org_b": 1} and report.refused == {}

    # Expired (Redis restarted, say) with nothing changed here: written whole again, not just its time.
    await client.delete(key)
    await reporter.report_once(client, key)
    [report] = await reports(client, keys)
    assert report.versions == {"org_a": 3, "org_b": 1}


async def test_redis_away_is_said_once_and_never_raises(bus, caplog):
    client, keys = bus
    follower = SnapshotFollower(SnapshotStore(), lambda: KEYRING)
    follower.store.apply(snap("org_a", 2))
    reporter = SnapshotReporter(follower, "bridge")
    key = keys.instance_report(reporter.identity.instance)
    nobody = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            await reporter.report_once(nobody, key)
    await nobody.aclose()
    assert [r.getMessage() for r in caplog.records].count(
        "cannot report the installed snapshots to Redis (ConnectionError); serving on, trying again") == 1

    await reporter.report_once(client, key)  # Redis is back: the whole report at once
    [report] = await reports(client, keys)
    assert report.identity.kind == "bridge" and report.versions == {"org_a": 2}


async def test_a_change_is_reported_at_once_not_at_the_next_refresh(bus, redis_url):
    client, keys = bus
    follower = SnapshotFollower(SnapshotStore(), lambda: KEYRING)
    reporter = SnapshotReporter(follower, "dataplane")
    task = asyncio.get_running_loop().create_task(reporter.run(redis_url, keys))
    try:
        await client.hset(keys.snapshots, "org_a", sign_snapshot(snap("org_a", 7), KEYRING))
        await asyncio.sleep(0.2)
        assert [r.versions for r in await reports(client, keys)] == [{}]  # the first report: nothing yet
        await follower.load_all(client, keys)
        for _ in range(40):  # well before the next refresh (REPORT_EVERY)
            found = await reports(client, keys)
            if found and found[0].versions == {"org_a": 7}:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the installed version was not reported within 2 s")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

