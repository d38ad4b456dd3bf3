"""``mesh users``: user accounts."""

from __future__ import annotations

import click

from control_plane.cli.common import emit, read_password, services
from control_plane.services import orgs as org_service
from control_plane.settings import Settings


@click.group()
def users() -> None:
    """User accounts."""


@users.command("create")
@click.option("--email", required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (else a prompt).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def users_create(settings: Settings, email, password_stdin, as_json) -> None:
    password = read_password(password_stdin)
    with services(settings):
        user = org_service.create_user(email, password)
        emit(as_json, {"id": user.id, "email": user.email}, user.id)
