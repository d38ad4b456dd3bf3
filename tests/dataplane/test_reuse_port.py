"""``python -m dataplane_addon --reuse-port``: several data plane processes serve one port, the
kernel spreading connections across them (the benchmark's scale-out relies on it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx2
import pytest

from tests.support import ROOT, free_port, port_open, wait_for

pytestmark = pytest.mark.e2e


def healthy(port: int) -> bool:
    try:
        return httpx2.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx2.HTTPError:
        return False


def test_two_data_planes_share_one_port(redis_url, bus_prefix):
    port = free_port()
    argv = [sys.executable, "-m", "dataplane_addon", "--reuse-port", "--set", f"listen_port={port}",
            "--set", f"mesh_control_plane=127.0.0.1:{free_port()}", "--set", f"mesh_redis_prefix={bus_prefix}"]
    env = {**os.environ, "REDIS_URL": redis_url}
    first = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    second = None
    try:
        wait_for(lambda: port_open(port), what="the first data plane")
        second = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Without SO_REUSEPORT the second process fails to bind and exits; give it the time the
        # first needed to start, then take the first away: the port must still answer.
        time.sleep(2)
        assert second.poll() is None, second.stderr.read().decode()[-2000:]
        first.terminate()
        first.wait(10)
        wait_for(lambda: healthy(port), timeout=10, what="the second data plane to answer on the shared port")
    finally:
        for proc in (p for p in (first, second) if p is not None):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
