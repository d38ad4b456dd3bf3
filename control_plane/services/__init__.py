"""The service layer: one function per admin operation, taking plain arguments and raising
typed errors (``errors.py``). Every interface (CLI, web UI, API, management MCP server) calls
these; none of them touches the database another way.

Any change to what an org's snapshot holds goes through ``org_changed`` inside the transaction
and ``commit_and_publish`` to finish it, so the version bump and the change commit together and
the data planes hear of it right after.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import current_app

from control_plane.models import Organization, db


def org_changed(org_id: str) -> None:
    # An UPDATE ... SET v = v + 1 rather than read-modify-write: concurrent changes to one org
    # serialise on the row and each gets its own version.
    db.session.execute(
        sa.update(Organization).where(Organization.id == org_id).values(policy_version=Organization.policy_version + 1)
    )


def commit_and_publish(*org_ids: str) -> None:
    db.session.commit()
    publisher = current_app.extensions.get("mesh.publisher")
    if publisher is not None:
        for org_id in org_ids:
            publisher.publish_org(org_id)
