"""How each object is shown to people and programs: one plain, JSON-ready dict per object, the
same for the ``mesh`` command (``--json`` and its text lines), the management tools and the web
UI. Nothing here queries the database or decides who may see what: callers load (a listing
eagerly, in one query) and the services decide; this module only shapes.

Secrets are never shown, only their masks (``ConnectionSecret.hint``); connection URLs with
their query values masked (``shared.credentials.mask_url``), since a query may carry a key.
"""

from __future__ import annotations

import shlex
from datetime import datetime
from typing import Any

from control_plane.models import ApiKey, Connection, Member, Organization, User, utcnow
from shared.credentials import mask_url
from shared.policy import readable_scope
from shared.vocabulary import Status, Transport


def iso(value: datetime | None, timespec: str = "auto") -> str | None:
    return value.isoformat(timespec=timespec) if value else None


def org(o: Organization) -> dict[str, Any]:
    return {"id": o.id, "name": o.name, "slug": o.slug, "created_at": iso(o.created_at)}


def user(u: User) -> dict[str, Any]:
    return {"id": u.id, "email": u.email, "created_at": iso(u.created_at)}


def connection(c: Connection, health: dict[str, Any] | None = None) -> dict[str, Any]:
    """``health``: what the bridge reports of a stdio or sse connection's upstream right now
    (``bridge_client.shown``), when it is running."""
    return {"id": c.id, "org_id": c.org_id, "name": c.name, "url": mask_url(c.url), "transport": c.transport,
            "command": c.command, "args": list(c.args or []), "status": c.status,
            "health": {k: health.get(k) for k in ("state", "restarts", "last_error")} if health else None,
            "credentials": {s.field: s.hint for s in c.sealed_secrets}, "tools": c.tool_catalog,
            "tested_at": iso(c.tested_at), "test_status": c.test_status,
            "created_at": iso(c.created_at), "updated_at": iso(c.updated_at)}


def connection_state(row: dict[str, Any]) -> str:
    """One word or two for a listing: an inactive connection is ``inactive``; a bridged one is
    what its upstream is doing (``ready``, ``waiting, restarts 4``); else its stored status."""
    health = row["health"]
    if row["status"] != Status.ACTIVE or not health:
        return row["status"]
    return health["state"] + (f", restarts {health['restarts']}" if health["restarts"] else "")


def connection_target(row: dict[str, Any]) -> str:
    """What the connection reaches: its command line or its (masked) URL."""
    return shlex.join([row["command"], *row["args"]]) if row["transport"] == Transport.STDIO else row["url"]


def probe(result) -> dict[str, Any]:
    """What ``CONNECTION_TEST`` found (``connection_probe.ProbeResult``)."""
    return {"ok": result.ok, "latency_ms": result.latency_ms, "server": result.server,
            "tools": [t["name"] for t in result.tools], "error": result.error}


def api_key(k: ApiKey) -> dict[str, Any]:
    return {"id": k.id, "name": k.name, "prefix": k.prefix, "org_id": k.org_id, "user_id": k.user_id,
            "status": key_status(k), "scope": _scope(k.scope), "created_at": iso(k.created_at),
            "expires_at": iso(k.expires_at), "revoked_at": iso(k.revoked_at), "last_used_at": iso(k.last_used_at)}


def key_status(k: ApiKey) -> str:
    if k.revoked_at is not None:
        return "revoked"
    if k.expires_at is not None and k.expires_at <= utcnow():
        return "expired"
    return "active"


def _scope(scope) -> list[dict[str, Any]] | None:
    return readable_scope(scope) or None  # one that cannot be read is shown as what it is: allowing nothing


def member(m: Member, u: User, role_names: dict[str, str]) -> dict[str, Any]:
    """``role_names``: role id -> name for the org (``services.roles.role_names``); a member holds
    a built-in role by name and a custom role by id."""
    return {"id": m.id, "org_id": m.org_id, "user_id": u.id, "email": u.email,
            "role": role_names.get(m.role, m.role), "role_id": m.role, "created_at": iso(m.created_at)}


def role(r) -> dict[str, Any]:
    """A custom role (``models.Role``); ``services.roles.list_roles`` shows built-in ones alike."""
    return {"id": r.id, "name": r.name, "builtin": False, "description": r.description, "permissions": r.permissions}
