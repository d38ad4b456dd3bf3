"""Database models. The schema itself is owned by the Alembic migrations in ``migrations/``;
these classes must stay in step with them (``tests/control_plane/test_migrations.py`` checks)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def utcnow() -> datetime:
    # Naive UTC everywhere: MariaDB's DATETIME has no zone, so all three databases agree.
    return datetime.now(UTC).replace(tzinfo=None)


class User(db.Model):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=lambda: new_id("usr"))
    email: Mapped[str] = mapped_column(sa.String(255), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Organization(db.Model):
    __tablename__ = "organizations"
    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=lambda: new_id("org"))
    name: Mapped[str] = mapped_column(sa.String(200))
    slug: Mapped[str] = mapped_column(sa.String(100), unique=True)
    # Bumped in the same transaction as any change that alters the org's snapshot.
    policy_version: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Member(db.Model):
    __tablename__ = "members"
    __table_args__ = (sa.UniqueConstraint("org_id", "user_id", name="uq_members_org_user"),)
    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=lambda: new_id("mem"))
    org_id: Mapped[str] = mapped_column(sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # A built-in role name (owner, admin, member) or a custom role's id (role_…).
    role: Mapped[str] = mapped_column(sa.String(64), default="member")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Role(db.Model):
    """A custom role: a permission document (``shared.policy``) with a name, per org."""

    __tablename__ = "roles"
    __table_args__ = (sa.UniqueConstraint("org_id", "name", name="uq_roles_org_name"),)
    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=lambda: new_id("role"))
    org_id: Mapped[str] = mapped_column(sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    description: Mapped[str] = mapped_column(sa.String(500), default="")
    permissions: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Invitation(db.Model):
    __tablename__ = "invitations"
    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=lambda: new_id("inv"))
    org_id: Mapped[str] = mapped_column(sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[str] = mapped_column(sa.String(64))
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    invited_by: Mapped[str | None] = mapped_column(sa.String(32), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    accepted_at: Mapped[datetime | None] = mapped_column(default=None)


class Connection(db.Model):
    __tablename__ = "connections"
    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=lambda: new_id("conn"))
    org_id: Mapped[str] = mapped_column(sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    url: Mapped[str] = mapped_column(sa.String(2048))
    transport: Mapped[str] = mapped_column(sa.String(16), default="http")
    status: Mapped[str] = mapped_column(sa.String(16), default="active")
    # Static headers sent to the upstream. Moves into the encrypted vault with issue #4.
    headers: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    # transport "stdio": the command the bridge runs, its arguments, and environment values
    # (secrets, like header values). Empty for the other transports.
    command: Mapped[str | None] = mapped_column(sa.String(1024), default=None)
    args: Mapped[list | None] = mapped_column(sa.JSON, default=None)
    env: Mapped[dict | None] = mapped_column(sa.JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ApiKey(db.Model):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=lambda: new_id("key"))
    org_id: Mapped[str] = mapped_column(sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    prefix: Mapped[str] = mapped_column(sa.String(32))
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    # Optional narrowing: a permission document intersected with the owner's role.
    scope: Mapped[dict | None] = mapped_column(sa.JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
