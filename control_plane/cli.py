"""``mesh``: start the gateway and administer it from a shell. Every command calls the service
layer, against the same database as a running ``mesh up``; the running data plane picks the
changes up through Redis."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager

import click
import sqlalchemy as sa

from control_plane.cli_vault import collect_secrets, secret_options, vault
from control_plane.settings import Settings


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

    with _services(settings):
        org = svc.create_org(name, svc.find_user(owner))
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
@click.option("--url", required=True, help="The upstream's Streamable HTTP endpoint.")
@secret_options
@click.option("--org", "org_ref", help="Org id or slug (default: the first-run org `default`, or the only org).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def connections_add(settings: Settings, name, url, org_ref, as_json, **secret_opts) -> None:
    """Register a connection and print its id. Its secrets go into the vault, sealed; listings
    show only a mask of each."""
    from control_plane.services import connections as svc
    from control_plane.services.orgs import find_org
    from control_plane.services.secrets import secret_masks

    with _services(settings):
        org = find_org(org_ref)
        conn = svc.create_connection(org, name, url, secrets=collect_secrets(**secret_opts))
        _emit(as_json, _connection_row(conn, secret_masks(org)), conn.id)


@connections.command("set-secret")
@click.argument("connection_ref", metavar="CONNECTION")
@secret_options
@click.option("--remove", "removals", multiple=True, metavar="FIELD",
              help="Remove a secret: bearer, basic, header:NAME or env:NAME; repeatable.")
@click.option("--org", "org_ref", help="Org id or slug (default: the first-run org `default`, or the only org).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def connections_set_secret(settings: Settings, connection_ref, removals, org_ref, as_json, **secret_opts) -> None:
    """Set, replace or remove secrets of a connection (by id or name)."""
    from control_plane.services.orgs import find_org
    from control_plane.services.secrets import find_connection, secret_masks, set_secrets

    with _services(settings):
        org = find_org(org_ref)
        conn = find_connection(org, connection_ref)
        set_secrets(org, conn, collect_secrets(**secret_opts), tuple(removals))
        row = _connection_row(conn, secret_masks(org))
        _emit(as_json, row, f"{conn.id}: " + (", ".join(f"{k}={v}" for k, v in row["secrets"].items()) or "no secrets"))


def _connection_row(conn, masks: dict) -> dict:
    return {"id": conn.id, "org_id": conn.org_id, "name": conn.name, "url": conn.url, "transport": conn.transport,
            "status": conn.status, "secrets": masks.get(conn.id, {}), "created_at": conn.created_at}


@connections.command("list")
@click.option("--org", "org_ref", help="Org id or slug (default: the first-run org `default`, or the only org).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def connections_list(settings: Settings, org_ref, as_json) -> None:
    from control_plane.services import connections as svc
    from control_plane.services.orgs import find_org
    from control_plane.services.secrets import secret_masks

    with _services(settings):
        org = find_org(org_ref)
        masks = secret_masks(org)
        rows = [_connection_row(c, masks) for c in svc.list_connections(org)]
        _emit(as_json, rows, "\n".join(
            f"{r['id']}  {r['status']:<8} {r['name']:<24} {r['url']}"
            + "".join(f"  {k}={v}" for k, v in r["secrets"].items()) for r in rows))


@main.group()
def keys() -> None:
    """API keys for MCP clients."""


@keys.command("create")
@click.option("--name", required=True)
@click.option("--org", "org_ref", help="Org id or slug (default: the first-run org `default`, or the only org).")
@click.option("--user", "user_ref", help="Owning user's email (default: the org's owner).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def keys_create(settings: Settings, name, org_ref, user_ref, as_json) -> None:
    """Create an API key and print it. It is shown this once and never again."""
    from control_plane.services import orgs as org_svc
    from control_plane.services.api_keys import create_api_key

    with _services(settings):
        org = org_svc.find_org(org_ref)
        user = org_svc.find_user(user_ref) if user_ref else org_svc.org_owner(org)
        key, row = create_api_key(org, user, name)
        _emit(as_json, {"id": row.id, "name": row.name, "prefix": row.prefix, "org_id": org.id, "key": key}, key)


if __name__ == "__main__":  # pragma: no cover
    main()
