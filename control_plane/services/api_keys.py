"""API keys: shown once at creation, stored as a SHA-256 hash with a visible prefix, optionally
narrowed to part of the owner's permissions and optionally expiring.

Members make and revoke their own keys; ``keys.manage`` lets an admin list and revoke anyone's.
Nobody but the operator mints a key for someone else (that would be impersonation).

A key made through another key never outgrows it: it carries the creating key's scope
documents before its own (``ApiKey.scope`` is then a list of documents that must all allow),
and expires no later than the creating key."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from flask import current_app

from control_plane.models import ApiKey, Member, Organization, User, db, utcnow
from control_plane.services import audit, commit_and_publish, org_changed
from control_plane.services.actors import Actor, require
from control_plane.services.errors import Forbidden, InvalidInput, NotFound
from control_plane.services.permissions import org_document
from shared.apikeys import generate_key, hash_key


def create_api_key(org: Organization, user: User, name: str, *, scope: Any = None,
                   expires_at: datetime | None = None, actor: Actor) -> tuple[str, ApiKey]:
    """Returns the key itself (the only time it exists outside the caller) and its row.
    ``scope`` (a permission document) narrows the key; an ``actor`` acting through a key narrows
    it further by that key's scope and caps its expiry at that key's."""
    require(actor, org)
    if not actor.is_operator and actor.user_id != user.id:
        raise Forbidden("API keys can only be created by their own user")
    if not db.session.scalar(sa.select(Member.id).where(Member.org_id == org.id, Member.user_id == user.id)):
        raise NotFound(f"{user.email} is not a member of {org.slug}")
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise InvalidInput("an API key needs a name of 1 to 200 characters")
    layers = list(actor.scope)  # made through a narrowed key: narrowed by it first
    if scope is not None:
        layers.append(org_document(org, scope, "scope"))
    limit = actor.key.expires_at if actor.key is not None else None
    if limit is not None and (expires_at is None or expires_at > limit):
        expires_at = limit  # no key outlives the key that made it
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidInput("the expiry must be in the future")
    key, prefix = generate_key()
    row = ApiKey(org_id=org.id, user_id=user.id, name=name, prefix=prefix, key_hash=hash_key(key),
                 scope=layers or None, expires_at=expires_at)
    db.session.add(row)
    org_changed(org.id)
    audit.record(actor, "api_key.create", org_id=org.id, target=row)
    commit_and_publish(org.id)
    return key, row


def _visible(org: Organization, actor: Actor):
    query = sa.select(ApiKey).where(ApiKey.org_id == org.id)
    if not actor.is_operator and not actor.policy.may_manage("keys.manage"):
        query = query.where(ApiKey.user_id == actor.user_id)
    return query


def revoke_api_key(org: Organization, key_id: str, *, actor: Actor) -> ApiKey:
    require(actor, org)
    row = db.session.scalar(_visible(org, actor).where(ApiKey.id == key_id))
    if row is None:
        raise NotFound(f"no API key {key_id!r} in {org.slug}")
    if row.revoked_at is None:
        before = audit.describe(row)
        row.revoked_at = utcnow()
        org_changed(org.id)
        audit.record(actor, "api_key.revoke", org_id=org.id, target=row, before=before)
        commit_and_publish(org.id)
    return row


def list_api_keys(org: Organization, *, actor: Actor) -> list[ApiKey]:
    """Keys the actor may see, with ``last_used_at`` brought up to date from what the data
    planes reported (they note use in Redis, at most once a minute per key)."""
    require(actor, org)
    rows = list(db.session.scalars(_visible(org, actor).order_by(ApiKey.created_at)))
    publisher = current_app.extensions.get("mesh.publisher")
    if publisher is not None and rows:
        for row, seen in zip(rows, publisher.key_last_used([r.id for r in rows])):
            if seen is not None:
                used = datetime.fromtimestamp(seen, UTC).replace(tzinfo=None)  # naive UTC, as stored
                if row.last_used_at is None or used > row.last_used_at:
                    row.last_used_at = used
        db.session.commit()
    return rows
