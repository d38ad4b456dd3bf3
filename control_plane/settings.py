"""Configuration from the environment, read once by whoever starts a process.

- ``MESH_DATA_DIR``  (default ``./data``) where SQLite, keys and the local Redis live
- ``DATABASE_URL``   (default ``sqlite:///<data dir>/mesh.db``); ``postgresql://…`` uses psycopg,
                     ``mysql://…`` or ``mariadb://…`` uses PyMySQL
- ``REDIS_URL``      ``redis://[user:password@]host:port/db``, ``rediss://…`` (TLS) or
                     ``unix://[user:password@]/path?db=N``. Unset: the Redis ``mesh up`` runs itself
                     on a unix socket in the data dir, with the password of
                     ``<data dir>/redis.password`` (``control_plane.local_redis``)
- ``MESH_REDIS_PREFIX`` key prefix in Redis (default ``mesh``)
- ``PORT``           the gateway's single front door (default 3000)
- ``HOST``           the address it listens on (default 127.0.0.1; 0.0.0.0 in containers)
- ``CONTROL_PLANE_PORT`` the Flask app's internal port on 127.0.0.1 (default PORT + 1)
- ``MESH_MAX_REQUEST_BODY`` largest MCP request body (default ``4m``); larger get 413
- ``MESH_UPSTREAM_TIMEOUT`` seconds an upstream may take to start answering (default 60); then 504
- ``MESH_BODY_READ_TIMEOUT`` seconds a client may take to send a request body (default 30); then
                     its connection is closed
- ``ENCRYPTION_KEY`` the vault's master key (32 bytes, base64 or hex); unset: a keyring file
                     ``<data dir>/mesh.key`` generated on first run (``control_plane.vault_keys``)
- ``ENCRYPTION_KEY_PREVIOUS`` during a rotation with ``ENCRYPTION_KEY``: the key being replaced
- ``MESH_DATAPLANE_KEY`` the key secrets are wrapped under for the data plane; unset: the file
                     ``<data dir>/dataplane.key``, generated on first run
- ``MESH_BRIDGE_PORT`` the bridge's port on 127.0.0.1 for stdio and sse connections (default PORT + 2)
- ``MESH_ALLOW_PRIVATE_UPSTREAMS`` comma-separated CIDRs of loopback/private addresses that
                     connections registered over the network may reach (default: none)
- ``MESH_METRICS_TOKEN`` bearer token for ``/metrics`` and the detailed ``/health`` on the public
                     port (default: none, so they are closed there)
- ``MESH_METRICS_LISTEN`` HOST:PORT serving ``/metrics`` and the detailed ``/health`` without a
                     token (default: nowhere)
- ``MESH_STDIO_USER`` a user name or uid the bridge runs stdio servers as (needs root); unset:
                     the gateway's own user

The key values and the URLs (which may carry passwords) are kept out of ``repr`` so a logged
``Settings`` never shows them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from control_plane import local_redis
from shared.upstream_addresses import AddressRules


def normalize_database_url(url: str) -> str:
    """Pick the drivers we ship for the URL schemes people write."""
    for plain, driver in (
        ("postgres://", "postgresql+psycopg://"),
        ("postgresql://", "postgresql+psycopg://"),
        ("mysql://", "mysql+pymysql://"),
        ("mariadb://", "mysql+pymysql://"),
        ("mariadb+pymysql://", "mysql+pymysql://"),
    ):
        if url.startswith(plain):
            url = driver + url[len(plain):]
            break
    if url.startswith("mysql+pymysql://") and "charset=" not in url:
        url += ("&" if "?" in url else "?") + "charset=utf8mb4"
    return url


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str = field(repr=False)
    redis_url: str = field(repr=False)
    redis_url_configured: bool
    redis_prefix: str
    port: int
    control_plane_port: int
    listen_host: str = "127.0.0.1"
    max_request_body: str = "4m"
    upstream_timeout: float = 60.0
    body_read_timeout: float = 30.0
    encryption_key: str | None = field(default=None, repr=False)
    encryption_key_previous: str | None = field(default=None, repr=False)
    dataplane_key: str | None = field(default=None, repr=False)

    @property
    def master_key_file(self) -> Path:
        return self.data_dir / "mesh.key"

    @property
    def dataplane_key_file(self) -> Path:
        return self.data_dir / "dataplane.key"
    bridge_port: int = 0  # from_env: PORT + 2 unless MESH_BRIDGE_PORT says otherwise
    allow_private_upstreams: str = ""
    metrics_token: str | None = field(default=None, repr=False)
    metrics_listen: str = ""
    stdio_user: str | None = None

    def address_rules(self) -> AddressRules:
        """Where upstream calls may go (``shared.upstream_addresses``): never to the gateway's own
        ports. Raises ``ValueError`` for a bad ``MESH_ALLOW_PRIVATE_UPSTREAMS``."""
        own = {self.port, self.control_plane_port, self.bridge_port}
        if self.metrics_listen:
            own.add(int(self.metrics_listen.rpartition(":")[2] or 0))
        return AddressRules.from_settings(self.allow_private_upstreams, own)

    def child_env(self) -> dict[str, str]:
        """The environment that makes a child process see exactly these settings."""
        return {
            "MESH_DATA_DIR": str(self.data_dir),
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "MESH_REDIS_PREFIX": self.redis_prefix,
            "PORT": str(self.port),
            "CONTROL_PLANE_PORT": str(self.control_plane_port),
            "HOST": self.listen_host,
            "MESH_MAX_REQUEST_BODY": self.max_request_body,
            "MESH_UPSTREAM_TIMEOUT": str(self.upstream_timeout),
            "MESH_BODY_READ_TIMEOUT": str(self.body_read_timeout),
            **{name: value for name, value in (
                ("ENCRYPTION_KEY", self.encryption_key),
                ("ENCRYPTION_KEY_PREVIOUS", self.encryption_key_previous),
                ("MESH_DATAPLANE_KEY", self.dataplane_key),
            ) if value},
            "MESH_BRIDGE_PORT": str(self.bridge_port),
            "MESH_ALLOW_PRIVATE_UPSTREAMS": self.allow_private_upstreams,
            "MESH_METRICS_LISTEN": self.metrics_listen,
            **({"MESH_METRICS_TOKEN": self.metrics_token} if self.metrics_token else {}),
        }

    @classmethod
    def from_env(cls, data_dir: str | os.PathLike | None = None, env: dict | None = None) -> "Settings":
        env = os.environ if env is None else env
        directory = Path(data_dir or env.get("MESH_DATA_DIR") or "data").resolve()
        database_url = env.get("DATABASE_URL") or f"sqlite:///{directory / 'mesh.db'}"
        port = int(env.get("PORT") or 3000)
        return cls(
            data_dir=directory,
            database_url=normalize_database_url(database_url),
            redis_url=env.get("REDIS_URL") or local_redis.url(directory, _local_redis_password(directory)),
            redis_url_configured=bool(env.get("REDIS_URL")),
            redis_prefix=env.get("MESH_REDIS_PREFIX") or "mesh",
            port=port,
            control_plane_port=int(env.get("CONTROL_PLANE_PORT") or port + 1),
            listen_host=env.get("HOST") or "127.0.0.1",
            max_request_body=env.get("MESH_MAX_REQUEST_BODY") or "4m",
            upstream_timeout=float(env.get("MESH_UPSTREAM_TIMEOUT") or 60),
            body_read_timeout=float(env.get("MESH_BODY_READ_TIMEOUT") or 30),
            encryption_key=env.get("ENCRYPTION_KEY") or None,
            encryption_key_previous=env.get("ENCRYPTION_KEY_PREVIOUS") or None,
            dataplane_key=env.get("MESH_DATAPLANE_KEY") or None,
            bridge_port=int(env.get("MESH_BRIDGE_PORT") or port + 2),
            allow_private_upstreams=env.get("MESH_ALLOW_PRIVATE_UPSTREAMS") or "",
            metrics_token=env.get("MESH_METRICS_TOKEN") or None,
            metrics_listen=env.get("MESH_METRICS_LISTEN") or "",
            stdio_user=env.get("MESH_STDIO_USER") or None,
        )


def _local_redis_password(data_dir: Path) -> str | None:
    try:
        return local_redis.read_password(data_dir)
    except (OSError, ValueError):
        return None  # `mesh up` says what is wrong with the file; a command just cannot publish
