"""``mesh orgs``: organizations."""

from __future__ import annotations

import click

from control_plane import presenters
from control_plane.cli.common import emit, json_option, org_option, services
from control_plane.services import orgs as org_service
from control_plane.services.actors import OPERATOR
from control_plane.services.errors import InvalidInput
from control_plane.settings import Settings


@click.group()
def orgs() -> None:
    """Organizations."""


@orgs.command("create")
@click.option("--name", required=True)
@click.option("--owner", default="admin@localhost", show_default=True, help="Email of the owning user.")
@json_option
@click.pass_obj
def orgs_create(settings: Settings, name: str, owner: str, as_json: bool) -> None:
    with services(settings):
        org = org_service.create_org(name, org_service.find_user(owner), actor=OPERATOR)
        emit(as_json, presenters.org(org), org.id)


@orgs.command("list")
@json_option
@click.pass_obj
def orgs_list(settings: Settings, as_json: bool) -> None:
    with services(settings):
        rows = [presenters.org(o) for o in org_service.orgs_of(OPERATOR)]
        emit(as_json, rows, "\n".join(_line(r) for r in rows))


def _line(row: dict) -> str:
    return f"{row['id']}  {row['slug']:<20} {row['name']}"


@orgs.command("get")
@org_option
@json_option
@click.pass_obj
def orgs_get(settings: Settings, org_ref, as_json: bool) -> None:
    with services(settings):
        row = presenters.org(org_service.find_org(org_ref))
        emit(as_json, row, _line(row))


@orgs.command("update")
@click.option("--name")
@click.option("--slug")
@org_option
@json_option
@click.pass_obj
def orgs_update(settings: Settings, name, slug, org_ref, as_json: bool) -> None:
    """Rename an organization or change its slug."""
    with services(settings):
        org = org_service.update_org(org_service.find_org(org_ref), name=name, slug=slug, actor=OPERATOR)
        row = presenters.org(org)
        emit(as_json, row, _line(row))


@orgs.command("delete")
@click.option("--org", "org_ref", required=True, help="Org id or slug.")
@click.option("--confirm-slug", required=True, help="The org's slug again, to confirm.")
@click.pass_obj
def orgs_delete(settings: Settings, org_ref, confirm_slug) -> None:
    """Delete an organization and everything in it."""
    with services(settings):
        org = org_service.find_org(org_ref)
        if confirm_slug != org.slug:
            raise InvalidInput(f"--confirm-slug must be the org's slug, {org.slug!r}")
        org_service.delete_org(org, actor=OPERATOR)
        click.echo(f"deleted {org.slug}")
