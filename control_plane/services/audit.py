"""The admin audit trail: every mutating service records what it did, who did it, and the
target before and after, in the same transaction as the change (so a change without its record,
or a record without its change, cannot exist).

``describe`` is the one place that turns a row into what the trail keeps: columns that could
hold a secret (key hashes, password hashes, invitation tokens, connection headers) are masked,
and a URL is kept as listings show it (query values masked, ``shared.credentials.mask_url``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from control_plane.models import AdminAudit, db
from control_plane.services.actors import Actor
from shared.credentials import mask_url

# Columns never copied into the trail as they are.
SECRET_COLUMNS = frozenset({"key_hash", "password_hash", "token_hash", "envelope"})
URL_COLUMNS = frozenset({"url"})


def describe(row: Any) -> dict[str, Any] | None:
    if row is None:
        return None
    out: dict[str, Any] = {}
    for column in sa.inspect(row).mapper.column_attrs:
        value = getattr(row, column.key)
        if column.key in SECRET_COLUMNS:
            value = sorted(value) if isinstance(value, dict) else ("…" if value else None)
        elif column.key in URL_COLUMNS and isinstance(value, str):
            value = mask_url(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        out[column.key] = value
    return out


def record(actor: Actor, action: str, *, org_id: str | None, target: Any = None, before: dict | None = None,
           deleted: bool = False) -> None:
    """Add the audit row for ``action`` on ``target`` to the current transaction. ``before`` is
    ``describe(target)`` taken before the change; ``after`` is the target as it is now (nothing,
    when it was ``deleted``)."""
    db.session.flush()  # defaults and ids are set: the row describes what will be committed
    db.session.add(AdminAudit(
        org_id=org_id,
        actor=actor.user_id or "operator",
        action=action,
        target_type=type(target).__tablename__,
        target_id=target.id,
        before=before,
        after=None if deleted else describe(target),
    ))
