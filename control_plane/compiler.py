"""Turns one organization's rows into the snapshot the data plane enforces (``shared.snapshot``).

Only what the data plane may act on goes in: active connections, and keys that are not revoked
and whose user is still a member of the org, each pointing at the policy it is decided by: its
role's (shared by every key of that role) or, for a narrowed key, its own (role + each of its
scope documents), built by ``shared.policy.principal_documents`` as every reader builds it. A key
whose owner left stops working with the next snapshot; one whose role vanished or whose scope
cannot be read is allowed nothing (fail closed).

Connection secrets are added by ``deliver`` (``control_plane.vault.Vault.deliver``), which seals
them for the data plane; without it a snapshot carries no credentials at all.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from control_plane.models import ApiKey, Connection, Organization, Role, usable_keys
from shared.policy import principal_documents
from shared.vocabulary import Status
from shared.snapshot import ConnectionRoute, KeyGrant, Snapshot


def compile_snapshot(session: Session, org_id: str, deliver=None) -> Snapshot:
    org = session.get(Organization, org_id, populate_existing=True)
    if org is None:
        # Deleted orgs are published as tombstones with a version no live org reaches.
        return Snapshot(org_id=org_id, version=2**62, deleted=True)
    connections = {
        c.id: ConnectionRoute(name=c.name, url=c.url, transport=c.transport, status=c.status,
                              command=c.command or "", args=list(c.args or []), allow_private=c.allow_private)
        for c in session.scalars(sa.select(Connection).where(Connection.org_id == org_id))
        if c.status == Status.ACTIVE
    }
    if deliver is not None:
        connections = deliver(session, org_id, connections)
    custom = dict(session.execute(sa.select(Role.id, Role.permissions).where(Role.org_id == org_id)).all())
    rows = session.execute(usable_keys().where(ApiKey.org_id == org_id))
    policies: dict[str, list[dict[str, Any]]] = {}
    api_keys: dict[str, KeyGrant] = {}
    for key, role in rows:
        documents = principal_documents(role, custom, key.scope)
        policy_id = f"key:{key.id}" if len(documents) > 1 else f"role:{role}"
        policies.setdefault(policy_id, documents)
        api_keys[key.key_hash] = KeyGrant(
            key_id=key.id,
            user_id=key.user_id,
            expires_at=key.expires_at.replace(tzinfo=UTC).timestamp() if key.expires_at else None,
            policy=policy_id,
        )
    return Snapshot(org_id=org_id, version=org.policy_version, connections=connections, api_keys=api_keys,
                    policies=policies)
