"""``mesh up`` and ``mesh migrate``: run the gateway, bring its database up to date."""

from __future__ import annotations

import sys

import click
import sqlalchemy as sa

from control_plane.migrate import upgrade
from control_plane.runner import GatewayRunner
from control_plane.settings import Settings
from control_plane.vault import Vault
from control_plane.vault_keys import VaultKeyError


@click.command()
@click.pass_obj
def up(settings: Settings) -> None:
    """Start the whole gateway: Redis if none is configured, the control plane and the data plane.
    Ctrl-C stops everything."""
    sys.exit(GatewayRunner(settings).run())


@click.command()
@click.pass_obj
def migrate(settings: Settings) -> None:
    """Bring the database schema up to date."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(settings.database_url)
    try:
        upgrade(engine, master_keyring=Vault(settings).master_keyring)
    except VaultKeyError as error:
        raise click.ClickException(str(error)) from None
    finally:
        engine.dispose()
    click.echo("database is up to date")
