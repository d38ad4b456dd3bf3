"""``mesh``: start the gateway and administer it from a shell. Every command calls the service
layer, against the same database as a running ``mesh up``; the running data plane picks the
changes up through Redis."""

from __future__ import annotations

import json
import shlex
import sys
from contextlib import contextmanager
from datetime import timedelta

import click
import sqlalchemy as sa

from control_plane.cli_vault import collect_secrets, secret_options, vault
from control_plane.settings import Settings
from shared.credentials import mask_url

ORG_HELP = "Org id or slug (default: the first-run org `default`, or the only org)."


@contextmanager
def _services(settings: Settings):
    """An app context on a migrated database, with service errors shown as CLI errors."""
    from control_plane.app import create_app
    from control_plane.migrate import is_current
    from control_plane.services.errors import ServiceError

    engine = sa.create_engine(settings.database_url)
    try:
        current = is_current(engine)
    finally:
        engine.dispose()
    if not current:
        raise click.ClickException("the database is not migrated: run `mesh migrate` (or `mesh up`) first")
    app = create_app(settings)
    with app.app_context():
        try:
            yield
        except ServiceError as error:
            raise click.ClickException(str(error)) from None


def _emit(as_json: bool, data, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", envvar="MESH_DATA_DIR", default="data", show_default=True,
              help="Where SQLite, the local Redis and keys live.")
@click.pass_context
def main(ctx: click.Context, data_dir: str) -> None:
    """MCP Mesh: one authenticated, audited endpoint for all your MCP servers."""
    ctx.obj = Settings.from_env(data_dir)


main.add_command(vault)


@main.command()
@click.pass_obj
def up(settings: Settings) -> None:
    """Start the whole gateway: Redis if none is configured, the control plane and the data plane.
    Ctrl-C stops everything."""
    from control_plane.runner import GatewayRunner

    sys.exit(GatewayRunner(settings).run())


@main.command()
@click.pass_obj
def migrate(settings: Settings) -> None:
    """Bring the database schema up to date."""
    from control_plane.migrate import upgrade
    from control_plane.vault import Vault
    from control_plane.vault_keys import VaultKeyError

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(settings.database_url)
    try:
        upgrade(engine, master_keyring=Vault(settings).master_keyring)
    except VaultKeyError as error:
        raise click.ClickException(str(error)) from None
    finally:
        engine.dispose()
    click.echo("database is up to date")


@main.command()
@click.option("--org", "org_ref", help="Only this org's versions and refusals (id or slug); default: every org.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def status(settings: Settings, org_ref, as_json) -> None:
    """Every live data plane and bridge: when it last reported, per org the snapshot version it
    installed against the one published, and the snapshots it refused, with the reason."""
    from control_plane.services.actors import OPERATOR
    from control_plane.services.dataplane_status import gateway_status
    from control_plane.services.orgs import find_org
    from control_plane.status_view import status_out, status_text

    with _services(settings):
        instances = gateway_status(find_org(org_ref) if org_ref else None, actor=OPERATOR)
        _emit(as_json, status_out(instances), status_text(instances))


@main.group()
def orgs() -> None:
    """Organizations."""


@orgs.command("create")
@click.option("--name", required=True)
@click.option("--owner", default="admin@localhost", show_default=True, help="Email of the owning user.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def orgs_create(settings: Settings, name: str, owner: str, as_json: bool) -> None:
    from control_plane.services import orgs as svc
    from control_plane.services.actors import OPERATOR

    with _services(settings):
        org = svc.create_org(name, svc.find_user(owner), actor=OPERATOR)
        _emit(as_json, {"id": org.id, "name": org.name, "slug": org.slug}, org.id)


@orgs.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def orgs_list(settings: Settings, as_json: bool) -> None:
    from control_plane.services import orgs as svc

    with _services(settings):
        rows = [{"id": o.id, "name": o.name, "slug": o.slug} for o in svc.list_orgs()]
        _emit(as_json, rows, "\n".join(f"{r['id']}  {r['slug']:<20} {r['name']}" for r in rows))


@main.group()
def connections() -> None:
    """Upstream MCP servers reachable at /mcp/<connection id>."""


@connections.command("add")
@click.option("--name", required=True)
@click.option("--url", help="The upstream's Streamable HTTP endpoint.")
@click.option("--sse-url", help="An upstream speaking the legacy HTTP+SSE transport: its SSE endpoint (…/sse).")
@click.option("--stdio", "command_line", metavar='"COMMAND ARGS…"',
              help="Run this command and speak MCP on its stdin/stdout, e.g. "
                   '"npx -y @modelcontextprotocol/server-everything" (split like sh does; no shell runs it).')
@secret_options
@click.option("--org", "org_ref", help=ORG_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def connections_add(settings: Settings, name, url, sse_url, command_line, org_ref, as_json, **secret_opts) -> None:
    """Register a connection and print its id: exactly one of --url, --sse-url, --stdio. Its
    secrets (--bearer, --basic, --header for URLs; --env for a stdio command) go into the vault,
    sealed; listings show only a mask of each."""
    from control_plane.services import bridged_connections as bridged
    from control_plane.services import connections as svc
    from control_plane.services.actors import OPERATOR
    from control_plane.services.orgs import find_org
    from control_plane.services.secrets import secret_masks

    if sum(x is not None for x in (url, sse_url, command_line)) != 1:
        raise click.UsageError("give exactly one of --url, --sse-url or --stdio")
    with _services(settings):
        org = find_org(org_ref)
        secrets = collect_secrets(**secret_opts)
        if command_line is not None:
            command, args = bridged.parse_command_line(command_line)
            conn = bridged.create_stdio_connection(org, name, command, args, secrets=secrets, actor=OPERATOR)
        elif sse_url is not None:
            conn = bridged.create_sse_connection(org, name, sse_url, secrets=secrets, actor=OPERATOR)
        else:
            conn = svc.create_connection(org, name, url, secrets=secrets, actor=OPERATOR)
        _emit(as_json, _connection_row(conn, secret_masks(org)), conn.id)


@connections.command("set-secret")
@click.argument("connection_ref", metavar="CONNECTION")
@secret_options
@click.option("--remove", "removals", multiple=True, metavar="FIELD",
              help="Remove a secret: bearer, basic, header:NAME or env:NAME; repeatable.")
@click.option("--org", "org_ref", help=ORG_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def connections_set_secret(settings: Settings, connection_ref, removals, org_ref, as_json, **secret_opts) -> None:
    """Set, replace or remove secrets of a connection (by id or name)."""
    from control_plane.services.actors import OPERATOR
    from control_plane.services.orgs import find_org
    from control_plane.services.secrets import find_connection, secret_masks, set_secrets

    with _services(settings):
        org = find_org(org_ref)
        conn = find_connection(org, connection_ref)
        set_secrets(org, conn, collect_secrets(**secret_opts), tuple(removals), actor=OPERATOR)
        row = _connection_row(conn, secret_masks(org))
        _emit(as_json, row, f"{conn.id}: " + (", ".join(f"{k}={v}" for k, v in row["secrets"].items()) or "no secrets"))


def _connection_row(conn, masks: dict) -> dict:
    # Query values may be credentials: shown masked, like every secret (shared.credentials.mask_url).
    return {"id": conn.id, "org_id": conn.org_id, "name": conn.name, "url": mask_url(conn.url),
            "transport": conn.transport,
            "status": conn.status, "command": conn.command, "args": list(conn.args or []),
            "secrets": masks.get(conn.id, {}), "created_at": conn.created_at}


def _connection_target(row: dict) -> str:
    return shlex.join([row["command"], *row["args"]]) if row["transport"] == "stdio" else row["url"]


@connections.command("list")
@click.option("--org", "org_ref", help=ORG_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def connections_list(settings: Settings, org_ref, as_json) -> None:
    from control_plane.services import connections as svc
    from control_plane.services.actors import OPERATOR
    from control_plane.services.orgs import find_org
    from control_plane.services.secrets import secret_masks

    with _services(settings):
        org = find_org(org_ref)
        masks = secret_masks(org)
        rows = [_connection_row(c, masks) for c in svc.list_connections(org, actor=OPERATOR)]
        _emit(as_json, rows, "\n".join(
            f"{r['id']}  {r['status']:<8} {r['transport']:<5} {r['name']:<24} {_connection_target(r)}"
            + "".join(f"  {k}={v}" for k, v in r["secrets"].items()) for r in rows))


def _json_arg(text: str | None, what: str):
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as error:
        raise click.BadParameter(f"{what} must be JSON: {error}") from None


def _key_row(row) -> dict:
    from shared.policy import readable_scope

    return {"id": row.id, "name": row.name, "prefix": row.prefix, "org_id": row.org_id, "user_id": row.user_id,
            "scope": readable_scope(row.scope) or None, "created_at": row.created_at, "expires_at": row.expires_at,
            "revoked_at": row.revoked_at, "last_used_at": row.last_used_at}


@main.group()
def keys() -> None:
    """API keys for MCP clients."""


@keys.command("create")
@click.option("--name", required=True)
@click.option("--org", "org_ref", help=ORG_HELP)
@click.option("--user", "user_ref", help="Owning user's email (default: the org's owner).")
@click.option("--scope", help='Narrow the key to part of its user\'s permissions, e.g. \'{"tools": {"*": ["echo"]}}\'.')
@click.option("--expires-in-days", type=click.IntRange(1, 3650), help="The key stops working after this many days.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def keys_create(settings: Settings, name, org_ref, user_ref, scope, expires_in_days, as_json) -> None:
    """Create an API key and print it. It is shown this once and never again."""
    from control_plane.models import utcnow
    from control_plane.services import orgs as org_svc
    from control_plane.services.actors import OPERATOR
    from control_plane.services.api_keys import create_api_key

    with _services(settings):
        org = org_svc.find_org(org_ref)
        user = org_svc.find_user(user_ref) if user_ref else org_svc.org_owner(org)
        expires = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
        key, row = create_api_key(org, user, name, scope=_json_arg(scope, "--scope"), expires_at=expires,
                                  actor=OPERATOR)
        _emit(as_json, {**_key_row(row), "key": key}, key)


@keys.command("list")
@click.option("--org", "org_ref", help=ORG_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def keys_list(settings: Settings, org_ref, as_json) -> None:
    """API keys (never the keys themselves: their prefixes)."""
    from control_plane.services.actors import OPERATOR
    from control_plane.services.api_keys import list_api_keys
    from control_plane.services.orgs import find_org

    with _services(settings):
        rows = [_key_row(r) for r in list_api_keys(find_org(org_ref), actor=OPERATOR)]
        _emit(as_json, rows, "\n".join(
            f"{r['id']}  {r['prefix']}  {'revoked' if r['revoked_at'] else 'active':<8} {r['name']}" for r in rows))


@keys.command("revoke")
@click.argument("key_id")
@click.option("--org", "org_ref", help=ORG_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def keys_revoke(settings: Settings, key_id, org_ref, as_json) -> None:
    """Revoke a key; every data plane refuses it within a second."""
    from control_plane.services.actors import OPERATOR
    from control_plane.services.api_keys import revoke_api_key
    from control_plane.services.orgs import find_org

    with _services(settings):
        row = revoke_api_key(find_org(org_ref), key_id, actor=OPERATOR)
        _emit(as_json, _key_row(row), f"revoked {row.id}")


@main.group()
def roles() -> None:
    """Custom roles: which tools, prompts and resources, on which connections; which admin rights."""


def _role_row(role) -> dict:
    return {"id": role.id, "name": role.name, "description": role.description, "permissions": role.permissions}


@roles.command("create")
@click.option("--name", required=True)
@click.option("--permissions", required=True,
              help='JSON, e.g. \'{"tools": {"conn_abc": ["SEND_EMAIL", "LIST_*"], "*": ["search"]}}\'.')
@click.option("--description", default="")
@click.option("--org", "org_ref", help=ORG_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def roles_create(settings: Settings, name, permissions, description, org_ref, as_json) -> None:
    from control_plane.services import roles as svc
    from control_plane.services.actors import OPERATOR
    from control_plane.services.orgs import find_org

    with _services(settings):
        role = svc.create_role(find_org(org_ref), name, _json_arg(permissions, "--permissions"), description,
                               actor=OPERATOR)
        _emit(as_json, _role_row(role), role.id)


@roles.command("update")
@click.argument("role_ref")
@click.option("--name")
@click.option("--permissions")
@click.option("--description")
@click.option("--org", "org_ref", help=ORG_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def roles_update(settings: Settings, role_ref, name, permissions, description, org_ref, as_json) -> None:
    """Change a role (by id or name); members holding it are affected within a second."""
    from control_plane.services import roles as svc
    from control_plane.services.actors import OPERATOR
    from control_plane.services.orgs import find_org

    with _services(settings):
        role = svc.update_role(find_org(org_ref), role_ref, name=name,
                               permissions=_json_arg(permissions, "--permissions"), description=description,
                               actor=OPERATOR)
        _emit(as_json, _role_row(role), f"updated {role.id}")


@roles.command("delete")
@click.argument("role_ref")
@click.option("--org", "org_ref", help=ORG_HELP)
@click.pass_obj
def roles_delete(settings: Settings, role_ref, org_ref) -> None:
    from control_plane.services import roles as svc
    from control_plane.services.actors import OPERATOR
    from control_plane.services.orgs import find_org

    with _services(settings):
        svc.delete_role(find_org(org_ref), role_ref, actor=OPERATOR)
        click.echo(f"deleted {role_ref}")


@roles.command("list")
@click.option("--org", "org_ref", help=ORG_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def roles_list(settings: Settings, org_ref, as_json) -> None:
    from control_plane.services import roles as svc
    from control_plane.services.actors import OPERATOR
    from control_plane.services.orgs import find_org

    with _services(settings):
        rows = svc.list_roles(find_org(org_ref), actor=OPERATOR)
        _emit(as_json, rows, "\n".join(f"{r['id']:<24} {r['name']}{' (built-in)' if r['builtin'] else ''}"
                                        for r in rows))


@main.group()
def users() -> None:
    """User accounts."""


@users.command("create")
@click.option("--email", required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (else a prompt).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def users_create(settings: Settings, email, password_stdin, as_json) -> None:
    from control_plane.services import orgs as svc

    password = _password(password_stdin)
    with _services(settings):
        user = svc.create_user(email, password)
        _emit(as_json, {"id": user.id, "email": user.email}, user.id)


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@main.group()
def members() -> None:
    """Who belongs to an org, with which role."""


def _member_row(member, user) -> dict:
    return {"id": member.id, "org_id": member.org_id, "user_id": user.id, "email": user.email, "role": member.role}


@members.command("add")
@click.option("--email", required=True, help="An existing user (see `mesh users create`, or invite instead). "
                                              "Only here, as the operator: over the network people join by invitation.")
@click.option("--role", default="member", show_default=True, help="owner, admin, member, or a custom role.")
@click.option("--org", "org_ref", help=ORG_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def members_add(settings: Settings, email, role, org_ref, as_json) -> None:
    from control_plane.services import orgs as svc
    from control_plane.services.actors import OPERATOR

    with _services(settings):
        user = svc.find_user(email)
        member = svc.add_member(svc.find_org(org_ref), user, role, actor=OPERATOR)
        _emit(as_json, _member_row(member, user), member.id)


@members.command("set-role")
@click.option("--email", required=True)
@click.option("--role", required=True)
@click.option("--org", "org_ref", help=ORG_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def members_set_role(settings: Settings, email, role, org_ref, as_json) -> None:
    from control_plane.services import orgs as svc
    from control_plane.services.actors import OPERATOR

    with _services(settings):
        user = svc.find_user(email)
        member = svc.update_member_role(svc.find_org(org_ref), user, role, actor=OPERATOR)
        _emit(as_json, _member_row(member, user), f"{email} is now {role}")


@members.command("remove")
@click.option("--email", required=True)
@click.option("--org", "org_ref", help=ORG_HELP)
@click.pass_obj
def members_remove(settings: Settings, email, org_ref) -> None:
    """Remove a member; their API keys stop working within a second."""
    from control_plane.services import orgs as svc
    from control_plane.services.actors import OPERATOR

    with _services(settings):
        svc.remove_member(svc.find_org(org_ref), svc.find_user(email), actor=OPERATOR)
        click.echo(f"removed {email}")


@members.command("list")
@click.option("--org", "org_ref", help=ORG_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def members_list(settings: Settings, org_ref, as_json) -> None:
    from control_plane.services import orgs as svc
    from control_plane.services.actors import OPERATOR

    with _services(settings):
        rows = [_member_row(m, u) for m, u in svc.list_members(svc.find_org(org_ref), actor=OPERATOR)]
        _emit(as_json, rows, "\n".join(f"{r['email']:<32} {r['role']}" for r in rows))


@members.command("invite")
@click.option("--email", required=True)
@click.option("--role", default="member", show_default=True)
@click.option("--org", "org_ref", help=ORG_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def members_invite(settings: Settings, email, role, org_ref, as_json) -> None:
    """Invite someone by email and print the invitation's token. The invitation email is written to
    <data dir>/outbox/ until an email provider exists."""
    from control_plane.services import orgs as svc
    from control_plane.services.actors import OPERATOR

    with _services(settings):
        token = svc.invite(svc.find_org(org_ref), email, role, actor=OPERATOR)
        _emit(as_json, {"email": email, "role": role, "token": token}, token)


@members.command("accept")
@click.option("--token", required=True)
@click.option("--password-stdin", is_flag=True, help="Password for a new account, from standard input.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def members_accept(settings: Settings, token, password_stdin, as_json) -> None:
    """Accept an invitation (creating the account if there is none)."""
    from control_plane.services import orgs as svc

    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    with _services(settings):
        member = svc.accept_invitation(token, password)
        _emit(as_json, {"id": member.id, "org_id": member.org_id, "role": member.role}, member.id)


@members.command("permissions")
@click.option("--email", required=True)
@click.option("--org", "org_ref", help=ORG_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def members_permissions(settings: Settings, email, org_ref, as_json) -> None:
    """A member's effective permissions, decided by the evaluator the data plane runs."""
    from control_plane.services import orgs as svc
    from control_plane.services.actors import OPERATOR
    from control_plane.services.roles import effective_permissions

    with _services(settings):
        effective = effective_permissions(svc.find_org(org_ref), svc.find_user(email), actor=OPERATOR)
        effective.pop("can")
        _emit(as_json, effective, json.dumps(effective, indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
