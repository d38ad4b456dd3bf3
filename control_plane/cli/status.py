"""``mesh status``: what every live data plane and bridge reports it serves and refused."""

from __future__ import annotations

import click

from control_plane.cli.common import emit, json_option, services
from control_plane.services.actors import OPERATOR
from control_plane.services.dataplane_status import gateway_status
from control_plane.services.orgs import find_org
from control_plane.settings import Settings
from control_plane.status_view import status_out, status_text


@click.command()
@click.option("--org", "org_ref", help="Only this org's versions and refusals (id or slug); default: every org.")
@json_option
@click.pass_obj
def status(settings: Settings, org_ref, as_json) -> None:
    """Every live data plane and bridge: when it last reported, per org the snapshot version it
    installed against the one published, and the snapshots it refused, with the reason."""
    with services(settings):
        instances = gateway_status(find_org(org_ref) if org_ref else None, actor=OPERATOR)
        emit(as_json, status_out(instances), status_text(instances))
