"""``mesh members``: who belongs to an org, with which role; invitations."""

from __future__ import annotations

import json

import click

from control_plane import presenters
from control_plane.cli.common import (
    emit,
    json_option,
    org_option,
    read_password,
    services,
)
from control_plane.services import orgs as org_service
from control_plane.services.actors import OPERATOR
from control_plane.services.roles import effective_permissions, role_names
from control_plane.settings import Settings


@click.group()
def members() -> None:
    """Who belongs to an org, with which role."""


def _change_member(settings: Settings, org_ref, email, as_json, change, text) -> None:
    """``change(org, user)`` -> the member; printed as ``text(row)``."""
    with services(settings):
        org, user = org_service.find_org(org_ref), org_service.find_user(email)
        row = presenters.member(change(org, user), user, role_names(org))
        emit(as_json, row, text(row))


@members.command("add")
@click.option("--email", required=True, help="An existing user (see `mesh users create`, or invite instead). "
                                              "Only here, as the operator: over the network people join by invitation.")
@click.option("--role", default="member", show_default=True, help="owner, admin, member, or a custom role.")
@org_option
@json_option
@click.pass_obj
def members_add(settings: Settings, email, role, org_ref, as_json) -> None:
    _change_member(settings, org_ref, email, as_json, lambda org, user: org_service.add_member(org, user, role, actor=OPERATOR),
                   lambda row: row["id"])


@members.command("set-role")
@click.option("--email", required=True)
@click.option("--role", required=True)
@org_option
@json_option
@click.pass_obj
def members_set_role(settings: Settings, email, role, org_ref, as_json) -> None:
    _change_member(settings, org_ref, email, as_json, lambda org, user: org_service.update_member_role(org, user, role, actor=OPERATOR),
                   lambda row: f"{row['email']} is now {row['role']}")


@members.command("remove")
@click.option("--email", required=True)
@org_option
@click.pass_obj
def members_remove(settings: Settings, email, org_ref) -> None:
    """Remove a member; their API keys stop working within a second."""
    with services(settings):
        org_service.remove_member(org_service.find_org(org_ref), org_service.find_user(email), actor=OPERATOR)
        click.echo(f"removed {email}")


@members.command("list")
@org_option
@json_option
@click.pass_obj
def members_list(settings: Settings, org_ref, as_json) -> None:
    """Members and the names of their roles."""
    with services(settings):
        org = org_service.find_org(org_ref)
        names = role_names(org)
        rows = [presenters.member(m, u, names) for m, u in org_service.list_members(org, actor=OPERATOR)]
        emit(as_json, rows, "\n".join(f"{r['email']:<32} {r['role']}" for r in rows))


@members.command("invite")
@click.option("--email", required=True)
@click.option("--role", default="member", show_default=True)
@org_option
@json_option
@click.pass_obj
def members_invite(settings: Settings, email, role, org_ref, as_json) -> None:
    """Invite someone by email and print the invitation's token. The invitation email is written to
    <data dir>/outbox/ until an email provider exists."""
    with services(settings):
        token = org_service.invite(org_service.find_org(org_ref), email, role, actor=OPERATOR)
        emit(as_json, {"email": email, "role": role, "token": token}, token)


@members.command("accept")
@click.option("--token", required=True)
@click.option("--password-stdin", is_flag=True, help="Password for a new account, from standard input.")
@json_option
@click.pass_obj
def members_accept(settings: Settings, token, password_stdin, as_json) -> None:
    """Accept an invitation (creating the account if there is none)."""
    password = read_password(password_stdin, prompt=False)
    with services(settings):
        member = org_service.accept_invitation(token, password)
        org, user = org_service.find_org(member.org_id), org_service.find_user(member.user_id)
        emit(as_json, presenters.member(member, user, role_names(org)), member.id)


@members.command("permissions")
@click.option("--email", required=True)
@org_option
@json_option
@click.pass_obj
def members_permissions(settings: Settings, email, org_ref, as_json) -> None:
    """A member's effective permissions, decided by the evaluator the data plane runs."""
    with services(settings):
        effective = effective_permissions(org_service.find_org(org_ref), org_service.find_user(email), actor=OPERATOR)
        effective.pop("can")
        emit(as_json, effective, json.dumps(effective, indent=2))
