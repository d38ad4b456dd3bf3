"""the credential vault: connection_secrets; plaintext connection headers move into it, sealed

Revision ID: 0002_vault
Revises: 0001
Create Date: 2026-11-24

Each existing ``connections.headers`` entry becomes a ``header:<Name>`` secret sealed under the
master key, then the plaintext column is dropped. Sealing needs the master keyring: the caller
(``control_plane.migrate.upgrade``) passes a callable for it in ``config.attributes``, which is
only called when there is something to seal. Every org's snapshot changes shape, so every org's
version is bumped and the reconciler publishes them all again.

The secrets are sealed under the vault's context as it was at this revision (``_VaultContextV1``,
without the origin that ``0007_origin_bound_secrets`` binds in), so this migration and its
downgrade keep meaning what they meant whatever ``shared.credentials`` does later.
"""
import json
import logging
from dataclasses import dataclass

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import mysql

from shared.credentials import field_kind, header_field, header_for, mask_secret
from shared.envelope import open_sealed, parse_record, seal

revision = "0002_vault"
down_revision = "0001"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

connections = sa.table("connections", sa.column("id", sa.String), sa.column("org_id", sa.String),
                       sa.column("headers", sa.JSON))
organizations = sa.table("organizations", sa.column("policy_version", sa.Integer))
secrets_table = sa.table(
    "connection_secrets", sa.column("id", sa.String), sa.column("org_id", sa.String),
    sa.column("connection_id", sa.String), sa.column("field", sa.String), sa.column("envelope", sa.Text),
    sa.column("key_id", sa.String), sa.column("hint", sa.String), sa.column("created_at", sa.DateTime),
    sa.column("updated_at", sa.DateTime),
)


@dataclass(frozen=True)
class _VaultContextV1:
    """The associated data of a secret at rest at this revision: ``["vault", org, connection,
    field]`` (a private copy: ``shared.envelope.SealContext`` has since gained the origin)."""

    org_id: str
    connection_id: str
    field: str

    def encode(self) -> bytes:
        return json.dumps(["vault", self.org_id, self.connection_id, self.field], separators=(",", ":")).encode()

    def describe(self) -> str:
        return f"{self.field} of {self.connection_id}"


def _master_keyring():
    source = context.config.attributes.get("master_keyring")
    if source is None:
        raise RuntimeError("migration 0002_vault moves connection headers into the vault and needs the master "
                           "key: run it with `mesh migrate` or `mesh up`")
    return source()


def upgrade() -> None:
    op.create_table(
        "connection_secrets",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("org_id", sa.String(32), sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("connection_id", sa.String(32), sa.ForeignKey("connections.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("field", sa.String(300).with_variant(mysql.VARCHAR(300, collation="utf8mb4_bin"), "mysql"),
                  nullable=False),
        sa.Column("envelope", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("hint", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("connection_id", "field", name="uq_connection_secrets_field"),
    )
    op.create_index("ix_connection_secrets_org_id", "connection_secrets", ["org_id"])
    op.create_index("ix_connection_secrets_connection_id", "connection_secrets", ["connection_id"])
    op.create_index("ix_connection_secrets_key_id", "connection_secrets", ["key_id"])

    bind = op.get_bind()
    every = bind.execute(sa.select(connections.c.id, connections.c.org_id, connections.c.headers))
    with_headers = [row for row in every if row.headers]
    if with_headers:
        from control_plane.models import new_id, utcnow

        keyring = _master_keyring()
        now = utcnow()
        rows = []
        for connection_id, org_id, headers in with_headers:
            for name, value in headers.items():
                field = header_field(name)
                record = seal(str(value).encode(), _VaultContextV1(org_id, connection_id, field), keyring)
                rows.append({"id": new_id("sec"), "org_id": org_id, "connection_id": connection_id, "field": field,
                             "envelope": record.to_json(), "key_id": record.kid,
                             "hint": mask_secret(str(value)), "created_at": now, "updated_at": now})
        op.bulk_insert(secrets_table, rows)
        log.info("moved %d connection headers into the vault", len(rows))

    with op.batch_alter_table("connections") as batch:
        batch.drop_column("headers")
    op.execute(organizations.update().values(policy_version=organizations.c.policy_version + 1))


def downgrade() -> None:
    # Back to plaintext headers: only possible with the master key. Environment-variable
    # secrets have no place in the old schema and are dropped.
    bind = op.get_bind()
    sealed = list(bind.execute(sa.select(secrets_table.c.org_id, secrets_table.c.connection_id,
                                         secrets_table.c.field, secrets_table.c.envelope)))
    restored: dict[str, dict[str, str]] = {}
    if sealed:
        keyring = _master_keyring()
        for org_id, connection_id, field, envelope in sealed:
            value = open_sealed(parse_record(envelope), _VaultContextV1(org_id, connection_id, field), keyring).decode()
            header = header_for(field, value)
            if header is None:
                log.warning("dropping %s of %s: the old schema has no place for it", field_kind(field)[0],
                            connection_id)
                continue
            restored.setdefault(connection_id, {})[header[0]] = header[1]
    op.add_column("connections", sa.Column("headers", sa.JSON(), nullable=True))
    op.execute(connections.update().values(headers={}))
    for connection_id, headers in restored.items():
        op.execute(connections.update().where(connections.c.id == connection_id).values(headers=headers))
    with op.batch_alter_table("connections") as batch:
        batch.alter_column("headers", existing_type=sa.JSON(), nullable=False)
    op.drop_table("connection_secrets")
    op.execute(organizations.update().values(policy_version=organizations.c.policy_version + 1))
