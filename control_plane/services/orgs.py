"""Users, organizations and memberships."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from argon2 import PasswordHasher

from control_plane.models import Member, Organization, User, db
from control_plane.services import commit_and_publish, org_changed
from control_plane.services.errors import Conflict, InvalidInput, NotFound

_hasher = PasswordHasher()
ROLES = ("owner", "admin", "member")


def _slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:60] or "org"


def create_user(email: str, password: str) -> User:
    email = email.strip().lower()
    if "@" not in email or len(email) > 255:
        raise InvalidInput(f"not an email address: {email!r}")
    if db.session.scalar(sa.select(User.id).where(User.email == email)):
        raise Conflict(f"a user with email {email} already exists")
    user = User(email=email, password_hash=_hasher.hash(password))
    db.session.add(user)
    db.session.commit()
    return user


def create_org(name: str, owner: User, slug: str | None = None) -> Organization:
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("an organization needs a name of 1 to 200 characters")
    slug = slug or _slugify(name)
    if db.session.scalar(sa.select(Organization.id).where(Organization.slug == slug)):
        raise Conflict(f"an organization with slug {slug!r} already exists")
    org = Organization(name=name, slug=slug, policy_version=1)
    db.session.add(org)
    db.session.flush()
    db.session.add(Member(org_id=org.id, user_id=owner.id, role="owner"))
    commit_and_publish(org.id)
    return org


def add_member(org: Organization, user: User, role: str = "member") -> Member:
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    member = Member(org_id=org.id, user_id=user.id, role=role)
    db.session.add(member)
    org_changed(org.id)
    commit_and_publish(org.id)
    return member


def remove_member(org: Organization, user: User) -> None:
    member = db.session.scalar(sa.select(Member).where(Member.org_id == org.id, Member.user_id == user.id))
    if member is None:
        raise NotFound(f"{user.email} is not a member of {org.slug}")
    db.session.delete(member)
    org_changed(org.id)
    commit_and_publish(org.id)


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


def list_orgs() -> list[Organization]:
    return list(db.session.scalars(sa.select(Organization).order_by(Organization.created_at)))


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
    org = create_org("Default", user, slug="default")
    key, _ = create_api_key(org, user, name="bootstrap")
    return FirstRun(email=user.email, password=password, org=org, api_key=key)
