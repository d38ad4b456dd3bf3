"""Note when API keys are used, for the control plane's "last used" column.

The request path only writes to a dict; a background task sends what it collected to Redis
(``shared.bus`` ``key_last_used``) every few seconds, and each key at most once a minute, so a
busy key costs Redis nothing per call. If Redis is away the notes wait for the next round.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis
from mitmproxy import ctx, http
from redis.exceptions import RedisError

from dataplane_addon.call import CALL
from shared.bus import BusKeys

log = logging.getLogger(__name__)
FLUSH_SECONDS = 5.0
PER_KEY_SECONDS = 60.0


class KeyUsageReporter:
    def __init__(self) -> None:
        self.pending: dict[str, float] = {}
        self.reported: dict[str, float] = {}
        self._task: asyncio.Task | None = None

    def running(self) -> None:
        keys = BusKeys(ctx.options.mesh_redis_prefix)
        self._task = asyncio.get_running_loop().create_task(self._flush_forever(ctx.options.mesh_redis_url, keys))

    def done(self) -> None:
        if self._task:
            self._task.cancel()

    def request(self, flow: http.HTTPFlow) -> None:
        call = flow.metadata.get(CALL)
        if call is None or call.principal is None:
            return
        now = time.time()
        key_id = call.principal.key_id
        if now - self.reported.get(key_id, 0.0) >= PER_KEY_SECONDS:
            self.pending[key_id] = now
            self.reported[key_id] = now

    async def _flush_forever(self, url: str, keys: BusKeys) -> None:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        try:
            while True:
                await asyncio.sleep(FLUSH_SECONDS)
                if not self.pending:
                    continue
                batch, self.pending = self.pending, {}
                try:
                    await client.hset(keys.key_last_used, mapping={k: f"{v:.0f}" for k, v in batch.items()})
                except (RedisError, OSError):
                    self.pending = {**batch, **self.pending}  # try again next round
        finally:
            await client.aclose()
