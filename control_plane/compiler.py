"""Turns one organization's rows into the snapshot the data plane enforces (``shared.snapshot``).

Only what the data plane may act on goes in: active connections, and keys that are not revoked
and whose user is still a member of the org. A key whose owner left stops working with the
next snapshot, without anyone revoking it.

Connection secrets are added by ``deliver`` (``control_plane.vault.Vault.deliver``), which seals
them for the data plane; without it a snapshot carries no credentials at all.
"""

from __future__ import annotations

from datetime import UTC

import sqlalchemy as sa
from sqlalchemy.orm import Session

from control_plane.models import ApiKey, Connection, Member, Organization
from shared.snapshot import ConnectionRoute, KeyGrant, Snapshot


def compile_snapshot(session: Session, org_id: str, deliver=None) -> Snapshot:
    org = session.get(Organization, org_id, populate_existing=True)
    if org is None:
        # Deleted orgs are published as tombstones with a version no live org reaches.
        return Snapshot(org_id=org_id, version=2**62, deleted=True)
    connections = {
        c.id: ConnectionRoute(name=c.name, url=c.url, transport=c.transport, status=c.status)
        for c in session.scalars(sa.select(Connection).where(Connection.org_id == org_id))
        if c.status == "active"
    }
    if deliver is not None:
        connections = deliver(session, org_id, connections)
    keys = session.scalars(
        sa.select(ApiKey)
        .join(Member, sa.and_(Member.org_id == ApiKey.org_id, Member.user_id == ApiKey.user_id))
        .where(ApiKey.org_id == org_id, ApiKey.revoked_at.is_(None))
    )
    api_keys = {
        k.key_hash: KeyGrant(
            key_id=k.id,
            user_id=k.user_id,
            expires_at=k.expires_at.replace(tzinfo=UTC).timestamp() if k.expires_at else None,
        )
        for k in keys
    }
    return Snapshot(org_id=org_id, version=org.policy_version, connections=connections, api_keys=api_keys)
