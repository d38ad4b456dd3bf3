"""What every ``mesh`` command shares: the service context it runs in and how it prints."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

import click
import sqlalchemy as sa

from control_plane.app import create_app
from control_plane.migrate import is_current
from control_plane.runner import with_running_gateway_redis
from control_plane.services.errors import ServiceError
from control_plane.settings import Settings

# The options most commands take.
org_option = click.option("--org", "org_ref",
                          help="Org id or slug (default: the first-run org `default`, or the only org).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def _where(settings: Settings) -> str:
    shown = sa.engine.make_url(settings.database_url).render_as_string(hide_password=True)
    return f"the database {shown} (data dir {settings.data_dir})"


HOW_TO_POINT = ("Run `mesh` in the folder where you ran `mesh up`, or say where that gateway keeps its data: "
                "--data-dir (MESH_DATA_DIR), or DATABASE_URL")


def _check_database(settings: Settings) -> None:
    """Refuse, saying what was tried and what to do, a database that is missing, unreachable
    or not migrated; never create one (SQLite would, on connecting)."""
    url = sa.engine.make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).exists():
        raise click.ClickException(f"there is no database here: tried {_where(settings)}. {HOW_TO_POINT}. "
                                   "Or make a new gateway here: `mesh up` (or just its database: `mesh migrate`).")
    engine = sa.create_engine(settings.database_url)
    try:
        current = is_current(engine)
    except sa.exc.SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or type(error).__name__).strip().splitlines()[0][:200]
        raise click.ClickException(f"cannot open {_where(settings)}: {reason}. Is that database running? "
                                   f"{HOW_TO_POINT}.") from None
    finally:
        engine.dispose()
    if not current:
        raise click.ClickException(f"{_where(settings)} is not migrated: run `mesh migrate` (or `mesh up`) first")


@contextmanager
def services(settings: Settings):
    """An app context on a migrated database, publishing to the running gateway's Redis, with
    service errors shown as CLI errors."""
    _check_database(settings)
    app = create_app(with_running_gateway_redis(settings))
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


def read_password(from_stdin: bool, prompt: bool = True) -> str | None:
    """One line of stdin with ``--password-stdin``; else a hidden prompt (twice), or None."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True) if prompt else None
