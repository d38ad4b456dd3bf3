"""secrets bound to their connection's origin: every secret sealed again, masks in the new format

Revision ID: 0007_origin_bound_secrets
Revises: 0006_private_upstreams
Create Date: 2026-11-26

Until this revision a secret at rest was sealed under the associated data ``["vault", org,
connection, field]``. From here on the connection's origin (``https://host:443``, or ``stdio``)
is part of it (``shared.credentials.vault_context``), so a connection pointed at another scheme,
host or port can never open a secret that was given for the old one.

Each secret is opened under the old context and sealed again under the new one, which needs the
master keyring: the caller (``control_plane.migrate.upgrade``) passes a callable for it in
``config.attributes``, called only when there is something to seal (as for ``0002_vault``). Its
stored mask is computed again in the current format (``shared.credentials.mask_secret``: nothing
of a secret under 16 characters, at most the last 4 of a longer one). A secret that cannot be
opened (a damaged row, a key no longer held) is left as it is, with its mask cleared: its
connection was broken before and stays broken until the secret is set again.

Every org's version is bumped, so the reconciler publishes every snapshot again (the data plane
opens credentials under the delivery context, which binds the origin too).
"""
import json
import logging
from dataclasses import dataclass

import sqlalchemy as sa
from alembic import context, op

from shared.credentials import MASK, mask_secret, route_origin, vault_context
from shared.envelope import EnvelopeError, open_sealed, seal

revision = "0007_origin_bound_secrets"
down_revision = "0006_private_upstreams"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

connections = sa.table("connections", sa.column("id", sa.String), sa.column("url", sa.String),
                       sa.column("transport", sa.String))
organizations = sa.table("organizations", sa.column("policy_version", sa.Integer))
secrets_table = sa.table(
    "connection_secrets", sa.column("id", sa.String), sa.column("org_id", sa.String),
    sa.column("connection_id", sa.String), sa.column("field", sa.String), sa.column("envelope", sa.Text),
    sa.column("key_id", sa.String), sa.column("hint", sa.String),
)


@dataclass(frozen=True)
class _VaultContextV1:
    """The associated data of a secret at rest before this revision (a private copy: the shared
    one now binds the origin)."""

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
        raise RuntimeError("migration 0007_origin_bound_secrets seals every connection secret again and needs the "
                           "master key: run it with `mesh migrate` or `mesh up`")
    return source()


def _secrets(bind) -> list:
    return list(bind.execute(
        sa.select(secrets_table.c.id, secrets_table.c.org_id, secrets_table.c.connection_id, secrets_table.c.field,
                  secrets_table.c.envelope, connections.c.transport, connections.c.url)
        .select_from(secrets_table.join(connections, connections.c.id == secrets_table.c.connection_id))
        .order_by(secrets_table.c.id)))


def _reseal(to_origin_bound: bool) -> None:
    """Open every secret under one context and seal it under the other (``to_origin_bound``:
    old → new, else back)."""
    bind = op.get_bind()
    rows = _secrets(bind)
    if rows:
        keyring = _master_keyring()
        resealed = 0
        for row_id, org_id, connection_id, field, envelope, transport, url in rows:
            old_context = _VaultContextV1(org_id, connection_id, field)
            try:
                new_context = vault_context(org_id, connection_id, field, origin=route_origin(transport, url))
                source, target = (old_context, new_context) if to_origin_bound else (new_context, old_context)
                value = open_sealed(envelope, source, keyring)
                record = seal(value, target, keyring)
                hint = mask_secret(value.decode())
            except (EnvelopeError, ValueError) as error:  # never a value in the message: only its kind
                log.warning("secret %s of %s cannot be opened (%s) and is left as it was; its connection stays "
                            "broken until the secret is set again", field, connection_id, type(error).__name__)
                bind.execute(secrets_table.update().where(secrets_table.c.id == row_id).values(hint=MASK))
                continue
            bind.execute(secrets_table.update().where(secrets_table.c.id == row_id)
                         .values(envelope=record.to_json(), key_id=record.kid, hint=hint))
            resealed += 1
        log.info("sealed %d connection secret(s) again%s", resealed,
                 ", bound to their connection's origin" if to_origin_bound else " without their origin")
    op.execute(organizations.update().values(policy_version=organizations.c.policy_version + 1))


def upgrade() -> None:
    _reseal(to_origin_bound=True)


def downgrade() -> None:
    _reseal(to_origin_bound=False)
