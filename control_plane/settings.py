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
- ``MESH_MAX_REQUEST_BODY`` largest MCP request body (the data plane's default: ``4m``); larger
                     get 413
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

The settings of the data plane and the bridge reach them as options on their command lines
(``--set name=value``), through one table, ``PLANE_OPTIONS``. Each option's default is written
once, where the addon declares it; a setting left unset here is not passed, so that default
applies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from control_plane import local_redis
from shared.bus import DEFAULT_PREFIX
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
    # None: not set, the data plane's own default applies (its options are declared there).
    max_request_body: str | None = None
    upstream_timeout: str | None = None
    body_read_timeout: str | None = None
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

    @property
    def session_key_file(self) -> Path:
        return self.data_dir / "session.key"

    @property
    def dataplane_key_path(self) -> Path | None:
        """The key file the planes are pointed at: none when ``MESH_DATAPLANE_KEY`` gives the key."""
        return None if self.dataplane_key else self.dataplane_key_file

    @property
    def control_plane_address(self) -> str:
        return f"127.0.0.1:{self.control_plane_port}"

    @property
    def bridge_address(self) -> str:
        return f"127.0.0.1:{self.bridge_port}"

    @property
    def own_ports(self) -> set[int]:
        """Every port the gateway listens on."""
        own = {self.port, self.control_plane_port, self.bridge_port}
        if self.metrics_listen:
            own.add(int(self.metrics_listen.rpartition(":")[2] or 0))
        return own

    @property
    def gateway_ports(self) -> str:
        return ",".join(str(port) for port in sorted(self.own_ports))

    def address_rules(self) -> AddressRules:
        """Where upstream calls may go (``shared.upstream_addresses``): never to the gateway's own
        ports. Raises ``ValueError`` for a bad ``MESH_ALLOW_PRIVATE_UPSTREAMS``."""
        return AddressRules.from_settings(self.allow_private_upstreams, self.own_ports)

    def plane_command_line(self, plane: str) -> list[str]:
        """``--set option=value`` for each of ``plane``'s options that this gateway sets
        (``PLANE_OPTIONS``)."""
        line = []
        for option, attribute, planes in PLANE_OPTIONS:
            value = getattr(self, attribute)
            if plane in planes and value not in (None, ""):
                line += ["--set", f"{option}={value}"]
        return line

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
            **{name: value for name, value in (
                ("MESH_MAX_REQUEST_BODY", self.max_request_body),
                ("MESH_UPSTREAM_TIMEOUT", self.upstream_timeout),
                ("MESH_BODY_READ_TIMEOUT", self.body_read_timeout),
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
            redis_prefix=env.get("MESH_REDIS_PREFIX") or DEFAULT_PREFIX,
            port=port,
            control_plane_port=int(env.get("CONTROL_PLANE_PORT") or port + 1),
            listen_host=env.get("HOST") or "127.0.0.1",
            max_request_body=env.get("MESH_MAX_REQUEST_BODY") or None,
            upstream_timeout=env.get("MESH_UPSTREAM_TIMEOUT") or None,
            body_read_timeout=env.get("MESH_BODY_READ_TIMEOUT") or None,
            encryption_key=env.get("ENCRYPTION_KEY") or None,
            encryption_key_previous=env.get("ENCRYPTION_KEY_PREVIOUS") or None,
            dataplane_key=env.get("MESH_DATAPLANE_KEY") or None,
            bridge_port=int(env.get("MESH_BRIDGE_PORT") or port + 2),
            allow_private_upstreams=env.get("MESH_ALLOW_PRIVATE_UPSTREAMS") or "",
            metrics_token=env.get("MESH_METRICS_TOKEN") or None,
            metrics_listen=env.get("MESH_METRICS_LISTEN") or "",
            stdio_user=env.get("MESH_STDIO_USER") or None,
        )


DATA_PLANE, BRIDGE = "data plane", "bridge"
BOTH = frozenset({DATA_PLANE, BRIDGE})
# Each setting the data plane and the bridge take, as the option (``--set option=value``) its addon
# declares (``dataplane_addon/plane_options.py`` for the ones both planes take), the ``Settings``
# attribute giving its value, and the planes that take it. Never a secret: those travel in the
# environment (``REDIS_URL``, ``MESH_BRIDGE_TOKEN``, ``MESH_DATAPLANE_KEY``, ``MESH_METRICS_TOKEN``).
PLANE_OPTIONS = (
    # option                        Settings attribute         planes
    ("listen_host",                 "listen_host",             {DATA_PLANE}),
    ("listen_port",                 "port",                    {DATA_PLANE}),
    ("mesh_control_plane",          "control_plane_address",   {DATA_PLANE}),
    ("mesh_bridge",                 "bridge_address",          BOTH),  # where the bridge listens
    ("mesh_redis_prefix",           "redis_prefix",            BOTH),
    ("mesh_dataplane_key_file",     "dataplane_key_path",      BOTH),
    ("mesh_allow_private_upstreams", "allow_private_upstreams", BOTH),
    ("mesh_session_secret_file",    "session_key_file",        {DATA_PLANE}),
    ("mesh_max_request_body",       "max_request_body",        {DATA_PLANE}),
    ("mesh_upstream_timeout",       "upstream_timeout",        {DATA_PLANE}),
    ("mesh_body_read_timeout",      "body_read_timeout",       {DATA_PLANE}),
    ("mesh_metrics_listen",         "metrics_listen",          {DATA_PLANE}),
    ("mesh_gateway_ports",          "gateway_ports",           {BRIDGE}),
)


def _local_redis_password(data_dir: Path) -> str | None:
    try:
        return local_redis.read_password(data_dir)
    except (OSError, ValueError):
        return None  # `mesh up` says what is wrong with the file; a command just cannot publish
