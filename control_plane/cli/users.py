"""``mesh users``: user accounts."""

from __future__ import annotations

import click

from control_plane import presenters
from control_plane.cli.common import emit, json_option, read_password, services
from control_plane.services import orgs as org_service
from control_plane.services.actors import OPERATOR
from control_plane.settings import Settings


@click.group()
def users() -> None:
    """User accounts."""


@users.command("create")
@click.option("--email", required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (else a prompt).")
@json_option
@click.pass_obj
def users_create(settings: Settings, email, password_stdin, as_json) -> None:
    password = read_password(password_stdin)
    with services(settings):
        user = org_service.create_user(email, password)
        emit(as_json, presenters.user(user), user.id)


@users.command("list")
@json_option
@click.pass_obj
def users_list(settings: Settings, as_json) -> None:
    """Every user account (members of an org: `mesh members list`)."""
    with services(settings):
        rows = [presenters.user(u) for u in org_service.list_users(actor=OPERATOR)]
        emit(as_json, rows, "\n".join(f"{r['id']}  {r['email']}" for r in rows))
