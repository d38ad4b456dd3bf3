"""``mesh up``: one command that runs the whole gateway on one machine.

Children: a ``redis-server`` of its own when ``REDIS_URL`` is not set (on a unix socket in the
data dir, with a password: ``local_redis.py``), the control plane under gunicorn on
127.0.0.1:CONTROL_PLANE_PORT, the bridge for stdio and sse connections on
127.0.0.1:MESH_BRIDGE_PORT (it supervises the stdio commands itself), and the data plane
(mitmproxy) on HOST:PORT. The data plane and the bridge share a token drawn afresh for each run,
handed over in their environment and kept in ``<data dir>/bridge.token`` (0600) while the run
lasts, for operators (and tests) reading the bridge's ``/health``. This process checks the
vault's keys (creating them on a first run), migrates the database, creates the first admin on
an empty one, then runs the snapshot reconciler once a second until Ctrl-C or SIGTERM, and stops
every child on the way out. If a child dies, everything stops with a non-zero exit.

Each child gets only the settings it needs, built here rather than inherited:
- the control plane: this process's environment and every setting (it holds the database and
  the master key);
- the data plane and the bridge: what a process needs to run (``PROCESS_BASICS``), the Redis
  URL, the bridge token and ``MESH_DATAPLANE_KEY`` if set, and on their command lines their
  options (``--set name=value``, from ``settings.PLANE_OPTIONS``), of the data dir only the paths
  of their own key files (``dataplane.key``; ``session.key`` for the data plane); the bridge also
  ``MESH_STDIO_USER``. Never ``DATABASE_URL``, ``ENCRYPTION_KEY*`` or the data dir;
- redis-server: ``PROCESS_BASICS`` and its configuration on stdin.
Secrets never go on a command line (every local user can read those in ``ps``): the Redis URL,
which may carry a password, travels in ``REDIS_URL``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace

import redis
import sqlalchemy as sa

from control_plane import local_redis
from control_plane.settings import BRIDGE, DATA_PLANE, Settings

log = logging.getLogger("mesh")

# What any child needs from this process's environment to run: where programs are, who and
# where it is, the locale, and an import path for a source checkout. The bridge passes HOME,
# LOGNAME, PATH, SHELL, TERM and USER on to stdio servers (the SDK's default list).
PROCESS_BASICS = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
                  "PYTHONPATH")
BRIDGE_TOKEN_FILE = "bridge.token"
# The Redis (URL and key prefix) of the run, 0600 in the data dir while it lasts: a `mesh` command
# in another shell publishes its change there at once without being told REDIS_URL again. The
# URL may carry a password; the file is as private as ``redis.password`` beside it.
GATEWAY_REDIS_FILE = "redis.json"


def with_running_gateway_redis(settings: Settings) -> Settings:
    """``settings`` pointed at the Redis of the ``mesh up`` running with the same data dir, unless
    REDIS_URL says otherwise (or none runs: then as they were)."""
    if settings.redis_url_configured:
        return settings
    try:
        recorded = json.loads((settings.data_dir / GATEWAY_REDIS_FILE).read_text())
        return replace(settings, redis_url=str(recorded["redis_url"]), redis_prefix=str(recorded["redis_prefix"]))
    except (OSError, ValueError, TypeError, KeyError):
        return settings


def _write_private(path, text: str) -> None:
    """``text`` into a new file only the data dir's owner can read (a previous run's is replaced)."""
    path.unlink(missing_ok=True)  # perhaps with other permissions
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def redis_answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def wait_until(check, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return False


def port_in_use(host: str, port: int) -> bool:
    """Whether another process listens on ``host:port`` (binding as the children will)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as attempt:
        attempt.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            attempt.bind((host, port))
        except OSError as error:
            return error.errno == errno.EADDRINUSE  # anything else, the child itself reports
    return False


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:
            return response.status == 200
    except OSError:
        return False


class GatewayRunner:
    def __init__(self, settings: Settings, out=None):
        self.settings = settings
        self.out = out or sys.stdout
        self.children: list[tuple[str, subprocess.Popen]] = []
        self._stopping = False
        self._bridge_token = secrets.token_urlsafe(32)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # -- children -----------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], config: str | None = None) -> subprocess.Popen:
        """Start a child with exactly ``env``; ``config``, if any, is written to its stdin."""
        proc = subprocess.Popen(argv, env=env, start_new_session=True,
                                stdin=subprocess.PIPE if config is not None else None)
        self.children.append((name, proc))
        if config is not None:
            proc.stdin.write(config.encode())
            proc.stdin.close()
        return proc

    @staticmethod
    def _basics() -> dict[str, str]:
        return {name: os.environ[name] for name in PROCESS_BASICS if name in os.environ}

    def _plane_env(self) -> dict[str, str]:
        """The environment of the data plane and the bridge (see the module docstring)."""
        s = self.settings
        env = {**self._basics(), "REDIS_URL": s.redis_url, "MESH_BRIDGE_TOKEN": self._bridge_token}
        if s.dataplane_key:
            env["MESH_DATAPLANE_KEY"] = s.dataplane_key
        return env

    def _check_ports(self) -> None:
        """Refuse to start on a port another process holds (another ``mesh up``, say), before
        anything is touched: else the other gateway's /health would look like this one's."""
        s = self.settings
        wanted = [("PORT", "the data plane", s.listen_host, s.port),
                  ("CONTROL_PLANE_PORT", "the control plane", "127.0.0.1", s.control_plane_port),
                  ("MESH_BRIDGE_PORT", "the bridge", "127.0.0.1", s.bridge_port)]
        for setting, what, host, port in wanted:
            if port_in_use(host, port):
                raise SystemExit(f"error: port {port} on {host} ({what}) is already in use, by another `mesh up` or "
                                 f"another program: stop it, or choose another port with {setting}")

    def _start_redis(self) -> None:
        if self.settings.redis_url_configured:
            if not redis_answers(self.settings.redis_url):
                self.say("warning: REDIS_URL does not answer yet; the gateway keeps retrying")
            return
        data_dir = self.settings.data_dir
        try:
            local_redis.check_socket_path(data_dir)
        except ValueError as error:
            raise SystemExit(f"error: {error}") from None
        server = shutil.which("redis-server")
        if server is None:
            raise SystemExit("redis-server is not installed: run `make install` (it installs redis-server), "
                             "or set REDIS_URL")
        self._spawn("redis", [server, "-"], self._basics(),
                    config=local_redis.server_config(data_dir, local_redis.read_password(data_dir)))
        if not wait_until(lambda: redis_answers(self.settings.redis_url), 10):
            raise SystemExit("the local redis-server did not start")
        self.say(f"started a redis-server of its own on {local_redis.socket_path(data_dir)} (password in "
                 f"{local_redis.password_file(data_dir)})")

    def _start_planes(self) -> None:
        s = self.settings
        self._write_bridge_token()
        _write_private(s.data_dir / GATEWAY_REDIS_FILE, json.dumps({"redis_url": s.redis_url,
                                                                    "redis_prefix": s.redis_prefix}))
        self._spawn("control plane", [
            sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{s.control_plane_port}", "--workers", "2",
            "--worker-class", "uvicorn_worker.UvicornWorker", "--log-level", "warning", "--graceful-timeout", "5",
            "control_plane.asgi:create_asgi_app()",
        ], {**os.environ, **s.child_env()})
        self._spawn("bridge", self.plane_argv(BRIDGE),
                    {**self._plane_env(), **({"MESH_STDIO_USER": s.stdio_user} if s.stdio_user else {})})
        self._spawn("data plane", self.plane_argv(DATA_PLANE),
                    {**self._plane_env(), **({"MESH_METRICS_TOKEN": s.metrics_token} if s.metrics_token else {})})

    def plane_argv(self, plane: str) -> list[str]:
        """The command line of the data plane or the bridge: its options from ``PLANE_OPTIONS``."""
        if plane == DATA_PLANE:
            self._ensure_session_key()
        module = {DATA_PLANE: "dataplane_addon", BRIDGE: "dataplane_addon.bridge"}[plane]
        return [sys.executable, "-m", module, *self.settings.plane_command_line(plane)]

    def _write_bridge_token(self) -> None:
        """This run's bridge token, readable by the data dir's owner only, for ``/health``."""
        _write_private(self.settings.data_dir / BRIDGE_TOKEN_FILE, self._bridge_token + "\n")

    def _ensure_session_key(self) -> None:
        """The secret binding MCP sessions to callers; kept, so sessions survive a restart."""
        path = self.settings.session_key_file
        if not path.exists():
            _write_private(path, secrets.token_hex(32))

    def stop(self) -> None:
        self._stopping = True
        for name in (BRIDGE_TOKEN_FILE, GATEWAY_REDIS_FILE):
            (self.settings.data_dir / name).unlink(missing_ok=True)
        for _name, proc in reversed(self.children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _name, proc in reversed(self.children):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    # -- the run ------------------------------------------------------------------------------

    def prepare(self):
        """Migrate, and on an empty database create the first admin, org and key."""
        from control_plane.app import create_app
        from control_plane.migrate import upgrade
        from control_plane.rotation import secrets_under_keys_not_held
        from control_plane.services.orgs import bootstrap_first_run
        from control_plane.vault import Vault
        from control_plane.vault_keys import VaultKeyError

        self.settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self.settings.address_rules()
        except ValueError as error:
            raise SystemExit(f"error: MESH_ALLOW_PRIVATE_UPSTREAMS: {error}") from None
        if not self.settings.redis_url_configured:  # our own Redis: its password, before anyone connects
            try:
                password = local_redis.ensure_password(self.settings.data_dir)
            except (OSError, ValueError) as error:
                raise SystemExit(f"error: {error}") from None
            self.settings = replace(self.settings, redis_url=local_redis.url(self.settings.data_dir, password))
        vault = Vault(self.settings)
        try:
            vault.check()  # a bad ENCRYPTION_KEY stops here, before anything starts
        except VaultKeyError as error:
            raise SystemExit(f"error: {error}") from None
        engine = sa.create_engine(self.settings.database_url)
        try:
            upgrade(engine, master_keyring=vault.master_keyring)
        finally:
            engine.dispose()
        app = create_app(self.settings)
        with app.app_context():
            unheld = secrets_under_keys_not_held(vault)
            first = bootstrap_first_run()
        if unheld:
            # Most likely the wrong data dir or ENCRYPTION_KEY: say so now, not at the first call.
            self.say(f"warning: {sum(unheld.values())} secret(s) are sealed under master key(s) "
                     f"{', '.join(sorted(unheld))}, which this gateway does not hold; their connections will be "
                     "broken. Check --data-dir / ENCRYPTION_KEY (`mesh vault status` lists them).")
        if first:
            self.say("First run: created an admin, an organization and an API key. They are shown once.")
            self.say(f"  admin login:  {first.email} / {first.password}")
            self.say(f"  organization: {first.org.slug} ({first.org.id})")
            self.say(f"  API key:      {first.api_key}")
        return app

    def run(self) -> int:
        from control_plane.vault_keys import VaultKeyError

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
        logging.getLogger("alembic").setLevel(logging.WARNING)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: setattr(self, "_stopping", True))
        self._check_ports()  # before the try: what ``stop`` cleans up may be the other gateway's
        try:
            app = self.prepare()
            self._start_redis()
            self._start_planes()
            publisher = app.extensions["mesh.publisher"]
            health = f"http://127.0.0.1:{self.settings.port}/health"
            ready = False
            while not self._stopping:
                with app.app_context():
                    try:
                        publisher.reconcile()
                    except (redis.RedisError, sa.exc.SQLAlchemyError) as exc:
                        log.warning("snapshot reconcile failed (%s); retrying", type(exc).__name__)
                    except VaultKeyError as exc:  # e.g. the keyring file was removed: say so, keep serving
                        log.error("snapshot reconcile failed: %s", exc)
                for name, proc in self.children:
                    if proc.poll() is not None:
                        self.say(f"error: the {name} exited with code {proc.returncode}; stopping")
                        return 1
                if not ready and http_ok(health):
                    ready = True
                    self.say(f"MCP Mesh is up: http://{self.settings.listen_host}:{self.settings.port} "
                             "(MCP clients: /mcp/<connection id>). Ctrl-C stops it.")
                time.sleep(1 if ready else 0.2)
            return 0
        finally:
            self.stop()
