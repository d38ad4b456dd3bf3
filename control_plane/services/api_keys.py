"""API keys: shown once at creation, stored as a SHA-256 hash with a visible prefix."""

from __future__ import annotations

import sqlalchemy as sa

from control_plane.models import ApiKey, Organization, User, db, utcnow
from control_plane.services import commit_and_publish, org_changed
from control_plane.services.errors import InvalidInput, NotFound
from shared.apikeys import generate_key, hash_key


def create_api_key(org: Organization, user: User, name: str) -> tuple[str, ApiKey]:
    """Returns the key itself (the only time it exists outside the caller) and its row."""
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("an API key needs a name of 1 to 200 characters")
    key, prefix = generate_key()
    row = ApiKey(org_id=org.id, user_id=user.id, name=name, prefix=prefix, key_hash=hash_key(key))
    db.session.add(row)
    org_changed(org.id)
    commit_and_publish(org.id)
    return key, row


def revoke_api_key(org: Organization, key_id: str) -> None:
    row = db.session.scalar(sa.select(ApiKey).where(ApiKey.id == key_id, ApiKey.org_id == org.id))
    if row is None:
        raise NotFound(f"no API key {key_id!r} in {org.slug}")
    row.revoked_at = utcnow()
    org_changed(org.id)
    commit_and_publish(org.id)


def list_api_keys(org: Organization) -> list[ApiKey]:
    return list(db.session.scalars(sa.select(ApiKey).where(ApiKey.org_id == org.id).order_by(ApiKey.created_at)))
