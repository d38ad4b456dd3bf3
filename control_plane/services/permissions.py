"""Permission documents as an org accepts them (a role's, a key's scope): valid for
``shared.policy`` and naming only the org's own connections. A typo must be refused, naming it,
rather than stored as a grant on a connection that does not exist (``{"tool": …}`` reads, in the
shorthand for tools, as a connection id "tool"). Another org's connection ids are refused exactly
like ids that exist nowhere."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from control_plane.models import Connection, Organization, db
from control_plane.services.errors import InvalidInput
from shared.policy import ANY, KINDS, PolicyError, normalize

SECTIONS = (*KINDS, "manage")


def org_document(org: Organization, permissions: Any, what: str) -> dict[str, Any]:
    """``permissions`` in full form, or ``InvalidInput`` saying what is wrong with it (``what``:
    "permissions", "scope")."""
    known = set(db.session.scalars(sa.select(Connection.id).where(Connection.org_id == org.id)))
    if isinstance(permissions, Mapping) and permissions and not set(permissions) & set(SECTIONS):
        # The bare shorthand for tools: its keys must be connections, or they are misspelt sections.
        strangers = sorted(k for k in permissions if k != ANY and k not in known)
        if strangers:
            raise InvalidInput(f"invalid {what}: unknown keys {', '.join(map(repr, strangers))}: a permission "
                               f"document's keys are {', '.join(SECTIONS)} (or, as a shorthand for tools, "
                               f"connection ids of {org.slug})")
    try:
        document = normalize(permissions)
    except PolicyError as error:
        raise InvalidInput(f"invalid {what}: {error}") from None
    unknown = [f"{kind}: {connection!r}" for kind in KINDS for connection in document[kind]
               if connection != ANY and connection not in known]
    if unknown:
        raise InvalidInput(f"invalid {what}: no such connection in {org.slug} ({'; '.join(unknown)}); "
                           "use a connection id (`mesh connections list`) or *")
    return document
