"""The data plane keeps serving from memory while Redis is away, and catches up by itself when
it is back (an empty Redis, as this one keeps nothing on disk)."""

from __future__ import annotations

import shutil
import subprocess
import time

import httpx2
import pytest
import redis

from tests.support import Gateway, Upstream, free_port, mcp_headers, rpc, wait_for

pytestmark = pytest.mark.e2e


class PrivateRedis:
    def __init__(self, tmp):
        self.port = free_port()
        self.tmp = tmp
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen([shutil.which("redis-server"), "--bind", "127.0.0.1", "--port", str(self.port),
                                      "--save", "", "--appendonly", "no", "--dir", str(self.tmp)],
                                     stdout=subprocess.DEVNULL)
        wait_for(self.answers, what="private redis")

    def answers(self) -> bool:
        try:
            return redis.Redis.from_url(self.url, socket_connect_timeout=0.2).ping()
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def private_redis(tmp_path):
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed (scripts/install installs it)")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_calls_keep_working_while_redis_stops_and_starts(tmp_path, private_redis):
    upstream = Upstream(tmp_path).start()
    gateway = Gateway(tmp_path, redis_url=private_redis.url).start()
    try:
        conn = gateway.add_connection("echo", upstream.url)
        key = gateway.create_key("outage")

        def call() -> int:
            body = rpc("tools/call", {"name": "echo", "arguments": {"text": "still here"}})
            response = httpx2.post(gateway.mcp_url(conn), json=body, headers=mcp_headers(body, key), timeout=5)
            if response.status_code == 200:
                assert "still here" in response.text
            return response.status_code

        wait_for(lambda: call() == 200, timeout=2, what="the connection to be routable")

        private_redis.stop()
        outage_end = time.monotonic() + 3
        while time.monotonic() < outage_end:  # bounded: ~3 s of calls with Redis gone
            assert call() == 200
            time.sleep(0.05)
        health = gateway.health()
        assert health["redis"] == "disconnected" and health["connections"] == 1

        private_redis.start()  # empty: this Redis kept nothing
        for _ in range(20):
            assert call() == 200
            time.sleep(0.05)

        # Caught up by itself: the reconciler republished, the data plane reconnected, and a
        # change made after the restart is enforced.
        later = gateway.add_connection("after-restart", upstream.url)
        wait_for(lambda: gateway.health()["redis"] == "connected", timeout=10,
                 what="the data plane to reconnect")

        def later_call() -> int:
            body = rpc("tools/list")
            return httpx2.post(gateway.mcp_url(later), json=body, headers=mcp_headers(body, key), timeout=5).status_code

        wait_for(lambda: later_call() == 200, timeout=5, what="a connection added after the restart")
        assert call() == 200
        # Their reports (lost with the old Redis) are back, whole: `mesh status` shows both, in step.
        org = gateway.published(next(o["id"] for o in gateway.mesh("orgs", "list")))
        wait_for(lambda: sorted((i["kind"], i["orgs"][0]["installed"]) for i in gateway.mesh("status")["instances"])
                 == [("bridge", org.version), ("dataplane", org.version)], timeout=10,
                 what="the data plane and the bridge to report again")
    finally:
        assert gateway.stop() == 0
        upstream.stop()
