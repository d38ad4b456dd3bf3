"""``mesh vault rotate`` and ``mesh vault status``.

Rotation moves every secret in the database under a new master key while the gateway keeps
serving, then retires the old key.

Only the data keys are re-wrapped (``shared.envelope.rewrap``): the ciphertexts, and so the
secrets, do not change, no snapshot changes, and data planes (which use the data-plane key) do
not notice. The steps:

1. Keyring file: a new key is generated and written as the active key beside the old one;
   every process re-reads the file on its next use, so new secrets are sealed under the new key
   from then on. With ``ENCRYPTION_KEY`` the admin has already made the new key active and put
   the old one in ``ENCRYPTION_KEY_PREVIOUS`` (and restarted): nothing is generated.
2. Sweep: rows whose ``key_id`` is not the active key, in batches (one transaction each). Each
   row is updated only if its envelope is still the one that was read (compare-and-set), so a
   secret replaced meanwhile is never overwritten with its old value.
3. A grace period, and another sweep, until one finds nothing: a process that read the old
   keyring just before step 1 may still have been sealing under the old key.
4. Retire: the keyring file is rewritten with the new key only. (With ``ENCRYPTION_KEY`` the
   admin removes ``ENCRYPTION_KEY_PREVIOUS``.)

A row that cannot be opened (damaged, or wrapped under a key no longer held) cannot be moved;
it is reported by connection and field, and its connection is already published as broken.

One rotation at a time: a lock file beside the keyring. Nothing here prints a secret.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import sqlalchemy as sa

from control_plane.models import Connection, ConnectionSecret, db
from control_plane.vault import Vault
from control_plane.vault_keys import VaultKeyError
from shared.credentials import route_origin, vault_context
from shared.envelope import EnvelopeError, Keyring, generate_key, key_id_for, rewrap

MAX_SWEEPS = 10


@dataclass
class RotationReport:
    active_key: str
    retired_keys: list[str]
    rewrapped: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)  # "conn_… field" -> reason (no secrets)
    from_environment: bool = False


@contextmanager
def rotation_lock(vault: Vault):
    path = vault.master.path.with_name(vault.master.path.name + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise VaultKeyError("another `mesh vault rotate` is running") from None
        yield
    finally:
        os.close(fd)


def rotate_master_key(vault: Vault, batch_size: int = 200, grace: float = 2.0, say=lambda text: None) -> RotationReport:
    with rotation_lock(vault):
        if vault.master.from_environment:
            keyring = vault.master_keyring()
            if len(keyring.keys) == 1 and not _pending(keyring.active):
                raise VaultKeyError(
                    "the master key comes from ENCRYPTION_KEY and every secret is already wrapped under it. To "
                    "rotate: generate a key (`openssl rand -base64 32`), set it as ENCRYPTION_KEY and the current "
                    "one as ENCRYPTION_KEY_PREVIOUS for every control-plane process, restart them, and run "
                    "`mesh vault rotate` again.")
            report = RotationReport(keyring.active, [k for k in keyring.keys if k != keyring.active],
                                    from_environment=True)
        else:
            old = vault.master_keyring()
            new_key = generate_key()
            keyring = Keyring(key_id_for(new_key), {**old.keys, key_id_for(new_key): new_key})
            vault.master.write(keyring)
            say(f"new master key {keyring.active} is active; re-wrapping every secret under it")
            report = RotationReport(keyring.active, list(old.keys))

        for sweep in range(MAX_SWEEPS):
            moved = _sweep(vault, keyring.active, batch_size, report, say)
            if sweep > 0 and moved == 0:
                break
            time.sleep(grace)  # let processes that read the old keyring finish what they were sealing

        if not report.from_environment:
            vault.master.write(Keyring.single(keyring.keys[keyring.active]))
        return report


def _with_origin() -> sa.Select:
    """Secret rows with what their envelope is bound to: (id, org, connection, field, envelope,
    transport, url)."""
    return (sa.select(ConnectionSecret.id, ConnectionSecret.org_id, ConnectionSecret.connection_id,
                      ConnectionSecret.field, ConnectionSecret.envelope, Connection.transport, Connection.url)
            .join(Connection, Connection.id == ConnectionSecret.connection_id))


def _pending(active: str) -> bool:
    query = sa.select(ConnectionSecret.id).where(ConnectionSecret.key_id != active).limit(1)
    return db.session.scalar(query) is not None


def _sweep(vault: Vault, active: str, batch_size: int, report: RotationReport, say) -> int:
    """One pass over every row not under ``active``. Returns how many rows it moved."""
    moved, after = 0, ""
    while True:
        rows = db.session.execute(
            _with_origin().where(ConnectionSecret.key_id != active, ConnectionSecret.id > after)
            .order_by(ConnectionSecret.id).limit(batch_size)).all()
        if not rows:
            db.session.rollback()
            return moved
        keyring = vault.master_keyring()
        in_batch = 0
        for row_id, org_id, connection_id, field_name, envelope, transport, url in rows:
            try:
                context = vault_context(org_id, connection_id, field_name, origin=route_origin(transport, url))
                record = rewrap(envelope, context, keyring)
            except (EnvelopeError, ValueError) as error:
                report.unreadable[f"{connection_id} {field_name}"] = type(error).__name__
                continue
            updated = db.session.execute(
                sa.update(ConnectionSecret)
                .where(ConnectionSecret.id == row_id, ConnectionSecret.envelope == envelope)
                .values(envelope=record.to_json(), key_id=record.kid))
            in_batch += updated.rowcount
        db.session.commit()
        moved += in_batch
        report.rewrapped += in_batch
        after = rows[-1][0]
        say(f"re-wrapped {moved} secret(s) so far in this pass")


@dataclass
class VaultStatus:
    source: str  # "ENCRYPTION_KEY" or the keyring file's path
    active_key: str
    held_keys: list[str]
    secrets_by_key: dict[str, int]
    unreadable: dict[str, str]  # "conn_… field" -> reason (no secrets)


def secrets_under_keys_not_held(vault: Vault) -> dict[str, int]:
    """key id -> how many secrets are wrapped under it, for the ids the keyring lacks."""
    held = vault.master_keyring().keys
    counts = db.session.execute(sa.select(ConnectionSecret.key_id, sa.func.count()).group_by(ConnectionSecret.key_id))
    return {kid: count for kid, count in counts if kid not in held}


def vault_status(vault: Vault) -> VaultStatus:
    """Which keys wrap what, and which secrets cannot be opened (each is opened and discarded)."""
    keyring = vault.master_keyring()
    counts = dict(db.session.execute(sa.select(ConnectionSecret.key_id, sa.func.count())
                                     .group_by(ConnectionSecret.key_id)).all())
    unreadable = {}
    for _, org_id, connection_id, field_name, envelope, transport, url in db.session.execute(
            _with_origin().order_by(ConnectionSecret.connection_id, ConnectionSecret.field)):
        try:
            vault.open_secret(org_id, connection_id, field_name, envelope, origin=route_origin(transport, url))
        except (EnvelopeError, ValueError) as error:
            unreadable[f"{connection_id} {field_name}"] = type(error).__name__
    db.session.rollback()
    source = "ENCRYPTION_KEY" if vault.master.from_environment else str(vault.master.path)
    return VaultStatus(source, keyring.active, sorted(keyring.keys), counts, unreadable)
