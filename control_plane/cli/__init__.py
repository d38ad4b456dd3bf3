"""``mesh``: start the gateway and administer it from a shell. Every command calls the service
layer, against the same database as a running ``mesh up``; the running data plane picks the
changes up through Redis.

One module per command group; ``common`` holds what they share (the service context and output).
Every module imports what it needs at the top (the whole tree in well under a second). The one
import made late for start-up time is the `mcp` SDK's client, which only ``connections test``
needs (``services.connections.test_connection``): it would double what every command costs."""

from __future__ import annotations

import click

from control_plane.cli.connections import connections
from control_plane.cli.gateway import migrate, up
from control_plane.cli.keys import keys
from control_plane.cli.members import members
from control_plane.cli.orgs import orgs
from control_plane.cli.roles import roles
from control_plane.cli.status import status
from control_plane.cli.users import users
from control_plane.cli.vault import vault
from control_plane.settings import Settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", envvar="MESH_DATA_DIR", default="data", show_default=True,
              help="Where SQLite, the local Redis and keys live.")
@click.pass_context
def main(ctx: click.Context, data_dir: str) -> None:
    """MCP Mesh: one authenticated, audited endpoint for all your MCP servers."""
    ctx.obj = Settings.from_env(data_dir)


for command in (up, migrate, status, orgs, connections, keys, roles, users, members, vault):
    main.add_command(command)
