"""Where the vault's two keys come from, and the only code that writes key files.

The master key (wraps every secret at rest in the database):

- ``ENCRYPTION_KEY`` set: that key is active. During a rotation ``ENCRYPTION_KEY_PREVIOUS``
  holds the key being replaced, so records still wrapped under it open until
  ``mesh vault rotate`` has re-wrapped them; then the admin removes it.
- unset: a keyring file, ``<data dir>/mesh.key`` (mode 0600), generated on first use with a
  warning to back it up::

      {"format": "mesh-keyring/1", "active": "k…", "keys": {"k…": "<base64 of 32 bytes>"}}

  ``mesh vault rotate`` adds a new active key to it and removes the old one once every record
  is re-wrapped. Processes re-read the file whenever it changes (one ``stat`` per use), so the
  running gateway sees a rotation made by another process at once.

The data-plane key (wraps secrets delivered to the data plane through Redis):
``MESH_DATAPLANE_KEY``, or else ``<data dir>/dataplane.key`` (one line of base64, mode 0600),
generated on first use. ``mesh up`` hands the file's path to the data plane; a data plane on
another machine gets the same key through ``MESH_DATAPLANE_KEY``.

Files are written to a temporary name and linked or renamed into place, so no reader ever sees
half a key and two processes creating the same file at once agree on one key.

Must not: print, log or put key material into an error; errors name the variable or the file.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import tempfile
import threading
from pathlib import Path

from control_plane.services.errors import ServiceError
from control_plane.settings import Settings
from shared.envelope import Keyring, KeyFormatError, encode_key, generate_key, key_id_for, parse_key

log = logging.getLogger(__name__)

KEYRING_FORMAT = "mesh-keyring/1"
BACKUP_WARNING = ("Back this file up now, somewhere other than this machine: without it the secrets "
                  "stored in the vault cannot be recovered.")


class VaultKeyError(ServiceError):
    """The vault's keys are missing or unusable. Shown to the admin as is; never holds a key."""


class MasterKeys:
    """The master keyring of one installation, read from the environment or the keyring file."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = settings.master_key_file
        self._lock = threading.Lock()
        self._env_keyring: Keyring | None = None
        self._file_keyring: Keyring | None = None
        self._file_stamp: tuple | None = None

    @property
    def from_environment(self) -> bool:
        return bool(self.settings.encryption_key)

    def keyring(self) -> Keyring:
        """The current keyring, creating the keyring file on first use."""
        if self.from_environment:
            if self._env_keyring is None:
                self._env_keyring = self._keyring_from_environment()
            return self._env_keyring
        with self._lock:
            stamp = _stamp(self.path)
            if stamp is None:
                self._create_file()
                stamp = _stamp(self.path)
            if stamp != self._file_stamp or self._file_keyring is None:
                self._file_keyring, self._file_stamp = read_keyring_file(self.path), stamp
            return self._file_keyring

    def write(self, keyring: Keyring) -> None:
        """Replace the keyring file (rotation). Only for the file-based keyring."""
        if self.from_environment:
            raise VaultKeyError("the master key comes from ENCRYPTION_KEY: change it in the environment")
        _replace_file(self.path, _keyring_text(keyring))

    def _keyring_from_environment(self) -> Keyring:
        try:
            active = parse_key(self.settings.encryption_key, "ENCRYPTION_KEY")
            previous = (parse_key(self.settings.encryption_key_previous, "ENCRYPTION_KEY_PREVIOUS")
                        if self.settings.encryption_key_previous else None)
        except KeyFormatError as error:
            raise VaultKeyError(str(error)) from None
        return Keyring.of(active, previous) if previous else Keyring.single(active)

    def _create_file(self) -> None:
        key = generate_key()
        if _create_file_once(self.path, _keyring_text(Keyring.single(key))):
            log.warning("generated the vault's master key in %s (mode 0600). %s", self.path, BACKUP_WARNING)


def read_keyring_file(path: Path) -> Keyring:
    _warn_if_readable_by_others(path)
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != KEYRING_FORMAT:
            raise ValueError
        keys = {kid: parse_key(text, f"key {kid} in {path}") for kid, text in doc["keys"].items()}
        for kid, key in keys.items():
            if key_id_for(key) != kid:
                raise VaultKeyError(f"{path}: key {kid} does not match its id (the file was edited or damaged)")
        return Keyring(doc["active"], keys)
    except VaultKeyError:
        raise
    except KeyFormatError as error:
        raise VaultKeyError(str(error)) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise VaultKeyError(f"{path} is not a readable MCP Mesh keyring ({KEYRING_FORMAT}); restore it from "
                            "your backup, or set ENCRYPTION_KEY") from None


def dataplane_keyring(settings: Settings) -> Keyring:
    """The data-plane key, from ``MESH_DATAPLANE_KEY`` or its file (generated on first use)."""
    try:
        if settings.dataplane_key:
            return Keyring.single(parse_key(settings.dataplane_key, "MESH_DATAPLANE_KEY"))
        path = settings.dataplane_key_file
        if _stamp(path) is None and _create_file_once(path, encode_key(generate_key()) + "\n"):
            log.info("generated the data-plane key in %s (mode 0600)", path)
        return read_dataplane_key_file(path)
    except KeyFormatError as error:
        raise VaultKeyError(str(error)) from None


def read_dataplane_key_file(path: Path) -> Keyring:
    """One line of base64 or hex."""
    _warn_if_readable_by_others(path)
    try:
        text = path.read_text()
    except OSError:
        raise VaultKeyError(f"cannot read the data-plane key file {path}") from None
    try:
        return Keyring.single(parse_key(text, f"the data-plane key in {path}"))
    except KeyFormatError as error:
        raise VaultKeyError(str(error)) from None


def _keyring_text(keyring: Keyring) -> str:
    return json.dumps({"format": KEYRING_FORMAT, "active": keyring.active,
                       "keys": {kid: encode_key(key) for kid, key in keyring.keys.items()}}, indent=2) + "\n"


def _stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _write_temporary(directory: Path, text: str) -> str:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".key-")  # mkstemp creates it 0600
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return temporary


def _create_file_once(path: Path, text: str) -> bool:
    """Create ``path`` with ``text`` unless it exists. True if this call created it."""
    temporary = _write_temporary(path.parent, text)
    try:
        os.link(temporary, path)  # atomic, and fails if another process got there first
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(temporary)


def _replace_file(path: Path, text: str) -> None:
    temporary = _write_temporary(path.parent, text)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)


def _warn_if_readable_by_others(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s can be read by other users (mode %o); run: chmod 600 %s", path, mode & 0o777, path)
