"""connections.allow_private: whether a connection may reach loopback and private addresses

Revision ID: 0006_private_upstreams
Revises: 0005_admin_audit
Create Date: 2026-12-01

A connection the operator registered (the ``mesh`` command) may reach loopback and private
addresses; one registered over the network (management tools, UI) may not, unless the address is
in ``MESH_ALLOW_PRIVATE_UPSTREAMS`` (``shared.upstream_addresses``). For existing connections the
admin audit trail says who set their URL last: the operator (``actor = "operator"``) or a member.
A connection without such a row is held to the stricter rule. Every org's version is bumped, so
the reconciler publishes snapshots carrying the flag.
"""
import sqlalchemy as sa
from alembic import op

revision = "0006_private_upstreams"
down_revision = "0005_admin_audit"
branch_labels = None
depends_on = None

connections = sa.table("connections", sa.column("id", sa.String), sa.column("allow_private", sa.Boolean))
audit = sa.table("admin_audit", sa.column("actor", sa.String), sa.column("action", sa.String),
                 sa.column("target_type", sa.String), sa.column("target_id", sa.String),
                 sa.column("before", sa.JSON), sa.column("after", sa.JSON), sa.column("created_at", sa.DateTime))
organizations = sa.table("organizations", sa.column("policy_version", sa.Integer))


def _url(row) -> str | None:
    return row.get("url") if isinstance(row, dict) else None


def upgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.add_column(sa.Column("allow_private", sa.Boolean(), nullable=False, server_default=sa.false()))
    bind = op.get_bind()
    rows = bind.execute(sa.select(audit.c.actor, audit.c.action, audit.c.target_id, audit.c.before, audit.c.after)
                        .where(audit.c.target_type == "connections",
                               audit.c.action.in_(["connection.create", "connection.update"]))
                        .order_by(audit.c.created_at)).all()
    by_operator: dict[str, bool] = {}
    for actor, action, target_id, before, after in rows:
        if action == "connection.create" or _url(before) != _url(after):
            by_operator[target_id] = actor == "operator"
    allowed = [cid for cid, operator in by_operator.items() if operator]
    if allowed:
        bind.execute(sa.update(connections).where(connections.c.id.in_(allowed)).values(allow_private=True))
    bind.execute(sa.update(organizations).values(policy_version=organizations.c.policy_version + 1))


def downgrade() -> None:
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("allow_private")
