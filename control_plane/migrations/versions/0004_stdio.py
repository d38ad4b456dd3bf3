"""connections run as stdio commands by the bridge: command and args (env values are vault secrets)

Revision ID: 0004_stdio
Revises: 0003_identity
Create Date: 2026-11-24
"""
import sqlalchemy as sa
from alembic import op

revision = "0004_stdio"
down_revision = "0003_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: existing (http) connections have none of these.
    with op.batch_alter_table("connections") as batch:
        batch.add_column(sa.Column("command", sa.String(1024), nullable=True))
        batch.add_column(sa.Column("args", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("args")
        batch.drop_column("command")
