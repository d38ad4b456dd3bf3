"""Connections the gateway reaches through its bridge: stdio commands (``npx …``, ``uvx …``) and
servers that speak only the legacy HTTP+SSE transport (2024-11-05). The rest of the connections
area (``connections.py``) is shared: listing, URL checks; their secrets are the vault's, as for
every connection (``secrets.py``): header values for sse, environment values (``env:NAME``)
for stdio, sealed, delivered sealed, opened by the bridge only to use them.

A stdio connection runs a command on the gateway's own host, as the gateway's user. That is
more than any org role should grant, so only the operator (the ``mesh`` command, whoever holds
the database) may add one; members with ``connections.write`` may add sse connections like http
ones.
"""

from __future__ import annotations

import shlex

from control_plane.models import Connection, Organization, new_id
from control_plane.services.actors import Actor, require
from control_plane.services.connections import (
    check_upstream_address,
    connection_name,
    save_new_connection,
    validate_upstream_url,
)
from control_plane.services.errors import Forbidden, InvalidInput
from control_plane.services.secrets import check_fields_for
from shared.vocabulary import Status, Transport

MAX_COMMAND = 1024
MAX_ARGS = 100
MAX_ARG = 4096
MAX_ENV = 100


def parse_command_line(text: str) -> tuple[str, list[str]]:
    """``npx -y @scope/pkg --flag 'a b'`` -> ("npx", ["-y", "@scope/pkg", "--flag", "a b"]).
    Quoting follows sh; nothing else of a shell applies (no variables, globs or pipes)."""
    try:
        words = shlex.split(text)
    except ValueError as error:
        raise InvalidInput(f"cannot split the command line: {error}") from None
    if not words:
        raise InvalidInput("a stdio connection needs a command")
    return words[0], words[1:]




def _check_stdio(command: str, args: list[str]) -> None:
    if not command.strip() or len(command) > MAX_COMMAND or "\0" in command:
        raise InvalidInput(f"a stdio command must be 1 to {MAX_COMMAND} characters, without NUL")
    if len(args) > MAX_ARGS or any(not isinstance(a, str) or len(a) > MAX_ARG or "\0" in a for a in args):
        raise InvalidInput(f"a stdio command takes at most {MAX_ARGS} arguments of at most {MAX_ARG} characters")


def create_stdio_connection(org: Organization, name: str, command: str, args: list[str] | None = None,
                            secrets: dict[str, str] | None = None, *, actor: Actor) -> Connection:
    """A connection whose upstream is ``command args…`` run by the bridge, speaking MCP on stdio.
    ``secrets`` may hold only ``env:NAME`` fields: the command's environment."""
    require(actor, org, "connections.write")
    if not actor.is_operator:
        raise Forbidden("stdio connections run commands on the gateway's host: only the operator "
                        "(the `mesh` command) can add them")
    secrets = dict(secrets or {})
    check_fields_for(Transport.STDIO, secrets)
    if len(secrets) > MAX_ENV:
        raise InvalidInput(f"a stdio connection takes at most {MAX_ENV} environment variables")
    args = list(args or [])
    _check_stdio(command, args)
    connection = Connection(id=new_id("conn"), org_id=org.id, name=connection_name(org, name), url="",
                            transport=Transport.STDIO, status=Status.ACTIVE, command=command, args=args)
    return save_new_connection(org, connection, secrets, actor=actor)


def create_sse_connection(org: Organization, name: str, url: str, secrets: dict[str, str] | None = None, *,
                          actor: Actor) -> Connection:
    """A connection to a server speaking the legacy HTTP+SSE transport at ``url`` (its GET
    endpoint, usually ``…/sse``); its credentials go with every request the bridge makes to it."""
    require(actor, org, "connections.write")
    secrets = dict(secrets or {})
    check_fields_for(Transport.SSE, secrets)
    url = validate_upstream_url(url)
    check_upstream_address(url, actor=actor)
    connection = Connection(id=new_id("conn"), org_id=org.id, name=connection_name(org, name), url=url,
                            transport=Transport.SSE, status=Status.ACTIVE, allow_private=actor.is_operator)
    return save_new_connection(org, connection, secrets, actor=actor)
