"""Running the real thing in tests: free ports, upstream MCP servers, the whole gateway as
`mesh up` runs it, and the `mcp` SDK client pointed at it."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx2
import redis

from shared.bus import BusKeys
from shared.envelope import Keyring, parse_key
from shared.snapshot import Snapshot
from shared.snapshot_mac import open_snapshot

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("MESH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# The installed console script, exactly as a user runs it.
MESH = str(Path(sys.executable).with_name("mesh"))
# The SDK-built stdio server of tests/upstreams, as a command line for a stdio connection. Run
# as a script: a stdio child works in an empty directory of its own, where `-m tests…` would
# not import.
STDIO_SERVER = shlex.join([sys.executable, str(ROOT / "tests" / "upstreams" / "stdio_server.py")])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def unique_prefix() -> str:
    return f"mesh-test-{uuid.uuid4().hex[:12]}"


def delete_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def published_snapshot(client: redis.Redis, prefix: str, org_id: str, keyring: Keyring) -> Snapshot:
    """The org's snapshot in Redis, read as the data plane reads it: MAC checked, then parsed.
    The one way tests read a published snapshot."""
    raw = client.hget(BusKeys(prefix).snapshots, org_id)
    assert raw is not None, f"no snapshot of {org_id} was published"
    return open_snapshot(org_id, raw, keyring)


class Upstream:
    """A real MCP server (tests/upstreams/echo_server.py) in a subprocess."""

    module = "tests.upstreams.echo_server"

    def __init__(self, tmp: Path, port: int | None = None, required_bearer: str | None = None):
        self.port = port or free_port()
        self.required_bearer = required_bearer
        self.header_log = tmp / f"upstream-{self.port}-headers.jsonl"
        self.header_log.touch()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> "Upstream":
        extra = ["--require-bearer", self.required_bearer] if self.required_bearer else []
        self.proc = subprocess.Popen([sys.executable, "-m", self.module, str(self.port), str(self.header_log), *extra],
                                     cwd=ROOT)
        wait_for(lambda: port_open(self.port), what=f"upstream on {self.port}")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def requests(self) -> list[dict]:
        return [json.loads(line) for line in self.header_log.read_text().splitlines() if line.strip()]


class ScriptedUpstream(Upstream):
    """tests/upstreams/scripted_server.py: an upstream that misbehaves on purpose, one scenario per
    URL (``url_for(scenario)``); it logs what it receives like the echo server."""

    module = "tests.upstreams.scripted_server"

    def url_for(self, scenario: str) -> str:
        from urllib.parse import quote

        return f"{self.url}?s={quote(scenario, safe='')}"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Gateway:
    """`mesh up` in a subprocess with its own data dir, ports and Redis prefix.

    ``redis_url=None``: no ``REDIS_URL``, so `mesh up` runs a Redis of its own in the data dir."""

    def __init__(self, tmp: Path, redis_url: str | None = REDIS_URL, env: dict | None = None,
                 prefix: str | None = None):
        self.port = free_port()
        self.control_plane_port = free_port()
        self.bridge_port = free_port()
        self.prefix = prefix or unique_prefix()
        self.redis_url = redis_url
        self.data_dir = tmp / "gateway-data"
        self.log_path = tmp / "gateway.log"
        self.metrics_token = f"metrics-{uuid.uuid4().hex}"
        inherited = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        self.env = {
            **inherited,
            "MESH_DATA_DIR": str(self.data_dir),
            "PORT": str(self.port),
            "CONTROL_PLANE_PORT": str(self.control_plane_port),
            "MESH_BRIDGE_PORT": str(self.bridge_port),
            "MESH_REDIS_PREFIX": self.prefix,
            "MESH_METRICS_TOKEN": self.metrics_token,
            **({"REDIS_URL": redis_url} if redis_url else {}),
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None
        self.first_run_key: str | None = None
        self.cli_output: list[str] = []  # everything `mesh` commands printed, for tests that scan output

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def mcp_url(self, connection_id: str) -> str:
        return f"{self.base}/mcp/{connection_id}"

    @property
    def dataplane_key_file(self) -> Path:
        """The data-plane key `mesh up` generated: what another data plane of this gateway needs."""
        return self.data_dir / "dataplane.key"

    def dataplane_keyring(self) -> Keyring:
        return Keyring.single(parse_key(self.dataplane_key_file.read_text()))

    def published(self, org_id: str) -> Snapshot:
        """The org's snapshot as this gateway's data plane reads it from Redis."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            return published_snapshot(client, self.prefix, org_id, self.dataplane_keyring())
        finally:
            client.close()

    def start(self) -> "Gateway":
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([MESH, "up"], env=self.env, cwd=ROOT,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: "MCP Mesh is up" in self.log() or self.proc.poll() is not None, timeout=30,
                 what="mesh up to be ready")
        assert self.proc.poll() is None, f"mesh up exited:\n{self.log()}"
        for line in self.log().splitlines():
            if "API key:" in line:
                self.first_run_key = line.split("API key:")[1].strip()
        return self

    def log(self) -> str:
        return self.log_path.read_text()

    def metrics(self) -> httpx2.Response:
        """The data plane's /metrics, with the metrics token."""
        return httpx2.get(self.base + "/metrics", headers={"Authorization": f"Bearer {self.metrics_token}"}, timeout=5)

    def health(self) -> dict:
        """The data plane's detailed /health, with the metrics token."""
        return httpx2.get(self.base + "/health", headers={"Authorization": f"Bearer {self.metrics_token}"},
                          timeout=5).json()

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        self._log.close()
        if self.redis_url:  # a Redis of mesh up's own went with it
            delete_prefix(self.redis_url, self.prefix)
        return code

    def mesh(self, *args: str, input: str | None = None, env: dict | None = None) -> dict | list:
        """Run a `mesh` command with --json against this gateway's database."""
        out = subprocess.run([MESH, *args, "--json"], env={**self.env, **(env or {})}, cwd=ROOT,
                             capture_output=True, text=True, timeout=60, input=input)
        self.cli_output.append(out.stdout + out.stderr)
        assert out.returncode == 0, f"mesh {' '.join(args)} failed: {out.stderr}"
        return json.loads(out.stdout)

    def add_connection(self, name: str, url: str, *extra: str) -> str:
        return self.mesh("connections", "add", "--name", name, "--url", url, *extra)["id"]

    def add_stdio_connection(self, name: str, command_line: str, *env: str) -> str:
        """A stdio connection; ``env`` entries are ``NAME=value``."""
        extra = [arg for entry in env for arg in ("--env", entry)]
        return self.mesh("connections", "add", "--name", name, "--stdio", command_line, *extra)["id"]

    def bridge_token(self) -> str:
        """This run's bridge token, as `mesh up` keeps it for operators (0600, in the data dir)."""
        return (self.data_dir / "bridge.token").read_text().strip()

    def bridge_health(self) -> dict:
        """The bridge's own /health (loopback, with the token): per connection state, pid, restarts."""
        response = httpx2.get(f"http://127.0.0.1:{self.bridge_port}/health", timeout=5,
                              headers={"X-Mesh-Bridge-Token": self.bridge_token()})
        assert response.status_code == 200, f"the bridge's /health answered {response.status_code}"
        return response.json()["connections"]

    def plane_pid(self, plane: str) -> int:
        """The pid of this gateway's ``"data plane"`` or ``"bridge"`` process, found in /proc."""
        module, option = {"data plane": ("dataplane_addon", f"listen_port={self.port}"),
                          "bridge": ("dataplane_addon.bridge", f"mesh_bridge=127.0.0.1:{self.bridge_port}")}[plane]
        found = [pid for pid in all_pids() if f"-m\0{module}\0" in proc_cmdline(pid)
                 and f"--set\0{option}\0" in proc_cmdline(pid)]
        assert len(found) == 1, f"expected one {plane} process, found {found}"
        return found[0]

    @contextmanager
    def another_data_plane(self):
        """A second data plane process of this gateway (same control plane, Redis, prefix and
        data-plane key), as an operator scaling out starts one. Yields (its pid, its base URL)."""
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "dataplane_addon", "--set", f"listen_port={port}",
                                 "--set", f"mesh_control_plane=127.0.0.1:{self.control_plane_port}",
                                 "--set", f"mesh_redis_prefix={self.prefix}",
                                 "--set", f"mesh_dataplane_key_file={self.dataplane_key_file}"],
                                env={**os.environ, "REDIS_URL": self.redis_url}, cwd=ROOT)
        try:
            wait_for(lambda: port_open(port), what="the second data plane")
            yield proc.pid, f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)

    def move_connection(self, connection_id: str, url: str) -> None:
        """What a name whose DNS answer changes looks like to the gateway: the URL checked when the
        connection was registered now leads somewhere else. Written straight into the database
        (SQLite), past the services' checks; the reconciler publishes it within a second."""
        import sqlalchemy as sa

        engine = sa.create_engine(f"sqlite:///{self.data_dir / 'mesh.db'}")
        with engine.begin() as db:
            db.execute(sa.text("UPDATE connections SET url = :url WHERE id = :id"), {"url": url, "id": connection_id})
            db.execute(sa.text("UPDATE organizations SET policy_version = policy_version + 1"))
        engine.dispose()

    def create_key(self, name: str, *extra: str) -> str:
        return self.mesh("keys", "create", "--name", name, *extra)["key"]

    def add_user(self, email: str, role: str, org: str | None = None) -> None:
        """A user who is a member with ``role`` (of the default org, unless ``org``)."""
        self.mesh("users", "create", "--email", email, "--password-stdin", input="a long enough password\n")
        self.mesh("members", "add", "--email", email, "--role", role, *(["--org", org] if org else []))


def all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").glob("[0-9]*")]


def proc_cmdline(pid: int) -> str:
    """A process's command line, arguments separated by NUL ('' once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def proc_environ(pid: int) -> dict[str, str]:
    """The environment a process was started with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(entry.split("=", 1) for entry in raw.split("\0") if "=" in entry)


def call_tool_status(url: str, key: str, tool: str, arguments: dict | None = None) -> tuple[int, dict]:
    """One stateless tools/call over plain HTTP: (HTTP status, JSON-RPC answer or {})."""
    body = rpc("tools/call", {"name": tool, "arguments": arguments or {}})
    response = httpx2.post(url, json=body, headers=mcp_headers(body, key), timeout=10)
    text = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
        text = data[-1] if data else "{}"
    try:
        return response.status_code, json.loads(text)
    except ValueError:
        return response.status_code, {}


@asynccontextmanager
async def mcp_client(url: str, key: str | None, mode: str = "auto", **options):
    """The `mcp` SDK's own client, with the API key as a bearer token; ``options`` are the
    client's own (callbacks for sampling, elicitation, logging, messages)."""
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode, **options) as client:
            yield client


MODERN = "2026-07-28"


def rpc(method: str, params: dict | None = None, request_id: int = 1) -> dict:
    """A stateless (2026-07-28) request, as the SDK's client sends it: no session needed."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "mesh-tests", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {**(params or {}), "_meta": meta}}


def mcp_headers(body: dict | None = None, key: str | None = None) -> dict[str, str]:
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "MCP-Protocol-Version": MODERN}
    if isinstance(body, dict) and "method" in body:
        headers["Mcp-Method"] = body["method"]
        name = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}.get(body["method"])
        if name and name in body.get("params", {}):
            headers["Mcp-Name"] = body["params"][name]
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers
