"""Database models. The schema itself is owned by the Alembic migrations in ``migrations/``;
these classes must stay in step with them (``tests/control_plane/test_migrations.py`` checks)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, registry, relationship

# Microseconds everywhere: MySQL and MariaDB keep whole seconds in a plain DATETIME.
TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


class Base(DeclarativeBase):
    registry = registry(type_annotation_map={datetime: TIMESTAMP})


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
    # Names are unique per org (the services compare them case-insensitively).
    __table_args__ = (sa.Index("uq_connections_org_name", "org_id", "name", unique=True),)
    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=lambda: new_id("conn"))
    org_id: Mapped[str] = mapped_column(sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    url: Mapped[str] = mapped_column(sa.String(2048))
    transport: Mapped[str] = mapped_column(sa.String(16), default="http")
    status: Mapped[str] = mapped_column(sa.String(16), default="active")
    # transport "stdio": the command the bridge runs and its arguments (its environment values
    # are secrets, in the vault as env:NAME). Empty for the other transports.
    command: Mapped[str | None] = mapped_column(sa.String(1024), default=None)
    args: Mapped[list | None] = mapped_column(sa.JSON, default=None)
    # Whether it may reach loopback and private addresses: set when the operator (the `mesh`
    # command) registers it or points it elsewhere, cleared when a member does
    # (shared.upstream_addresses).
    allow_private: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    # What CONNECTION_TEST last found: the upstream's tools (names, descriptions, schemas).
    tool_catalog: Mapped[list | None] = mapped_column(sa.JSON, default=None)
    tested_at: Mapped[datetime | None] = mapped_column(default=None)
    test_status: Mapped[str | None] = mapped_column(sa.String(16), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    # Read-only: secrets are written through ``services.secrets`` alone. Listings load it with
    # ``selectinload`` (one query for a whole page) to show each secret's mask.
    sealed_secrets: Mapped[list[ConnectionSecret]] = relationship(viewonly=True, order_by="ConnectionSecret.field")


class ApiKey(db.Model):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=lambda: new_id("key"))
    org_id: Mapped[str] = mapped_column(sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    prefix: Mapped[str] = mapped_column(sa.String(32))
    key_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    # Optional narrowing: a list of permission documents that must all allow, besides the owner's
    # role (a key made through a narrowed key carries that key's documents first). Keys made
    # before that hold one document. Read it with ``shared.policy.scope_layers``.
    scope: Mapped[dict | list | None] = mapped_column(sa.JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)


def usable_keys() -> sa.Select:
    """The one query for keys that may authenticate, with their owner's role: not revoked, and
    their user still a member of the key's org. Expiry is decided at each use (by the data plane
    on every call, by the management server at each request), since it comes without a change."""
    return (sa.select(ApiKey, Member.role)
            .join(Member, sa.and_(Member.org_id == ApiKey.org_id, Member.user_id == ApiKey.user_id))
            .where(ApiKey.revoked_at.is_(None)))


class AdminAudit(db.Model):
    """One admin operation: written by the service that made the change, in its transaction."""

    __tablename__ = "admin_audit"
    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=lambda: new_id("aud"))
    org_id: Mapped[str | None] = mapped_column(sa.String(32), index=True, default=None)
    actor: Mapped[str] = mapped_column(sa.String(100))  # "usr_…" or "operator"
    action: Mapped[str] = mapped_column(sa.String(64))
    target_type: Mapped[str] = mapped_column(sa.String(32))
    target_id: Mapped[str] = mapped_column(sa.String(64))
    before: Mapped[dict | None] = mapped_column(sa.JSON, default=None)
    after: Mapped[dict | None] = mapped_column(sa.JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


FIELD_TYPE = sa.String(300).with_variant(mysql.VARCHAR(300, collation="utf8mb4_bin"), "mysql")


class ConnectionSecret(db.Model):
    """One credential of a connection, sealed under the master key (``shared.envelope``). The
    plaintext is never stored; ``hint`` is the mask listings show (``sk-…a1b2``)."""

    __tablename__ = "connection_secrets"
    __table_args__ = (sa.UniqueConstraint("connection_id", "field", name="uq_connection_secrets_field"),)
    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=lambda: new_id("sec"))
    org_id: Mapped[str] = mapped_column(sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    connection_id: Mapped[str] = mapped_column(sa.ForeignKey("connections.id", ondelete="CASCADE"), index=True)
    # "bearer", "basic", "header:<Name>" or "env:<NAME>" (``shared.credentials``). Compared
    # byte for byte on MariaDB too: env:TOKEN and env:token are two variables.
    field: Mapped[str] = mapped_column(FIELD_TYPE)
    envelope: Mapped[str] = mapped_column(sa.Text)
    # Which master key wrapped the data key: rotation finds what is left to re-wrap by it.
    key_id: Mapped[str] = mapped_column(sa.String(32), index=True)
    hint: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
