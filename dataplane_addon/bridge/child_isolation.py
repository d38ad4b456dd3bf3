"""What keeps a stdio child apart from the bridge that runs it: the user it runs as, the
environment it gets and the directory it works in. ``upstream_session.py`` starts the child with
what this module gives it; nothing here starts a process.

- **User.** ``MESH_STDIO_USER`` (a user name or uid, read by the bridge) runs every child as that
  user, with its primary group and no supplementary groups, through ``setpriv`` (util-linux:
  ``--reuid --regid --clear-groups --no-new-privs``, so a set-uid program cannot raise it back).
  Switching needs root: a bridge that is not root refuses to start when the variable names
  another user, rather than quietly running the children as itself. Unset, children run as
  the bridge's own user.
- **Environment.** The SDK's short default list (``mcp.client.stdio.get_default_environment``:
  ``HOME``, ``LOGNAME``, ``PATH``, ``SHELL``, ``TERM``, ``USER`` from the bridge's own), with
  ``HOME``, ``USER``, ``LOGNAME`` and ``SHELL`` of the child's user when it runs as another one,
  then the connection's own ``env``. Nothing else of the bridge's environment (its token, the
  data-plane key, the Redis URL) ever reaches a child.
- **Working directory.** Each start of a child gets a fresh empty directory of its own (mode
  0700, owned by the child's user) under the bridge's run directory in the system's temporary
  directory, never in the data dir; it is removed when that child stops.

The run directory holds the pid files too (written before the user is switched, so a child
cannot rewrite them). It is 0700, or 0711 when children run as another user: they may pass
through it to their own directory but cannot list it.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STDIO_USER_ENV = "MESH_STDIO_USER"

log = logging.getLogger("mesh.bridge")


class StdioUserError(Exception):
    """``MESH_STDIO_USER`` cannot be honoured; the message tells the operator why."""


@dataclass(frozen=True, slots=True)
class ChildUser:
    """Another user the children run as (never the bridge's own)."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str
    setpriv: str

    def command_prefix(self) -> list[str]:
        """What runs the command as this user: it ``exec``s it, so the pid stays the same."""
        return [self.setpriv, f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--no-new-privs", "--"]

    def environment(self) -> dict[str, str]:
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name, "SHELL": self.shell}


def resolve_stdio_user(spec: str | None, euid: int | None = None) -> ChildUser | None:
    """The user named by ``MESH_STDIO_USER`` (``spec``), or None when children run as the bridge's
    own user (unset, or naming that very user). Raises ``StdioUserError`` when it cannot be used."""
    spec = (spec or "").strip()
    if not spec:
        return None
    try:
        entry = pwd.getpwuid(int(spec)) if spec.isdigit() else pwd.getpwnam(spec)
    except (KeyError, OverflowError):
        raise StdioUserError(f"{STDIO_USER_ENV}={spec}: no such user on this machine") from None
    euid = os.geteuid() if euid is None else euid
    if entry.pw_uid == euid:
        return None
    if euid != 0:
        raise StdioUserError(
            f"{STDIO_USER_ENV}={spec}: the bridge runs as uid {euid}, not root, so it cannot start stdio servers as "
            f"{entry.pw_name} (uid {entry.pw_uid}); run mesh up as root, or unset {STDIO_USER_ENV}")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise StdioUserError(f"{STDIO_USER_ENV}={spec}: setpriv (util-linux) is not installed; it is what switches "
                             "the stdio servers to that user")
    return ChildUser(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell, setpriv)


@dataclass(frozen=True, slots=True)
class ChildIsolation:
    """Where and as whom the bridge's stdio children run (see the module docstring)."""

    run_dir: Path
    user: ChildUser | None = None

    @classmethod
    def prepare(cls, run_dir: Path, user: ChildUser | None) -> ChildIsolation:
        run_dir.chmod(0o711 if user else 0o700)
        if user:
            log.info("stdio servers run as %s (uid %d, gid %d)", user.name, user.uid, user.gid)
        return cls(run_dir, user)

    def pid_file(self, connection_id: str) -> Path:
        return self.run_dir / f"{connection_id}.pid"

    def command_prefix(self) -> list[str]:
        return self.user.command_prefix() if self.user else []

    def environment(self, own: dict[str, str]) -> dict[str, str]:
        """What the child gets over the SDK's default list: its user's identity, then ``own``
        (the connection's env), which wins."""
        return {**(self.user.environment() if self.user else {}), **own}

    @contextmanager
    def working_directory(self) -> Iterator[Path]:
        """A fresh empty directory for one run of one child, removed afterwards with whatever
        the child left in it."""
        with tempfile.TemporaryDirectory(prefix="cwd-", dir=self.run_dir, ignore_cleanup_errors=True) as path:
            if self.user:
                os.chown(path, self.user.uid, self.user.gid)
            yield Path(path)
