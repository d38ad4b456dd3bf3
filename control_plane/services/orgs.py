"""Users, organizations and memberships."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from argon2 import PasswordHasher

from control_plane import outbox
from control_plane.models import Invitation, Member, Organization, User, db, utcnow
from control_plane.services import audit, commit_and_publish, org_changed
from control_plane.services.actors import OPERATOR, Actor, custom_role_documents, require, require_grantable
from control_plane.services.errors import Conflict, Forbidden, InvalidInput, NotFound, ServiceError
from shared.apikeys import hash_key
from shared.policy import role_document

_hasher = PasswordHasher()


def _slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:60] or "org"


MIN_PASSWORD = 12


def create_user(email: str, password: str | None) -> User:
    """An account; every way of making one (``mesh users create``, accepting an invitation, the
    first run) holds its password to the same rule."""
    email = email.strip().lower()
    if "@" not in email or len(email) > 255:
        raise InvalidInput(f"not an email address: {email!r}")
    if not password or len(password) < MIN_PASSWORD:
        raise InvalidInput(f"a new account needs a password of at least {MIN_PASSWORD} characters")
    if db.session.scalar(sa.select(User.id).where(User.email == email)):
        raise Conflict(f"a user with email {email} already exists")
    user = User(email=email, password_hash=_hasher.hash(password))
    db.session.add(user)
    audit.record(OPERATOR, "user.create", org_id=None, target=user)
    db.session.commit()
    return user


def _org_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise InvalidInput("an organization needs a name of 1 to 200 characters")
    return name


def _free_slug(slug: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,99}", slug):
        raise InvalidInput("a slug is 1 to 100 lowercase letters, digits and dashes")
    if db.session.scalar(sa.select(Organization.id).where(Organization.slug == slug)):
        raise Conflict(f"an organization with slug {slug!r} already exists")
    return slug


def create_org(name: str, owner: User, slug: str | None = None, *, actor: Actor) -> Organization:
    """A new org with ``owner`` as its first owner (any user may create one, but not through a
    key narrowed by a scope: an org of one's own would hold every right the scope withholds)."""
    if not actor.is_operator and actor.user_id != owner.id:
        raise Forbidden("an organization is created with yourself as its owner")
    if actor.is_scoped:
        raise Forbidden("an API key narrowed by a scope cannot create organizations; use a key without a scope")
    name = _org_name(name)
    slug = _free_slug(slug or _slugify(name))
    org = Organization(name=name, slug=slug, policy_version=1)
    db.session.add(org)
    db.session.flush()
    db.session.add(Member(org_id=org.id, user_id=owner.id, role="owner"))
    audit.record(actor, "organization.create", org_id=org.id, target=org)
    commit_and_publish(org.id)
    return org


def update_org(org: Organization, *, name: str | None = None, slug: str | None = None,
               actor: Actor) -> Organization:
    require(actor, org, "org.update")
    before = audit.describe(org)
    if name is not None:
        org.name = _org_name(name)
    if slug is not None and slug != org.slug:
        org.slug = _free_slug(slug)
    audit.record(actor, "organization.update", org_id=org.id, target=org, before=before)
    db.session.commit()
    return org


def delete_org(org: Organization, *, actor: Actor) -> None:
    """Delete the org and everything in it; every data plane forgets it (a tombstone snapshot)."""
    require(actor, org, "org.delete")
    before = audit.describe(org)
    org_id = org.id
    from control_plane.models import ApiKey, Connection, ConnectionSecret, Invitation, Role

    # Explicitly, in this transaction, rather than by ON DELETE CASCADE alone: no sealed secret
    # may outlive its org (rotation would keep re-wrapping it).
    for model in (ApiKey, Invitation, ConnectionSecret, Connection, Member, Role):
        db.session.execute(sa.delete(model).where(model.org_id == org_id))
    audit.record(actor, "organization.delete", org_id=org_id, target=org, before=before, deleted=True)
    db.session.delete(org)
    commit_and_publish(org_id)


def orgs_of(actor: Actor) -> list[Organization]:
    """The orgs the actor belongs to (all of them, for the operator; only its key's own, for an
    actor acting through a key narrowed by a scope: it reaches no other)."""
    query = sa.select(Organization).order_by(Organization.created_at)
    if not actor.is_operator:
        query = query.join(Member, Member.org_id == Organization.id).where(Member.user_id == actor.user_id)
    if actor.is_scoped:
        query = query.where(Organization.id == actor.key.org_id)
    return list(db.session.scalars(query))


def _member(org: Organization, user: User) -> Member:
    member = db.session.scalar(sa.select(Member).where(Member.org_id == org.id, Member.user_id == user.id))
    if member is None:
        raise NotFound(f"{user.email} is not a member of {org.slug}")
    return member


def _role_for(org: Organization, role: str, actor: Actor) -> str:
    from control_plane.services.roles import resolve_role

    stored = resolve_role(org, role)
    require_grantable(actor, role_document(stored, custom_role_documents(org.id)))
    if stored == "owner" and not actor.is_operator and actor.role != "owner":
        raise Forbidden("only an owner can make someone an owner")
    return stored


def _keep_an_owner(org: Organization, leaving: Member) -> None:
    if leaving.role != "owner":
        return
    owners = db.session.scalar(sa.select(sa.func.count()).select_from(Member)
                               .where(Member.org_id == org.id, Member.role == "owner"))
    if owners <= 1:
        raise Conflict(f"{org.slug} would have no owner left; make someone else owner first")


def add_member(org: Organization, user: User, role: str = "member", *, actor: Actor) -> Member:
    """Make ``user`` a member at once: for the operator only (``mesh members add``). Over the
    network people join by invitation (``invite``), so that nobody is made a member of an org
    without accepting, and nobody learns whether an address has an account."""
    require(actor, org, "members.manage")
    if not actor.is_operator:
        raise Forbidden("members join by invitation: invite them (ORGANIZATION_MEMBER_ADD sends one) and they "
                        "become members when they accept")
    stored = _role_for(org, role, actor)
    if db.session.scalar(sa.select(Member.id).where(Member.org_id == org.id, Member.user_id == user.id)):
        raise Conflict(f"{user.email} is already a member of {org.slug}")
    member = Member(org_id=org.id, user_id=user.id, role=stored)
    db.session.add(member)
    org_changed(org.id)
    audit.record(actor, "member.add", org_id=org.id, target=member)
    commit_and_publish(org.id)
    return member


def update_member_role(org: Organization, user: User, role: str, *, actor: Actor) -> Member:
    require(actor, org, "members.manage")
    member = _member(org, user)
    stored = _role_for(org, role, actor)
    if member.role == "owner" and stored != "owner":
        if not actor.is_operator and actor.role != "owner":
            raise Forbidden("only an owner can change an owner's role")
        _keep_an_owner(org, member)
    before = audit.describe(member)
    member.role = stored
    org_changed(org.id)
    audit.record(actor, "member.update_role", org_id=org.id, target=member, before=before)
    commit_and_publish(org.id)
    return member


def remove_member(org: Organization, user: User, *, actor: Actor) -> None:
    # Leaving needs no permission; removing someone else does, and so does leaving through a key
    # narrowed by a scope (the scope must allow it like any other change).
    if actor.user_id != user.id or actor.is_scoped:
        require(actor, org, "members.manage")
    else:
        require(actor, org)
    member = _member(org, user)
    if member.role == "owner" and not actor.is_operator and actor.role != "owner":
        raise Forbidden("only an owner can remove an owner")
    _keep_an_owner(org, member)
    audit.record(actor, "member.remove", org_id=org.id, target=member, before=audit.describe(member), deleted=True)
    db.session.delete(member)
    org_changed(org.id)
    commit_and_publish(org.id)


def list_members(org: Organization, *, actor: Actor) -> list[tuple[Member, User]]:
    require(actor, org, "members.read")
    return list(db.session.execute(
        sa.select(Member, User).join(User, User.id == Member.user_id).where(Member.org_id == org.id)
        .order_by(Member.created_at)
    ).all())


INVITATION_TTL = timedelta(days=7)


def invite(org: Organization, email: str, role: str = "member", *, actor: Actor) -> str:
    """Invite ``email`` into ``org``; returns the single-use token (for the operator's terminal
    only: network interfaces must not pass it on). The invitation email goes to the outbox
    (``control_plane.outbox``) until an email provider exists; nothing logs the token. The same
    happens whether or not the address has an account, or is already a member."""
    require(actor, org, "members.manage")
    email = email.strip().lower()
    if not re.fullmatch(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+", email) or len(email) > 255:
        raise InvalidInput(f"not an email address: {email!r}")
    stored = _role_for(org, role, actor)
    token = "inv_" + secrets.token_urlsafe(24)
    invitation = Invitation(org_id=org.id, email=email, role=stored, token_hash=hash_key(token),
                            invited_by=actor.user_id, expires_at=utcnow() + INVITATION_TTL)
    db.session.add(invitation)
    audit.record(actor, "member.invite", org_id=org.id, target=invitation)
    # Written before the commit: an invitation nobody was told of is not kept.
    try:
        outbox.send(email, f"You are invited to {org.name} on MCP Mesh",
                    f"You are invited to join {org.name} ({org.slug}) on MCP Mesh as {role}.\n\n"
                    f"Accept within {INVITATION_TTL.days} days with:\n\n    mesh members accept --token {token}\n")
    except OSError as error:
        db.session.rollback()
        raise ServiceError(f"the invitation email could not be written to the outbox ({error.strerror}); "
                           "nothing was changed") from None
    db.session.commit()
    return token


def accept_invitation(token: str, password: str | None = None) -> Member:
    """Join the org of an invitation; creates the user (with ``password``) if there is none."""
    invitation = db.session.scalar(sa.select(Invitation).where(Invitation.token_hash == hash_key(token)))
    if invitation is None or invitation.accepted_at is not None or invitation.expires_at <= utcnow():
        raise NotFound("this invitation does not exist, was used, or has expired")
    user = db.session.scalar(sa.select(User).where(User.email == invitation.email))
    if user is None:
        user = create_user(invitation.email, password)
    if db.session.scalar(sa.select(Member.id).where(Member.org_id == invitation.org_id, Member.user_id == user.id)):
        raise Conflict(f"{user.email} is already a member")
    invitation.accepted_at = utcnow()
    member = Member(org_id=invitation.org_id, user_id=user.id, role=invitation.role)
    db.session.add(member)
    org_changed(invitation.org_id)
    newcomer = Actor(user_id=user.id, org_id=invitation.org_id, role=invitation.role, policy=None)
    audit.record(newcomer, "member.accept_invitation", org_id=invitation.org_id, target=member)
    commit_and_publish(invitation.org_id)
    return member


def find_org(ref: str | None) -> Organization:
    """An org by id or slug; with no reference, the first-run org (slug ``default``) or else the
    only org there is."""
    if ref:
        org = db.session.scalar(sa.select(Organization).where(sa.or_(Organization.id == ref, Organization.slug == ref)))
        if org is None:
            raise NotFound(f"no organization {ref!r}")
        return org
    default = db.session.scalar(sa.select(Organization).where(Organization.slug == "default"))
    if default is not None:
        return default
    orgs = db.session.scalars(sa.select(Organization).order_by(Organization.created_at).limit(2)).all()
    if not orgs:
        raise NotFound("there is no organization yet: run `mesh up` once, or `mesh orgs create`")
    if len(orgs) > 1:
        raise InvalidInput("there are several organizations: say which with --org")
    return orgs[0]


def find_user(ref: str) -> User:
    user = db.session.scalar(sa.select(User).where(sa.or_(User.id == ref, User.email == ref.strip().lower())))
    if user is None:
        raise NotFound(f"no user {ref!r}")
    return user


def org_owner(org: Organization) -> User:
    user = db.session.scalar(
        sa.select(User).join(Member, Member.user_id == User.id)
        .where(Member.org_id == org.id, Member.role == "owner").order_by(Member.created_at).limit(1)
    )
    if user is None:
        raise NotFound(f"organization {org.slug} has no owner")
    return user


def list_users(*, actor: Actor) -> list[User]:
    """Every account: the operator's view alone (over the network, people see their orgs' members)."""
    if not actor.is_operator:
        raise Forbidden("only the operator lists every user")
    return list(db.session.scalars(sa.select(User).order_by(User.created_at, User.id)))


@dataclass(frozen=True)
class FirstRun:
    email: str
    password: str
    org: Organization
    api_key: str


def bootstrap_first_run() -> FirstRun | None:
    """On an empty database: an admin user, an org and an API key, returned once to be shown."""
    if db.session.scalar(sa.select(User.id).limit(1)):
        return None
    from control_plane.services.api_keys import create_api_key

    password = secrets.token_urlsafe(18)
    user = create_user("admin@localhost", password)
    org = create_org("Default", user, slug="default", actor=OPERATOR)
    key, _ = create_api_key(org, user, name="bootstrap", actor=OPERATOR)
    return FirstRun(email=user.email, password=password, org=org, api_key=key)
