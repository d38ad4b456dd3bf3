"""What every ``mesh`` command shares: the service context it runs in and how it prints."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager

import click
import sqlalchemy as sa

from control_plane.app import create_app
from control_plane.migrate import is_current
from control_plane.services.errors import ServiceError
from control_plane.settings import Settings

ORG_HELP = "Org id or slug (default: the first-run org `default`, or the only org)."


@contextmanager
def services(settings: Settings):
    """An app context on a migrated database, with service errors shown as CLI errors."""
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


def emit(as_json: bool, data, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def json_arg(text: str | None, what: str):
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as error:
        raise click.BadParameter(f"{what} must be JSON: {error}") from None


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)
