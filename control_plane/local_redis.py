"""The Redis ``mesh up`` runs itself when ``REDIS_URL`` is not set: where it listens, its
password, and the configuration it is started with. ``runner.py`` starts it; ``settings.py``
builds the URL every process of this installation uses to reach it.

- **Where.** A unix socket in the data dir (``<data dir>/redis.sock``, ``unixsocketperm 700``)
  and no TCP port at all (``port 0``): it cannot collide with another Redis on 6379, and only
  the data dir's owner can reach it (the data dir is 0700 too).
- **Password.** Generated on the first run into ``<data dir>/redis.password`` (0600) and reused
  afterwards, so ``mesh`` commands, which publish too, reach the same Redis with the same
  password. It reaches ``redis-server`` in a configuration read from its stdin
  (``redis-server -``), never on a command line, which every local user can read in ``ps``.
- **Nothing on disk**: no snapshots, no append-only file. The control plane publishes
  everything again when it finds Redis empty.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import quote

SOCKET_NAME = "redis.sock"
PASSWORD_FILE = "redis.password"
# sockaddr_un holds 108 bytes, the terminating NUL included.
MAX_SOCKET_PATH = 107


def socket_path(data_dir: Path) -> Path:
    return data_dir / SOCKET_NAME


def password_file(data_dir: Path) -> Path:
    return data_dir / PASSWORD_FILE


def read_password(data_dir: Path) -> str | None:
    """The password of this data dir's Redis; None before the first ``mesh up``."""
    try:
        password = password_file(data_dir).read_text().strip()
    except FileNotFoundError:
        return None
    if not password:
        raise ValueError(f"{password_file(data_dir)} is empty: delete it and `mesh up` generates a new password")
    return password


def ensure_password(data_dir: Path) -> str:
    """The password, generated (0600) on the first run."""
    try:
        fd = os.open(password_file(data_dir), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_password(data_dir)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    return read_password(data_dir)


def url(data_dir: Path, password: str | None) -> str:
    """The URL of this data dir's Redis (``redis-py`` unquotes the password and the path)."""
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"unix://{auth}{quote(str(socket_path(data_dir)))}?db=0"


def check_socket_path(data_dir: Path) -> None:
    path = os.fsencode(socket_path(data_dir))
    if len(path) > MAX_SOCKET_PATH:
        raise ValueError(f"the data dir's path is too long for Redis's unix socket ({len(path)} bytes of at most "
                         f"{MAX_SOCKET_PATH} for {SOCKET_NAME} in it): use a shorter --data-dir, or set REDIS_URL")


def _quoted(value: str | Path) -> str:
    """A value as Redis's configuration parser reads a double-quoted string."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{text}"'


def server_config(data_dir: Path, password: str) -> str:
    """The configuration ``redis-server -`` reads from its stdin."""
    return "\n".join([
        "port 0",
        f"unixsocket {_quoted(socket_path(data_dir))}",
        "unixsocketperm 700",
        f"requirepass {_quoted(password)}",
        'save ""',
        "appendonly no",
        f"dir {_quoted(data_dir)}",
        "",
    ])
