"""The gateway under test, started as in production: a seeded database, then ``mesh up`` (control
plane under gunicorn, the data plane, the snapshot reconciler) against the machine's Redis with
a key prefix of its own, which is deleted afterwards.

For the scale-out figures it also starts extra data plane processes sharing one port
(``python -m dataplane_addon --reuse-port``), following the same Redis prefix and control plane.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import redis

from bench.processes import Child, ProcessGroup, children_of, cmdline, free_port
from bench.seed import SeededOrg, seed
from control_plane.settings import Settings

MESH = str(Path(sys.executable).with_name("mesh"))


def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def health(port: int, metrics_token: str) -> dict:
    """The data plane's detailed /health (its counts need the metrics token)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/health",
                                     headers={"Authorization": f"Bearer {metrics_token}"})
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return {}


def wait_for_snapshot(port: int, metrics_token: str, connections: int, child: Child, timeout: float = 30.0) -> None:
    """Until the data plane on ``port`` holds at least ``connections`` routes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited:\n{child.log_tail()}")
        if health(port, metrics_token).get("connections", 0) >= connections:
            return
        time.sleep(0.05)
    raise RuntimeError(f"the data plane on {port} did not load the snapshots: {health(port, metrics_token)}\n"
                       f"{child.log_tail()}")


LOADED = re.compile(r"following snapshots in Redis \(.*'connections': (\d+)")


def wait_for_loaded_log(child: Child, connections: int, timeout: float = 30.0) -> None:
    """Until ``child`` (a data plane process) logs that it holds at least ``connections`` routes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited:\n{child.log_tail()}")
        text = child.log_path.read_text(errors="replace") if child.log_path.exists() else ""
        if any(int(m.group(1)) >= connections for m in LOADED.finditer(text)):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{child.name} did not load the snapshots:\n{child.log_tail()}")


class Gateway:
    def __init__(self, group: ProcessGroup, work_dir: Path, redis_url: str) -> None:
        self.group = group
        self.port = free_port()
        self.control_plane_port = free_port()
        self.redis_url = redis_url
        self.prefix = f"mesh-bench-{uuid.uuid4().hex[:12]}"
        self.metrics_token = uuid.uuid4().hex
        self.env = {
            "MESH_DATA_DIR": str(work_dir / "gateway-data"),
            "PORT": str(self.port),
            "CONTROL_PLANE_PORT": str(self.control_plane_port),
            "REDIS_URL": redis_url,
            "MESH_REDIS_PREFIX": self.prefix,
            "MESH_METRICS_TOKEN": self.metrics_token,
        }
        self.settings = Settings.from_env(env=self.env)
        self.seeded: SeededOrg | None = None
        self.mesh_up: Child | None = None
        self.data_plane_pid = 0
        self.helper_pids: list[int] = []  # gunicorn and other children of `mesh up`

    def start(self, upstream_url: str) -> "Gateway":
        self.seeded = seed(self.settings, upstream_url)
        env = {**self.env, "DATABASE_URL": self.settings.database_url}
        self.mesh_up = self.group.start("mesh-up", [MESH, "up"], env=env, stop_signal=signal.SIGINT)
        self.mesh_up.wait_for_port(self.port)
        wait_for_snapshot(self.port, self.metrics_token, self.seeded.connections, self.mesh_up)
        for pid in children_of(self.mesh_up.pid):
            if "dataplane_addon" in cmdline(pid):
                self.data_plane_pid = pid
            else:
                self.helper_pids.append(pid)
        if not self.data_plane_pid:
            raise RuntimeError("found no data plane process under `mesh up`")
        return self

    def all_pids(self) -> list[int]:
        return [p for p in (self.mesh_up.pid if self.mesh_up else 0, self.data_plane_pid, *self.helper_pids) if p]

    def start_data_planes(self, count: int) -> tuple[int, list[Child]]:
        """``count`` more data plane processes sharing one new port with SO_REUSEPORT."""
        port = free_port()
        children = [
            self.group.python(f"dataplane-reuseport-{n}", "dataplane_addon", "--reuse-port",
                              "--set", f"listen_port={port}",
                              "--set", f"mesh_control_plane=127.0.0.1:{self.control_plane_port}",
                              "--set", f"mesh_redis_prefix={self.prefix}",
                              "--set", f"mesh_dataplane_key_file={self.settings.dataplane_key_file}",
                              env={"REDIS_URL": self.redis_url})
            for n in range(count)
        ]
        for child in children:
            child.wait_for_port(port)
        for child in children:
            # Not /health on the shared port: SO_REUSEPORT may hand that to a sibling that is
            # already loaded. Each process says in its own log when it has loaded the snapshots.
            wait_for_loaded_log(child, self.seeded.connections)
        return port, children

    def stop(self) -> None:
        """Stop `mesh up` (it stops its own children), then make sure none survived it."""
        survivors = {pid: cmdline(pid) for pid in (self.data_plane_pid, *self.helper_pids) if pid}
        if self.mesh_up is not None:
            self.group.stop(self.mesh_up, timeout=20)
        for pid, started_as in survivors.items():
            try:
                if cmdline(pid) == started_as:  # still ours, not a reused pid
                    os.killpg(pid, signal.SIGKILL)  # `mesh up` starts each child in its own session
            except (OSError, ProcessLookupError):
                pass
        delete_prefix(self.redis_url, self.prefix)
