"""Who is acting: every service call that reads or changes an org is made on behalf of an
``Actor`` and checked here, in one place, with the one evaluator (``shared.policy``).

``OPERATOR`` is the person at the shell running ``mesh``: they hold the database and the keys
already, so the CLI acts with full rights. Every network interface (web UI, management MCP
server) must build its actor from an authenticated member with ``member_actor``.

An actor from another org gets ``NotFound`` for everything of this org, exactly as if it did not
exist; a member lacking a permission gets ``Forbidden`` naming the permission.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from control_plane.models import Member, Organization, Role, db
from control_plane.services.errors import Forbidden, NotFound
from shared.policy import Policy, PolicyError, role_document


@dataclass(frozen=True)
class Actor:
    user_id: str | None
    org_id: str | None
    role: str | None
    policy: Policy | None  # None: the operator, unrestricted

    @property
    def is_operator(self) -> bool:
        return self.policy is None


OPERATOR = Actor(user_id=None, org_id=None, role=None, policy=None)


def custom_role_documents(org_id: str) -> dict[str, dict[str, Any]]:
    return dict(db.session.execute(sa.select(Role.id, Role.permissions).where(Role.org_id == org_id)).all())


def member_actor(org: Organization, user_id: str, scope: dict | None = None) -> Actor:
    """The actor for a member of ``org`` (optionally narrowed by an API key's scope)."""
    role = db.session.scalar(sa.select(Member.role).where(Member.org_id == org.id, Member.user_id == user_id))
    if role is None:
        raise NotFound("no such organization")
    try:
        docs = [role_document(role, custom_role_documents(org.id))] + ([scope] if scope else [])
        policy = Policy(docs)
    except PolicyError:
        # A role that no longer resolves grants nothing (fail closed).
        policy = Policy([{}])
    return Actor(user_id=user_id, org_id=org.id, role=role, policy=policy)


def require(actor: Actor, org: Organization, permission: str | None = None) -> None:
    """Let ``actor`` act on ``org`` (needing ``permission``, if given), or raise."""
    if actor.is_operator:
        return
    if actor.org_id != org.id:
        raise NotFound("no such organization")
    if permission is not None and not actor.policy.may_manage(permission):
        raise Forbidden(f"the permission {permission!r} is required, and your role ({actor.role}) does not have it")


def require_grantable(actor: Actor, document: dict[str, Any]) -> None:
    """Nobody hands out management rights they do not hold themselves."""
    if actor.is_operator:
        return
    missing = sorted(p for p in document.get("manage", []) if not actor.policy.may_manage(p))
    if missing:
        raise Forbidden(f"you cannot grant management permissions you do not hold: {', '.join(missing)}")
