"""Database models. The schema itself is owned by the Alembic migrations in ``migrations/``;
these classes must stay in step with them (``tests/control_plane/test_migrations.py`` checks)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.dialects import mysql
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
    role: Mapped[str] = mapped_column(sa.String(64), default="member")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Connection(db.Model):
    __tablename__ = "connections"
    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=lambda: new_id("conn"))
    org_id: Mapped[str] = mapped_column(sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    url: Mapped[str] = mapped_column(sa.String(2048))
    transport: Mapped[str] = mapped_column(sa.String(16), default="http")
    status: Mapped[str] = mapped_column(sa.String(16), default="active")
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
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)


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
