"""admin audit trail, connection tool catalog and last test

Revision ID: 0005_admin_audit
Revises: 0004_stdio
Create Date: 2026-11-24
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

# Microseconds on MySQL/MariaDB too (a plain DATETIME keeps whole seconds).
TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

revision = "0005_admin_audit"
down_revision = "0004_stdio"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admin_audit",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("org_id", sa.String(32), nullable=True),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_type", sa.String(32), nullable=False),
        sa.Column("target_id", sa.String(64), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
    )
    op.create_index("ix_admin_audit_org_id", "admin_audit", ["org_id"])
    op.create_index("ix_admin_audit_created_at", "admin_audit", ["created_at"])
    with op.batch_alter_table("connections") as batch:
        batch.add_column(sa.Column("tool_catalog", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("tested_at", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("test_status", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("test_status")
        batch.drop_column("tested_at")
        batch.drop_column("tool_catalog")
    op.drop_table("admin_audit")
