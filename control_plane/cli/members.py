"""``mesh members``: who belongs to an org, with which role; invitations."""

from __future__ import annotations

import json
import sys

import click

from control_plane.cli.common import ORG_HELP, emit, services
from control_plane.services import orgs as org_service
from control_plane.services.roles import effective_permissions
from control_plane.settings import Settings


@click.group()
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
    with services(settings):
        user = org_service.find_user(email)
        member = org_service.add_member(org_service.find_org(org_ref), user, role)
        emit(as_json, _member_row(member, user), member.id)


@members.command("set-role")
@click.option("--email", required=True)
@click.option("--role", required=True)
@click.option("--org", "org_ref", help=ORG_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def members_set_role(settings: Settings, email, role, org_ref, as_json) -> None:
    with services(settings):
        user = org_service.find_user(email)
        member = org_service.update_member_role(org_service.find_org(org_ref), user, role)
        emit(as_json, _member_row(member, user), f"{email} is now {role}")


@members.command("remove")
@click.option("--email", required=True)
@click.option("--org", "org_ref", help=ORG_HELP)
@click.pass_obj
def members_remove(settings: Settings, email, org_ref) -> None:
    """Remove a member; their API keys stop working within a second."""
    with services(settings):
        org_service.remove_member(org_service.find_org(org_ref), org_service.find_user(email))
        click.echo(f"removed {email}")


@members.command("list")
@click.option("--org", "org_ref", help=ORG_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def members_list(settings: Settings, org_ref, as_json) -> None:
    with services(settings):
        rows = [_member_row(m, u) for m, u in org_service.list_members(org_service.find_org(org_ref))]
        emit(as_json, rows, "\n".join(f"{r['email']:<32} {r['role']}" for r in rows))


@members.command("invite")
@click.option("--email", required=True)
@click.option("--role", default="member", show_default=True)
@click.option("--org", "org_ref", help=ORG_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def members_invite(settings: Settings, email, role, org_ref, as_json) -> None:
    """Invite someone by email and print the invitation's token. The invitation email is written to
    <data dir>/outbox/ until an email provider exists."""
    with services(settings):
        token = org_service.invite(org_service.find_org(org_ref), email, role)
        emit(as_json, {"email": email, "role": role, "token": token}, token)


@members.command("accept")
@click.option("--token", required=True)
@click.option("--password-stdin", is_flag=True, help="Password for a new account, from standard input.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def members_accept(settings: Settings, token, password_stdin, as_json) -> None:
    """Accept an invitation (creating the account if there is none)."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    with services(settings):
        member = org_service.accept_invitation(token, password)
        emit(as_json, {"id": member.id, "org_id": member.org_id, "role": member.role}, member.id)


@members.command("permissions")
@click.option("--email", required=True)
@click.option("--org", "org_ref", help=ORG_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def members_permissions(settings: Settings, email, org_ref, as_json) -> None:
    """A member's effective permissions, decided by the evaluator the data plane runs."""
    with services(settings):
        effective = effective_permissions(org_service.find_org(org_ref), org_service.find_user(email))
        effective.pop("can")
        emit(as_json, effective, json.dumps(effective, indent=2))
