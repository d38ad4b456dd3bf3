"""``mesh roles``: custom roles."""

from __future__ import annotations

import click

from control_plane import presenters
from control_plane.cli.common import emit, json_arg, json_option, org_option, services
from control_plane.services import roles as role_service
from control_plane.services.actors import OPERATOR
from control_plane.services.orgs import find_org
from control_plane.settings import Settings


@click.group()
def roles() -> None:
    """Custom roles: which tools, prompts and resources, on which connections; which admin rights."""


@roles.command("create")
@click.option("--name", required=True)
@click.option("--permissions", required=True,
              help='JSON, e.g. \'{"tools": {"conn_abc": ["SEND_EMAIL", "LIST_*"], "*": ["search"]}}\'.')
@click.option("--description", default="")
@org_option
@json_option
@click.pass_obj
def roles_create(settings: Settings, name, permissions, description, org_ref, as_json) -> None:
    with services(settings):
        role = role_service.create_role(find_org(org_ref), name, json_arg(permissions, "--permissions"), description, actor=OPERATOR)
        emit(as_json, presenters.role(role), role.id)


@roles.command("update")
@click.argument("role_ref")
@click.option("--name")
@click.option("--permissions")
@click.option("--description")
@org_option
@json_option
@click.pass_obj
def roles_update(settings: Settings, role_ref, name, permissions, description, org_ref, as_json) -> None:
    """Change a role (by id or name); members holding it are affected within a second."""
    with services(settings):
        role = role_service.update_role(find_org(org_ref), role_ref, name=name,
                                        permissions=json_arg(permissions, "--permissions"), description=description, actor=OPERATOR)
        emit(as_json, presenters.role(role), f"updated {role.id}")


@roles.command("delete")
@click.argument("role_ref")
@org_option
@click.pass_obj
def roles_delete(settings: Settings, role_ref, org_ref) -> None:
    with services(settings):
        role_service.delete_role(find_org(org_ref), role_ref, actor=OPERATOR)
        click.echo(f"deleted {role_ref}")


@roles.command("list")
@org_option
@json_option
@click.pass_obj
def roles_list(settings: Settings, org_ref, as_json) -> None:
    with services(settings):
        rows = role_service.list_roles(find_org(org_ref), actor=OPERATOR)
        emit(as_json, rows, "\n".join(f"{r['id']:<24} {r['name']}{' (built-in)' if r['builtin'] else ''}"
                                       for r in rows))
