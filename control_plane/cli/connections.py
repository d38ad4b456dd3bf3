"""``mesh connections``: the upstream MCP servers, and their secrets."""

from __future__ import annotations

import sys

import click

from control_plane import bridge_client, presenters
from control_plane.cli.common import emit, json_option, org_option, services
from control_plane.cli.connection_secrets import collect_secrets, secret_options
from control_plane.services import bridged_connections as bridged
from control_plane.services import connections as connection_service
from control_plane.services.actors import OPERATOR
from control_plane.services.orgs import find_org
from control_plane.services.secrets import find_connection, set_secrets
from control_plane.settings import Settings
from shared.vocabulary import Status

# A connection by id or name, in the org --org names.
connection_argument = click.argument("connection_ref", metavar="CONNECTION")


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
@org_option
@json_option
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
            conn = bridged.create_stdio_connection(org, name, command, args, secrets=secrets, actor=OPERATOR)
        elif sse_url is not None:
            conn = bridged.create_sse_connection(org, name, sse_url, secrets=secrets, actor=OPERATOR)
        else:
            conn = connection_service.create_connection(org, name, url, secrets=secrets, actor=OPERATOR)
        emit(as_json, presenters.connection(conn), conn.id)


@connections.command("set-secret")
@connection_argument
@secret_options
@click.option("--remove", "removals", multiple=True, metavar="FIELD",
              help="Remove a secret: bearer, basic, header:NAME or env:NAME; repeatable.")
@org_option
@json_option
@click.pass_obj
def connections_set_secret(settings: Settings, connection_ref, removals, org_ref, as_json, **secret_opts) -> None:
    """Set, replace or remove secrets of a connection (by id or name)."""
    with services(settings):
        org = find_org(org_ref)
        conn = find_connection(org, connection_ref)
        set_secrets(org, conn, collect_secrets(**secret_opts), tuple(removals), actor=OPERATOR)
        row = presenters.connection(conn)
        emit(as_json, row, f"{conn.id}: " + (_masks(row) or "no secrets"))


def _masks(row: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in row["credentials"].items())


def _line(row: dict) -> str:
    return (f"{row['id']}  {presenters.connection_state(row):<8} {row['transport']:<5} {row['name']:<24} "
            f"{presenters.connection_target(row)}  {_masks(row)}").rstrip()


@connections.command("list")
@org_option
@json_option
@click.pass_obj
def connections_list(settings: Settings, org_ref, as_json) -> None:
    """Connections, each with its state: a stdio or sse connection's as the running bridge reports
    it (`ready`, `waiting, restarts 4`), else the stored status."""
    with services(settings):
        org = find_org(org_ref)
        rows = bridge_client.shown(settings, connection_service.list_connections(org, actor=OPERATOR))
        emit(as_json, rows, "\n".join(_line(r) for r in rows))


@connections.command("get")
@connection_argument
@org_option
@json_option
@click.pass_obj
def connections_get(settings: Settings, connection_ref, org_ref, as_json) -> None:
    """One connection (by id or name)."""
    with services(settings):
        org = find_org(org_ref)
        row = bridge_client.shown(settings, [find_connection(org, connection_ref)])[0]
        emit(as_json, row, _line(row))


@connections.command("update")
@connection_argument
@click.option("--name", help="A new name.")
@click.option("--url", help="A new URL (http and sse connections). On another origin (scheme, host, port) the "
                            "connection's secrets are dropped unless this command sets them again.")
@click.option("--status", type=click.Choice([s.value for s in Status]),
              help="inactive: the gateway stops routing to it.")
@secret_options
@org_option
@json_option
@click.pass_obj
def connections_update(settings: Settings, connection_ref, name, url, status, org_ref, as_json, **secret_opts) -> None:
    """Change a connection's name, URL or status (by id or name)."""
    with services(settings):
        org = find_org(org_ref)
        conn = find_connection(org, connection_ref)
        conn, dropped = connection_service.update_connection(org, conn.id, name=name, url=url, status=status,
                                                             secrets=collect_secrets(**secret_opts), actor=OPERATOR)
        row = bridge_client.shown(settings, [conn])[0]
        note = f"\ndropped secrets {', '.join(dropped)}: they were for the old origin" if dropped else ""
        emit(as_json, {**row, "credentials_dropped": dropped}, _line(row) + note)


@connections.command("delete")
@connection_argument
@org_option
@click.pass_obj
def connections_delete(settings: Settings, connection_ref, org_ref) -> None:
    """Delete a connection (by id or name) and its secrets; the gateway stops routing to it."""
    with services(settings):
        org = find_org(org_ref)
        conn = find_connection(org, connection_ref)
        connection_service.delete_connection(org, conn.id, actor=OPERATOR)
        click.echo(f"deleted {conn.id}")


@connections.command("test")
@connection_argument
@org_option
@json_option
@click.pass_obj
def connections_test(settings: Settings, connection_ref, org_ref, as_json) -> None:
    """Connect to the upstream with the connection's secrets: its server, tools and latency, or
    why it failed (exit status 1). Keeps the tool catalog roles are written against."""
    with services(settings):
        org = find_org(org_ref)
        conn = find_connection(org, connection_ref)
        _, result = connection_service.test_connection(org, conn.id, actor=OPERATOR)
    row = presenters.probe(result)
    if result.ok:
        server = row["server"].get("name") or "the upstream"
        text = f"ok: {server} in {row['latency_ms']:.0f} ms; tools: {', '.join(row['tools']) or 'none'}"
    else:
        text = f"failed: {row['error']}"
    emit(as_json, row, text)
    sys.exit(0 if result.ok else 1)
