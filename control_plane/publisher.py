"""Publishes compiled snapshots to Redis (formats in ``shared.bus``), each signed with a MAC
under the data-plane key (``shared.snapshot_mac``), and keeps Redis in step with the database.

Publishing right after a change is the fast path. The reconciler is the safety net: if Redis was
down during a change, or restarted empty, ``reconcile()`` finds every org whose published
version lags the database and publishes it again. ``mesh up`` runs it every second. Its first
run also reads every stored snapshot once and publishes again, at the same version, each one
that does not verify under the data-plane key: written by a gateway from before snapshots were
signed, signed under a data-plane key since replaced, or forged. The data planes refuse those,
so without this their orgs would wait for their next change.
"""

from __future__ import annotations

import logging
from typing import Callable

import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

from control_plane.compiler import compile_snapshot
from control_plane.models import Organization
from shared.bus import PUBLISH_SCRIPT, BusKeys, ChangeMessage
from shared.envelope import Keyring
from shared.snapshot import Snapshot
from shared.snapshot_mac import SnapshotRejected, sign_snapshot, verify

log = logging.getLogger(__name__)


class SnapshotPublisher:
    def __init__(self, redis_client: redis.Redis, keys: BusKeys, session_factory,
                 dataplane_keyring: Callable[[], Keyring], deliver=None):
        self.redis = redis_client
        self.keys = keys
        self._session = session_factory  # callable returning the Session to read from
        # The data-plane key, which snapshots are signed under (control_plane.vault; read when
        # first needed, as the vault creates it on a first run).
        self._dataplane_keyring = dataplane_keyring
        self._deliver = deliver  # seals each connection's secrets for the data plane (control_plane.vault)
        self._script = redis_client.register_script(PUBLISH_SCRIPT)
        self._checked_stored = False  # whether reconcile() has checked every stored snapshot's MAC

    @classmethod
    def from_url(cls, url: str, keys: BusKeys, session_factory, dataplane_keyring: Callable[[], Keyring],
                 deliver=None) -> "SnapshotPublisher":
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        return cls(client, keys, session_factory, dataplane_keyring, deliver)

    def publish(self, snapshot: Snapshot, replace: str = "newer") -> bool:
        """Sign, store and announce ``snapshot`` unless Redis already holds this version or a newer
        one (``replace``: ``"same"`` replaces the same version too, ``"any"`` whatever is stored)."""
        message = ChangeMessage(snapshot.org_id, snapshot.version).to_json()
        stored = self._script(
            keys=[self.keys.snapshots, self.keys.versions, self.keys.changes],
            args=[snapshot.org_id, snapshot.version, sign_snapshot(snapshot, self._dataplane_keyring()), message,
                  replace],
        )
        return bool(stored)

    def publish_org(self, org_id: str, replace: str = "newer") -> bool:
        """Compile and publish one org. A Redis outage is logged, not raised: the change is
        committed and the reconciler will publish it when Redis is back."""
        try:
            return self.publish(compile_snapshot(self._session(), org_id, self._deliver), replace)
        except redis.RedisError as exc:
            log.warning("could not publish snapshot of %s (%s); the reconciler will retry", org_id, type(exc).__name__)
            return False

    def key_last_used(self, key_ids: list[str]) -> list[float | None]:
        """When the data planes last saw each key used (None: not seen, or Redis is away)."""
        try:
            return [float(v) if v is not None else None for v in self.redis.hmget(self.keys.key_last_used, key_ids)]
        except redis.RedisError:
            return [None] * len(key_ids)

    def reconcile(self) -> int:
        """Publish every org whose version in Redis is behind the database (or ahead of it: see
        below). Returns how many."""
        session: Session = self._session()
        versions = dict(session.execute(sa.select(Organization.id, Organization.policy_version)).all())
        session.rollback()  # end the read transaction: the next call must see new commits
        if not versions:
            return 0
        org_ids = list(versions)
        published = self.redis.hmget(self.keys.versions, org_ids)
        count = 0
        for org_id, seen in zip(org_ids, published):
            if seen is None or int(seen) < versions[org_id]:
                count += self.publish_org(org_id)
            elif int(seen) > versions[org_id] and self._ahead_of_the_database(org_id, int(seen)):
                # No authentic snapshot is newer than the database: someone wrote the version into
                # Redis (every later publish would be refused, revocations included), or the
                # database was restored from a backup. The database wins.
                log.error("Redis says org %s is at version %d, ahead of the database: publishing the database's",
                          org_id, int(seen))
                count += self.publish_org(org_id, replace="any")
        if not self._checked_stored:
            count += self._replace_unverified(org_ids)
            self._checked_stored = True
        return count

    def _ahead_of_the_database(self, org_id: str, seen: int) -> bool:
        """Whether ``seen`` is still ahead once the database is read again (a change committed
        and published since the first read is not a tampering)."""
        session: Session = self._session()
        try:
            current = session.scalar(sa.select(Organization.policy_version).where(Organization.id == org_id))
        finally:
            session.rollback()
        return current is not None and seen > current

    def _replace_unverified(self, org_ids: list[str]) -> int:
        """Publish again each org whose stored snapshot does not verify (see the module docstring)."""
        keyring, count = self._dataplane_keyring(), 0
        for org_id in org_ids:
            stored = self.redis.hget(self.keys.snapshots, org_id)
            if stored is None:
                continue
            try:
                verify(org_id, stored, keyring)
            except SnapshotRejected as rejection:
                log.warning("the snapshot of %s in Redis is refused by the data planes (%s); publishing it again",
                            org_id, rejection)
                count += self.publish_org(org_id, replace="same")
        return count
