"""Roles: the built-in ``owner``, ``admin`` and ``member``, and custom roles per org whose
permission documents follow ``shared.policy``."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from control_plane import presenters
from control_plane.models import Member, Organization, Role, User, db
from control_plane.services import audit, commit_and_publish, org_changed
from control_plane.services.actors import Actor, custom_role_documents, require, require_grantable
from control_plane.services.errors import Conflict, InvalidInput, NotFound
from control_plane.services.permissions import org_document
from shared.policy import BUILTIN_ROLES, Policy, PolicyError, normalize, principal_documents, scope_layers


def _name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InvalidInput("a role needs a name of 1 to 100 characters")
    if name in BUILTIN_ROLES:
        raise Conflict(f"{name!r} is a built-in role")
    return name


def find_role(org: Organization, ref: str) -> Role:
    role = db.session.scalar(sa.select(Role).where(Role.org_id == org.id, sa.or_(Role.id == ref, Role.name == ref)))
    if role is None:
        raise NotFound(f"no role {ref!r} in {org.slug}")
    return role


def resolve_role(org: Organization, ref: str) -> str:
    """What a member's ``role`` column holds for a role reference: a built-in name or a custom id."""
    return ref if ref in BUILTIN_ROLES else find_role(org, ref).id


def create_role(org: Organization, name: str, permissions: Any, description: str = "", *,
                actor: Actor) -> Role:
    require(actor, org, "roles.manage")
    require_grantable(actor, permissions)  # first: what one may not grant is Forbidden, whatever else is wrong
    document = org_document(org, permissions, "permissions")
    name = _name(name)
    if db.session.scalar(sa.select(Role.id).where(Role.org_id == org.id, Role.name == name)):
        raise Conflict(f"a role named {name!r} already exists in {org.slug}")
    role = Role(org_id=org.id, name=name, description=description[:500], permissions=document)
    db.session.add(role)
    org_changed(org.id)
    audit.record(actor, "role.create", org_id=org.id, target=role)
    commit_and_publish(org.id)
    return role


def update_role(org: Organization, ref: str, *, name: str | None = None, permissions: Any = None,
                description: str | None = None, actor: Actor) -> Role:
    require(actor, org, "roles.manage")
    role = find_role(org, ref)
    before = audit.describe(role)
    if permissions is not None:
        require_grantable(actor, permissions)
        document = org_document(org, permissions, "permissions")
        role.permissions = document
    if name is not None and name != role.name:
        name = _name(name)
        if db.session.scalar(sa.select(Role.id).where(Role.org_id == org.id, Role.name == name)):
            raise Conflict(f"a role named {name!r} already exists in {org.slug}")
        role.name = name
    if description is not None:
        role.description = description[:500]
    org_changed(org.id)
    audit.record(actor, "role.update", org_id=org.id, target=role, before=before)
    commit_and_publish(org.id)
    return role


def delete_role(org: Organization, ref: str, *, actor: Actor) -> None:
    require(actor, org, "roles.manage")
    role = find_role(org, ref)
    holders = db.session.scalar(sa.select(sa.func.count()).select_from(Member).where(Member.role == role.id))
    if holders:
        raise Conflict(f"role {role.name!r} is held by {holders} member(s); give them another role first")
    audit.record(actor, "role.delete", org_id=org.id, target=role, before=audit.describe(role), deleted=True)
    db.session.delete(role)
    org_changed(org.id)
    commit_and_publish(org.id)


def list_roles(org: Organization, *, actor: Actor) -> list[dict[str, Any]]:
    require(actor, org, "members.read")
    builtin = [{"id": name, "name": name, "builtin": True, "description": "", "permissions": normalize(doc)}
               for name, doc in BUILTIN_ROLES.items()]
    custom = [presenters.role(r)
              for r in db.session.scalars(sa.select(Role).where(Role.org_id == org.id).order_by(Role.name))]
    return builtin + custom


def role_names(org: Organization) -> dict[str, str]:
    """What members' roles are called: a built-in role by its name, a custom one by its id."""
    custom = db.session.execute(sa.select(Role.id, Role.name).where(Role.org_id == org.id)).all()
    return {**{name: name for name in BUILTIN_ROLES}, **dict(custom)}


def effective_permissions(org: Organization, user: User, *, scope: Any = None,
                          actor: Actor) -> dict[str, Any]:
    """What ``user`` (through a key narrowed by ``scope``, if given: a document or, as keys store
    it, a list of them) may do in ``org``, decided by the
    same evaluator the data plane runs. ``can(kind, connection_id, name)`` answers single questions."""
    require(actor, org, None if actor.user_id == user.id else "members.read")
    role = db.session.scalar(sa.select(Member.role).where(Member.org_id == org.id, Member.user_id == user.id))
    if role is None:
        raise NotFound(f"{user.email} is not a member of {org.slug}")
    try:
        scope_layers(scope)  # a scope asked about must be valid; a stored one that is not allows nothing
    except PolicyError as error:
        raise InvalidInput(f"invalid scope: {error}") from None
    documents = principal_documents(role, custom_role_documents(org.id), scope)
    policy = Policy(documents)
    return {"role": role, "layers": documents,
            "manage": sorted(p for p in documents[0].get("manage", []) if policy.may_manage(p)),
            "can": policy.allows}
