"""``mesh connections``: the upstream MCP servers, and their secrets."""

from __future__ import annotations

import shlex

import click

from control_plane.cli.common import ORG_HELP, emit, services
from control_plane.cli.connection_secrets import collect_secrets, secret_options
from control_plane.services import bridged_connections as bridged
from control_plane.services import connections as connection_service
from control_plane.services.orgs import find_org
from control_plane.services.secrets import find_connection, secret_masks, set_secrets
from control_plane.settings import Settings
from shared.credentials import mask_url


@click.group()
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
    if sum(x is not None for x in (url, sse_url, command_line)) != 1:
        raise click.UsageError("give exactly one of --url, --sse-url or --stdio")
    with services(settings):
        org = find_org(org_ref)
        secrets = collect_secrets(**secret_opts)
        if command_line is not None:
            command, args = bridged.parse_command_line(command_line)
            conn = bridged.create_stdio_connection(org, name, command, args, secrets=secrets)
        elif sse_url is not None:
            conn = bridged.create_sse_connection(org, name, sse_url, secrets=secrets)
        else:
            conn = connection_service.create_connection(org, name, url, secrets=secrets)
        emit(as_json, _connection_row(conn, secret_masks(org)), conn.id)


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
    with services(settings):
        org = find_org(org_ref)
        conn = find_connection(org, connection_ref)
        set_secrets(org, conn, collect_secrets(**secret_opts), tuple(removals))
        row = _connection_row(conn, secret_masks(org))
        emit(as_json, row, f"{conn.id}: " + (", ".join(f"{k}={v}" for k, v in row["secrets"].items()) or "no secrets"))


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
    with services(settings):
        org = find_org(org_ref)
        masks = secret_masks(org)
        rows = [_connection_row(c, masks) for c in connection_service.list_connections(org)]
        emit(as_json, rows, "\n".join(
            f"{r['id']}  {r['status']:<8} {r['transport']:<5} {r['name']:<24} {_connection_target(r)}"
            + "".join(f"  {k}={v}" for k, v in r["secrets"].items()) for r in rows))
