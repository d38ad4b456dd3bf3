"""Who is acting: every service call that reads or changes an org is made on behalf of an
``Actor`` and checked here, in one place, with the one evaluator (``shared.policy``).

``OPERATOR`` is the person at the shell running ``mesh``: they hold the database and the keys
already, so the CLI acts with full rights. Every network interface (web UI, management MCP
server) must build its actor from an authenticated member with ``member_actor``, and say which
API key it acts through (``KeyBinding``), if any.

An actor acting through a key is bound by that key, in every service: its scope narrows the
member's role (``policy``), a key with a scope acts only in its own org, and what it creates
stays within it (``api_keys.create_api_key``, ``orgs.create_org``, ``require_grantable``).

An actor from another org gets ``NotFound`` for everything of this org, exactly as if it did not
exist; a member lacking a permission gets ``Forbidden`` naming the permission.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from control_plane.models import Member, Organization, Role, db
from control_plane.services.errors import Forbidden, NotFound
from shared.policy import KINDS, Policy, PolicyError, normalize, principal_documents

# How many refused grants an error names before "and N more".
_NAMED = 5


@dataclass(frozen=True)
class KeyBinding:
    """The API key an actor acts through."""

    key_id: str
    org_id: str  # the org the key belongs to
    scope: tuple[dict[str, Any], ...] = ()  # narrowing documents that must all allow; () = unscoped
    expires_at: datetime | None = None  # naive UTC, like every timestamp in the database


@dataclass(frozen=True)
class Actor:
    user_id: str | None
    org_id: str | None
    role: str | None
    policy: Policy | None  # None: the operator, unrestricted
    key: KeyBinding | None = None  # the API key acted through (network interfaces)

    @property
    def is_operator(self) -> bool:
        return self.policy is None

    @property
    def scope(self) -> tuple[dict[str, Any], ...]:
        """The narrowing documents of the key acted through (none: not narrowed)."""
        return self.key.scope if self.key is not None else ()

    @property
    def is_scoped(self) -> bool:
        return bool(self.scope)


OPERATOR = Actor(user_id=None, org_id=None, role=None, policy=None)


def custom_role_documents(org_id: str) -> dict[str, dict[str, Any]]:
    return dict(db.session.execute(sa.select(Role.id, Role.permissions).where(Role.org_id == org_id)).all())


def member_actor(org: Organization, user_id: str, key: KeyBinding | None = None) -> Actor:
    """The actor for a member of ``org``, acting through ``key`` if given: its scope narrows the
    member's role, and a key with a scope reaches no org but its own."""
    if key is not None and key.scope and key.org_id != org.id:
        raise NotFound("no such organization")
    role = db.session.scalar(sa.select(Member.role).where(Member.org_id == org.id, Member.user_id == user_id))
    if role is None:
        raise NotFound("no such organization")
    policy = Policy(principal_documents(role, custom_role_documents(org.id), (key.scope or None) if key else None))
    return Actor(user_id=user_id, org_id=org.id, role=role, policy=policy, key=key)


def require(actor: Actor, org: Organization, permission: str | None = None) -> None:
    """Let ``actor`` act on ``org`` (needing ``permission``, if given), or raise."""
    if actor.is_operator:
        return
    if actor.org_id != org.id:
        raise NotFound("no such organization")
    if permission is not None and not actor.policy.may_manage(permission):
        raise Forbidden(f"the permission {permission!r} is required, and your role ({actor.role}) does not have it")


def require_grantable(actor: Actor, document: dict[str, Any]) -> None:
    """Nobody hands out rights they do not hold themselves: neither management permissions nor
    tools, prompts or resources (a role's, a key scope's, narrowed). A name with ``*`` is held
    only when the actor's own patterns cover the pattern itself (``LIST_*`` is covered by
    ``LIST_*`` or ``*``, not by ``LIST_USERS``), and a grant on every connection (``*``) only by
    the actor's own grants on every connection: a conservative check that never lets more
    through."""
    if actor.is_operator:
        return
    try:
        document = normalize(document)
    except PolicyError:
        return  # an invalid document grants nothing; the caller's own validation names the error
    missing = sorted(p for p in document["manage"] if not actor.policy.may_manage(p))
    if missing:
        raise Forbidden(f"you cannot grant management permissions you do not hold: {', '.join(missing)}")
    beyond = [f"{kind} {name!r} on {connection}" for kind in KINDS
              for connection, names in document[kind].items() for name in names
              if not actor.policy.covers(kind, connection, name)]
    if beyond:
        more = f" and {len(beyond) - _NAMED} more" if len(beyond) > _NAMED else ""
        raise Forbidden(f"you cannot grant what you do not hold yourself: {', '.join(beyond[:_NAMED])}{more}")
