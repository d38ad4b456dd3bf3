"""Addon (and the bridge's task): tells the control plane, through Redis, what this process's
``SnapshotFollower`` has installed and refused (format and key: ``shared.dataplane_report``,
``shared.bus``), so ``mesh status`` shows every live data plane and bridge, its versions and lag.

Best-effort and never in the request path: it runs as its own task, writes at once when an
installed version or a refusal changes and otherwise refreshes the report every few seconds. If
Redis is away it says so once, keeps serving and tries again at the next report; the report
expires meanwhile, so the process shows as gone until Redis is back. Options are the follower's
(``mesh_redis_url``, ``mesh_redis_prefix``), declared there once.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from dataplane_addon.snapshot_store import SnapshotFollower
from shared.bus import REPORT_SCRIPT, BusKeys
from shared.dataplane_report import REPORT_EVERY, REPORT_TTL, Identity, InstanceReport

log = logging.getLogger(__name__)

COALESCE = 0.1  # seconds to let a burst of installs (a reload of every org) settle into one report


class SnapshotReporter:
    def __init__(self, follower: SnapshotFollower, kind: str) -> None:
        self.follower = follower
        self.identity = Identity.of_this_process(kind)
        self._written: tuple | None = None  # (versions, refusals) as last written whole
        self._failing = False
        self._task: asyncio.Task | None = None

    def running(self) -> None:
        from mitmproxy import ctx

        keys = BusKeys(ctx.options.mesh_redis_prefix)
        self._task = asyncio.get_running_loop().create_task(self.run(ctx.options.mesh_redis_url, keys))

    def done(self) -> None:
        if self._task:
            self._task.cancel()

    async def run(self, url: str, keys: BusKeys) -> None:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        key = keys.instance_report(self.identity.instance)
        try:
            while True:
                await self.report_once(client, key)
                try:
                    await asyncio.wait_for(self.follower.changed.wait(), REPORT_EVERY)
                    await asyncio.sleep(COALESCE)
                except TimeoutError:
                    pass
        finally:
            try:
                await client.aclose()
            except (RedisError, OSError):
                pass

    async def report_once(self, client: aioredis.Redis, key: str) -> None:
        """Write the report (whole if it changed or vanished, else only its time); never raises
        for Redis being away."""
        self.follower.changed.clear()  # before reading: a change from now on makes another report
        state = (dict(self.follower.store.versions), dict(self.follower.refusals))
        now = time.time()
        write = client.register_script(REPORT_SCRIPT)
        try:
            refresh = [REPORT_TTL, "refresh", "reported_at", repr(now)]
            if state != self._written or not await write(keys=[key], args=refresh):
                fields = InstanceReport(self.identity, now, *state).fields()
                await write(keys=[key], args=[REPORT_TTL, "whole", *(x for item in fields.items() for x in item)])
                self._written = state
        except (RedisError, OSError) as exc:
            self._written = None
            if not self._failing:
                log.warning("cannot report the installed snapshots to Redis (%s); serving on, trying again",
                            type(exc).__name__)
            self._failing = True
            return
        if self._failing:
            log.info("reporting the installed snapshots to Redis again")
            self._failing = False
