"""``mesh orgs``: organizations."""

from __future__ import annotations

import click

from control_plane.cli.common import emit, services
from control_plane.services import orgs as org_service
from control_plane.settings import Settings


@click.group()
def orgs() -> None:
    """Organizations."""


@orgs.command("create")
@click.option("--name", required=True)
@click.option("--owner", default="admin@localhost", show_default=True, help="Email of the owning user.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def orgs_create(settings: Settings, name: str, owner: str, as_json: bool) -> None:
    with services(settings):
        org = org_service.create_org(name, org_service.find_user(owner))
        emit(as_json, {"id": org.id, "name": org.name, "slug": org.slug}, org.id)


@orgs.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def orgs_list(settings: Settings, as_json: bool) -> None:
    with services(settings):
        rows = [{"id": o.id, "name": o.name, "slug": o.slug} for o in org_service.list_orgs()]
        emit(as_json, rows, "\n".join(f"{r['id']}  {r['slug']:<20} {r['name']}" for r in rows))
