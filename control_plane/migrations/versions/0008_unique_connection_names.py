"""connection names unique per org (case-insensitively, as MariaDB compares them anyway)

Revision ID: 0008_unique_connection_names
Revises: 0007_origin_bound_secrets
Create Date: 2026-12-02

A connection is found by name as well as by id (``mesh connections … NAME``), so two of one org
must not share one. Existing duplicates keep their connections, ids, secrets and routes: in each
org the oldest keeps the name and each later one is renamed ``name (2)``, ``name (3)``… (the
first such name that is free), with a warning naming it in the migration's log. Orgs with a
renamed connection get a new version, so the reconciler publishes them again.

The rule is a unique index on (org_id, name): made in place on every database, where a unique
constraint would make SQLite copy the table (and, with foreign keys enforced, cascade the drop
of the old one to the connection's secrets).
"""
import logging

import sqlalchemy as sa
from alembic import op

revision = "0008_unique_connection_names"
down_revision = "0007_origin_bound_secrets"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

INDEX = "uq_connections_org_name"
MAX_NAME = 200
connections = sa.table("connections", sa.column("id", sa.String), sa.column("org_id", sa.String),
                       sa.column("name", sa.String), sa.column("created_at", sa.DateTime))
organizations = sa.table("organizations", sa.column("id", sa.String), sa.column("policy_version", sa.Integer))


def _free_name(name: str, taken: set[str]) -> str:
    n = 2
    while True:
        suffix = f" ({n})"
        candidate = name[:MAX_NAME - len(suffix)] + suffix
        if candidate.lower() not in taken:
            return candidate
        n += 1


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(connections.c.id, connections.c.org_id, connections.c.name)
                        .order_by(connections.c.org_id, connections.c.created_at, connections.c.id)).all()
    taken: dict[str, set[str]] = {}
    for row in rows:
        taken.setdefault(row.org_id, set()).add(row.name.lower())
    kept: dict[str, set[str]] = {}
    changed_orgs = set()
    for row in rows:
        seen = kept.setdefault(row.org_id, set())
        if row.name.lower() not in seen:
            seen.add(row.name.lower())
            continue
        renamed = _free_name(row.name, taken[row.org_id])
        taken[row.org_id].add(renamed.lower())
        seen.add(renamed.lower())
        bind.execute(connections.update().where(connections.c.id == row.id).values(name=renamed))
        changed_orgs.add(row.org_id)
        log.warning("connection %s of org %s shared its name with an older one: renamed %r", row.id, row.org_id,
                    renamed)
    for org_id in sorted(changed_orgs):
        bind.execute(organizations.update().where(organizations.c.id == org_id)
                     .values(policy_version=organizations.c.policy_version + 1))
    op.create_index(INDEX, "connections", ["org_id", "name"], unique=True)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="connections")
