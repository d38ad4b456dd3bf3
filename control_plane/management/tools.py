"""The management tools: for each, its arguments (a pydantic model: the JSON Schema clients see
and the validation they get), the management permission that shows it in ``tools/list``, and a
handler that calls the service layer.

Keys act as their user: a tool acts in ``org_id`` (default: the key's own org) with the user's
role there, narrowed by the key's scope. An org the user is not in looks like no org at all,
and so does every org but its own to a key with a scope. Every actor carries the key it acts
through (``KeyBinding``), so the services keep what it creates within that key.

Results are shaped by ``control_plane.presenters``, as the ``mesh`` command shows them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from flask import current_app
from pydantic import BaseModel, ConfigDict, Field

from control_plane import bridge_client, presenters
from control_plane.models import Organization, User, db, utcnow
from control_plane.services import api_keys, connections, dataplane_status, orgs, roles
from control_plane.services.actors import Actor, KeyBinding, member_actor
from control_plane.services.errors import InvalidInput, NotFound
from control_plane.services.secrets import credential_fields, set_secrets
from control_plane.status_view import status_out
from shared.policy import DENY_ALL, Policy, readable_scope
from shared.vocabulary import Status, Transport

Id = Annotated[str, Field(min_length=1, max_length=64)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Email = Annotated[str, Field(min_length=3, max_length=255, pattern=r"^[^@\s]+@[^@\s]+$")]
Url = Annotated[str, Field(min_length=8, max_length=2048)]
RoleRef = Annotated[str, Field(min_length=1, max_length=100)]
HeaderValue = Annotated[str, Field(max_length=4096)]


class Args(BaseModel):
    """Unknown fields are refused: a typo must not silently do something else."""

    model_config = ConfigDict(extra="forbid")


class InOrg(Args):
    org_id: Id | None = Field(None, description="Organization id or slug; default: the API key's own org.")


class Result(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Caller:
    """Who is calling: the user behind the API key, and the key."""

    user_id: str
    key_id: str
    key_org_id: str
    scope: dict | list | None  # as ``ApiKey.scope`` stores it
    expires_at: datetime | None = None

    @property
    def key(self) -> KeyBinding:
        return KeyBinding(self.key_id, self.key_org_id, tuple(readable_scope(self.scope)), self.expires_at)

    def actor_in(self, org: Organization) -> Actor:
        return member_actor(org, self.user_id, self.key)

    def org(self, ref: str | None) -> tuple[Organization, Actor]:
        org = db.session.get(Organization, self.key_org_id) if ref is None else _find_org(ref)
        if org is None:
            raise NotFound("no such organization")
        return org, self.actor_in(org)

    @property
    def user(self) -> User:
        return db.session.get(User, self.user_id)


def _find_org(ref: str) -> Organization:
    try:
        return orgs.find_org(ref)
    except NotFound:
        raise NotFound("no such organization") from None


# -- results --------------------------------------------------------------------------------

class OrgOut(Result):
    id: str
    name: str
    slug: str
    created_at: str


class OrgList(Result):
    items: list[OrgOut]


class MemberOut(Result):
    id: str
    org_id: str
    user_id: str
    email: str
    role: str = Field(description="The role's name.")
    role_id: str = Field(description="A built-in role's name or a custom role's id.")
    created_at: str


class MemberList(Result):
    items: list[MemberOut]


class MemberAdded(Result):
    status: Literal["invited"] = Field(description="Always 'invited': the person becomes a member when they accept.")
    email: str
    role: str


class ConnectionOut(Result):
    id: str
    org_id: str
    name: str
    url: str = Field(description="The upstream's URL, query values masked ('?key=…'); empty for stdio.")
    transport: str
    command: str | None = Field(description="stdio: the command the bridge runs.")
    args: list[str]
    status: str = Field(description="As stored: active or inactive.")
    health: dict[str, Any] | None = Field(description="stdio and sse: what the bridge reports of the upstream now "
                                                      "(state, restarts, last_error); null when unknown.")
    credentials: dict[str, str] = Field(description="Credential fields (bearer, basic, header:<Name>, env:<NAME>) "
                                                    "with masked values: secrets are write-only.")
    tools: list[dict[str, Any]] | None = Field(description="The upstream's tools, as CONNECTION_TEST last found them.")
    tested_at: str | None
    test_status: str | None
    created_at: str
    updated_at: str


class ConnectionUpdated(ConnectionOut):
    credentials_dropped: list[str] = Field(
        description="Credentials removed because the URL moved to another origin (scheme, host or port) and this "
                    "call did not set them again: they were given for the old upstream only.")


class ConnectionPage(Result):
    items: list[ConnectionOut]
    next_cursor: str | None


class RoleOut(Result):
    id: str
    name: str
    builtin: bool
    description: str
    permissions: dict[str, Any]


class RoleList(Result):
    items: list[RoleOut]


class KeyOut(Result):
    id: str
    name: str
    prefix: str
    org_id: str
    user_id: str
    status: Literal["active", "revoked", "expired"]
    scope: list[dict[str, Any]] | None = Field(description="Permission documents narrowing the key (all must "
                                                           "allow); null: the user's role alone.")
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    last_used_at: str | None


class KeyCreated(KeyOut):
    key: str = Field(description="The API key itself. Shown this once; store it now.")


class KeyList(Result):
    items: list[KeyOut]


class Done(Result):
    ok: bool
    message: str


def connections_out(rows) -> list[dict]:
    return bridge_client.shown(current_app.config["MESH_SETTINGS"], list(rows))


def connection_out(c) -> dict:
    return connections_out([c])[0]


def member_out(org: Organization, member, user) -> dict:
    return presenters.member(member, user, roles.role_names(org))


# -- arguments and handlers -------------------------------------------------------------------

class OrgCreate(Args):
    name: Name
    slug: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9-]*$")] | None = None


def organization_create(caller: Caller, a: OrgCreate) -> dict:
    # any user may found an org; the service checks they found it for themselves
    return presenters.org(orgs.create_org(a.name, caller.user, a.slug, actor=_as_user(caller)))


def _as_user(caller: Caller) -> Actor:
    """The user outside any org: no rights of their own beyond founding orgs and listing theirs
    (both limited by the key acted through)."""
    return Actor(user_id=caller.user_id, org_id=None, role=None, policy=Policy([DENY_ALL]), key=caller.key)


class NoArgs(Args):
    pass


def organization_list(caller: Caller, a: NoArgs) -> dict:
    return {"items": [presenters.org(o) for o in orgs.orgs_of(_as_user(caller))]}


def organization_get(caller: Caller, a: InOrg) -> dict:
    org, _ = caller.org(a.org_id)
    return presenters.org(org)


class OrgUpdate(InOrg):
    name: Name | None = None
    slug: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[a-z0-9][a-z0-9-]*$")] | None = None


def organization_update(caller: Caller, a: OrgUpdate) -> dict:
    org, actor = caller.org(a.org_id)
    return presenters.org(orgs.update_org(org, name=a.name, slug=a.slug, actor=actor))


class OrgDelete(InOrg):
    confirm_slug: Annotated[str, Field(min_length=1, max_length=100, description="The org's slug, to confirm.")]


def organization_delete(caller: Caller, a: OrgDelete) -> dict:
    org, actor = caller.org(a.org_id)
    if a.confirm_slug != org.slug:
        raise InvalidInput(f"confirm_slug must be the org's slug, {org.slug!r}")
    orgs.delete_org(org, actor=actor)
    return {"ok": True, "message": f"deleted {org.slug}"}


class MemberAdd(InOrg):
    email: Email
    role: RoleRef = "member"


def member_add(caller: Caller, a: MemberAdd) -> dict:
    # Always an invitation, answered alike for every address: whether it has an account is not
    # the caller's to learn, and nobody becomes a member without accepting. The token goes only
    # into the invitation email.
    org, actor = caller.org(a.org_id)
    orgs.invite(org, a.email, a.role, actor=actor)
    return {"status": "invited", "email": a.email.strip().lower(), "role": a.role}


class MemberRef(InOrg):
    email: Email


def member_remove(caller: Caller, a: MemberRef) -> dict:
    org, actor = caller.org(a.org_id)
    orgs.remove_member(org, orgs.find_user(a.email), actor=actor)
    return {"ok": True, "message": f"removed {a.email}"}


def member_list(caller: Caller, a: InOrg) -> dict:
    org, actor = caller.org(a.org_id)
    names = roles.role_names(org)
    return {"items": [presenters.member(m, u, names) for m, u in orgs.list_members(org, actor=actor)]}


class MemberRole(InOrg):
    email: Email
    role: RoleRef


def member_update_role(caller: Caller, a: MemberRole) -> dict:
    org, actor = caller.org(a.org_id)
    user = orgs.find_user(a.email)
    return member_out(org, orgs.update_member_role(org, user, a.role, actor=actor), user)


Secret = Annotated[str, Field(min_length=1, max_length=16 * 1024)]
Headers = Annotated[dict[Annotated[str, Field(min_length=1, max_length=200)], HeaderValue], Field(max_length=32)]


class Credentials(Args):
    bearer: Secret | None = Field(None, description="Sent as 'Authorization: Bearer …'; write-only.")
    basic: Secret | None = Field(None, description="'user:password', sent as basic auth; write-only.")
    headers: Headers | None = Field(None, description="Named headers such as X-Api-Key; write-only.")


class ConnectionCreate(InOrg, Credentials):
    name: Name
    url: Url


def connection_create(caller: Caller, a: ConnectionCreate) -> dict:
    org, actor = caller.org(a.org_id)
    secrets = credential_fields(bearer=a.bearer, basic=a.basic)
    return connection_out(connections.create_connection(org, a.name, a.url, a.headers, secrets=secrets, actor=actor))


class ConnectionList(InOrg):
    search: Annotated[str, Field(max_length=200)] | None = Field(None, description="Matches name or URL.")
    status: Status | None = None
    transport: Transport | None = None
    sort: Literal["name", "created_at", "updated_at"] = "created_at"
    descending: bool = False
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    cursor: Annotated[str, Field(max_length=32)] | None = None


def connection_list(caller: Caller, a: ConnectionList) -> dict:
    org, actor = caller.org(a.org_id)
    rows, next_cursor = connections.page_connections(
        org, search=a.search, status=a.status, transport=a.transport, sort=a.sort, descending=a.descending,
        limit=a.limit, cursor=a.cursor, actor=actor)
    return {"items": connections_out(rows), "next_cursor": next_cursor}


class ConnectionRef(InOrg):
    connection_id: Id


def connection_get(caller: Caller, a: ConnectionRef) -> dict:
    org, actor = caller.org(a.org_id)
    return connection_out(connections.get_connection(org, a.connection_id, actor=actor))


class ConnectionUpdate(ConnectionRef, Credentials):
    name: Name | None = None
    url: Url | None = Field(None, description="A URL on another origin (scheme, host, port) drops the connection's "
                                              "credentials unless this call sets them again.")
    status: Status | None = None


def connection_update(caller: Caller, a: ConnectionUpdate) -> dict:
    org, actor = caller.org(a.org_id)
    secrets = credential_fields(bearer=a.bearer, basic=a.basic, headers=a.headers)
    connection, dropped = connections.update_connection(org, a.connection_id, name=a.name, url=a.url,
                                                        status=a.status, secrets=secrets, actor=actor)
    return {**connection_out(connection), "credentials_dropped": dropped}


def connection_delete(caller: Caller, a: ConnectionRef) -> dict:
    org, actor = caller.org(a.org_id)
    connections.delete_connection(org, a.connection_id, actor=actor)
    return {"ok": True, "message": f"deleted {a.connection_id}"}


class TestOut(Result):
    ok: bool
    latency_ms: float
    server: dict[str, Any]
    tools: list[str]
    error: str | None


def connection_test(caller: Caller, a: ConnectionRef) -> dict:
    org, actor = caller.org(a.org_id)
    _, result = connections.test_connection(org, a.connection_id, actor=actor)
    return presenters.probe(result)


class ConnectionConfigure(ConnectionRef, Credentials):
    remove: list[Annotated[str, Field(min_length=1, max_length=300)]] = Field(
        default_factory=list, max_length=32, description="Credential fields to remove, e.g. 'bearer' or 'header:X-Api-Key'.")


def connection_configure(caller: Caller, a: ConnectionConfigure) -> dict:
    org, actor = caller.org(a.org_id)
    connection = connections.get_connection(org, a.connection_id, actor=actor)
    set_secrets(org, connection, credential_fields(bearer=a.bearer, basic=a.basic, headers=a.headers),
                tuple(a.remove), actor=actor)
    return connection_out(connection)


Permissions = Annotated[dict[str, Any], Field(description="A permission document (see the README: tools, prompts, "
                                                          "resources, manage).")]


class RoleCreate(InOrg):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    permissions: Permissions
    description: Annotated[str, Field(max_length=500)] = ""


def role_create(caller: Caller, a: RoleCreate) -> dict:
    org, actor = caller.org(a.org_id)
    return presenters.role(roles.create_role(org, a.name, a.permissions, a.description, actor=actor))


def role_list(caller: Caller, a: InOrg) -> dict:
    org, actor = caller.org(a.org_id)
    return {"items": roles.list_roles(org, actor=actor)}


class RoleUpdate(InOrg):
    role: RoleRef = Field(description="The role's id or name.")
    name: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    permissions: Permissions | None = None
    description: Annotated[str, Field(max_length=500)] | None = None


def role_update(caller: Caller, a: RoleUpdate) -> dict:
    org, actor = caller.org(a.org_id)
    return presenters.role(roles.update_role(org, a.role, name=a.name, permissions=a.permissions,
                                      description=a.description, actor=actor))


class RoleRefArgs(InOrg):
    role: RoleRef = Field(description="The role's id or name.")


def role_delete(caller: Caller, a: RoleRefArgs) -> dict:
    org, actor = caller.org(a.org_id)
    roles.delete_role(org, a.role, actor=actor)
    return {"ok": True, "message": f"deleted role {a.role}"}


class KeyCreate(InOrg):
    name: Name
    scope: Permissions | None = Field(None, description="Narrow the key to part of your permissions.")
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] | None = None


def api_key_create(caller: Caller, a: KeyCreate) -> dict:
    org, actor = caller.org(a.org_id)
    expires = utcnow() + timedelta(days=a.expires_in_days) if a.expires_in_days else None
    key, row = api_keys.create_api_key(org, caller.user, a.name, scope=a.scope, expires_at=expires, actor=actor)
    return {**presenters.api_key(row), "key": key}


def api_key_list(caller: Caller, a: InOrg) -> dict:
    org, actor = caller.org(a.org_id)
    return {"items": [presenters.api_key(k) for k in api_keys.list_api_keys(org, actor=actor)]}


class KeyRef(InOrg):
    key_id: Id


def api_key_revoke(caller: Caller, a: KeyRef) -> dict:
    org, actor = caller.org(a.org_id)
    return presenters.api_key(api_keys.revoke_api_key(org, a.key_id, actor=actor))


class OrgVersionOut(Result):
    org_id: str
    org_slug: str | None
    installed: int | None = Field(description="The snapshot version this process serves; null: none.")
    published: int | None = Field(description="The version the control plane published; null: none.")
    lag: int | None = Field(description="How many versions behind the published one (0: up to date).")


class RefusedOut(Result):
    org_id: str
    org_slug: str | None
    reason: str = Field(description="no_key, unauthenticated, unreadable or wrong_org.")
    message: str
    at: str


class InstanceOut(Result):
    instance: str = Field(description="kind@host:pid")
    kind: Literal["dataplane", "bridge"]
    host: str
    pid: int
    started_at: str
    reported_at: str
    seconds_since_report: float
    orgs: list[OrgVersionOut]
    refused: list[RefusedOut] = Field(description="Snapshots in Redis this process refused; it keeps serving "
                                                  "the installed version.")
    refused_more: int = Field(description="Refusals of other orgs beyond those listed (0 in an org's view).")


class GatewayStatusOut(Result):
    instances: list[InstanceOut]


def gateway_status(caller: Caller, a: InOrg) -> dict:
    org, actor = caller.org(a.org_id)
    return status_out(dataplane_status.gateway_status(org, actor=actor))


# -- the registry ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    args: type[Args]
    result: type[Result]
    handler: Callable[[Caller, Any], dict]
    permission: str | None  # the management permission that shows the tool; None: every member


TOOLS: dict[str, ToolSpec] = {t.name: t for t in (
    ToolSpec("ORGANIZATION_CREATE", "Create an organization with you as its owner.", OrgCreate, OrgOut,
             organization_create, None),
    ToolSpec("ORGANIZATION_LIST", "The organizations you belong to.", NoArgs, OrgList, organization_list, None),
    ToolSpec("ORGANIZATION_GET", "One organization.", InOrg, OrgOut, organization_get, None),
    ToolSpec("ORGANIZATION_UPDATE", "Rename an organization or change its slug.", OrgUpdate, OrgOut,
             organization_update, "org.update"),
    ToolSpec("ORGANIZATION_DELETE", "Delete an organization and everything in it.", OrgDelete, Done,
             organization_delete, "org.delete"),
    ToolSpec("ORGANIZATION_MEMBER_ADD", "Invite someone by email; they become a member when they accept. The "
             "answer is the same for every address.", MemberAdd, MemberAdded, member_add, "members.manage"),
    ToolSpec("ORGANIZATION_MEMBER_REMOVE", "Remove a member; their API keys stop working.", MemberRef, Done,
             member_remove, "members.manage"),
    ToolSpec("ORGANIZATION_MEMBER_LIST", "Members and their roles.", InOrg, MemberList, member_list,
             "members.read"),
    ToolSpec("ORGANIZATION_MEMBER_UPDATE_ROLE", "Change a member's role.", MemberRole, MemberOut, member_update_role,
             "members.manage"),
    ToolSpec("COLLECTION_CONNECTIONS_CREATE", "Register an upstream MCP server.", ConnectionCreate, ConnectionOut,
             connection_create, "connections.write"),
    ToolSpec("COLLECTION_CONNECTIONS_LIST", "Connections, filtered, sorted and paginated (cursor).", ConnectionList,
             ConnectionPage, connection_list, "connections.read"),
    ToolSpec("COLLECTION_CONNECTIONS_GET", "One connection.", ConnectionRef, ConnectionOut, connection_get,
             "connections.read"),
    ToolSpec("COLLECTION_CONNECTIONS_UPDATE", "Change a connection's name, URL, status or credentials. Moving it to "
             "another origin drops its credentials unless the same call sets them.", ConnectionUpdate,
             ConnectionUpdated, connection_update, "connections.write"),
    ToolSpec("COLLECTION_CONNECTIONS_DELETE", "Delete a connection.", ConnectionRef, Done, connection_delete,
             "connections.write"),
    ToolSpec("CONNECTION_TEST", "Connect to the upstream with its credentials; report status, latency, server "
             "info and tools, and keep the tool catalog.", ConnectionRef, TestOut, connection_test,
             "connections.write"),
    ToolSpec("CONNECTION_CONFIGURE", "Set or remove the credentials (bearer, basic, headers) sent upstream.", ConnectionConfigure,
             ConnectionOut, connection_configure, "connections.write"),
    ToolSpec("ROLE_CREATE", "Create a custom role.", RoleCreate, RoleOut, role_create, "roles.manage"),
    ToolSpec("ROLE_LIST", "Built-in and custom roles.", InOrg, RoleList, role_list, "members.read"),
    ToolSpec("ROLE_UPDATE", "Change a custom role.", RoleUpdate, RoleOut, role_update, "roles.manage"),
    ToolSpec("ROLE_DELETE", "Delete a custom role no member holds.", RoleRefArgs, Done, role_delete,
             "roles.manage"),
    ToolSpec("API_KEY_CREATE", "Create an API key for yourself (shown once).", KeyCreate, KeyCreated,
             api_key_create, None),
    ToolSpec("API_KEY_LIST", "Your API keys (all keys, with keys.manage).", InOrg, KeyList, api_key_list, None),
    ToolSpec("API_KEY_REVOKE", "Revoke an API key (yours, or any with keys.manage).", KeyRef, KeyOut, api_key_revoke,
             None),
    ToolSpec("GATEWAY_STATUS", "Every live data plane and bridge: when it last reported, the org's snapshot "
             "version it serves against the published one, and any snapshot of the org it refused, with the "
             "reason.", InOrg, GatewayStatusOut, gateway_status, "gateway.read"),
)}
