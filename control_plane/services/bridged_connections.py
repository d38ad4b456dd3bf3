"""Connections the gateway reaches through its bridge: stdio commands (``npx …``, ``uvx …``) and
servers that speak only the legacy HTTP+SSE transport (2024-11-05). The rest of the connections
area (``connections.py``) is shared: listing, header masking, URL checks.

A stdio connection runs a command on the gateway's own host, as the gateway's user. That is
more than any org role should grant, so only the operator (the ``mesh`` command, whoever holds
the database) may add one; members with ``connections.write`` may add sse connections like http
ones. Environment values are secrets, as header values are: they go to the child process and
nowhere else (listings show them masked; errors never quote them).
"""

from __future__ import annotations

import re
import shlex

from control_plane.models import Connection, Organization, db
from control_plane.services import commit_and_publish, org_changed
from control_plane.services.actors import OPERATOR, Actor, require
from control_plane.services.connections import mask_headers, validate_upstream_url
from control_plane.services.errors import Forbidden, InvalidInput

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
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


def parse_env(spec: str) -> tuple[str, str]:
    """``NAME=value`` -> (NAME, value). An error names the variable, never the value."""
    name, sep, value = spec.partition("=")
    if not sep or not ENV_NAME.fullmatch(name):
        raise InvalidInput(f"an environment variable must look like NAME=value, got {name[:40]!r}{'=…' if sep else ''}")
    return name, value


def mask_env(env: dict[str, str]) -> dict[str, str]:
    return mask_headers(env)


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("a connection needs a name of 1 to 200 characters")
    return name


def _check_stdio(command: str, args: list[str], env: dict[str, str]) -> None:
    if not command.strip() or len(command) > MAX_COMMAND or "\0" in command:
        raise InvalidInput(f"a stdio command must be 1 to {MAX_COMMAND} characters, without NUL")
    if len(args) > MAX_ARGS or any(not isinstance(a, str) or len(a) > MAX_ARG or "\0" in a for a in args):
        raise InvalidInput(f"a stdio command takes at most {MAX_ARGS} arguments of at most {MAX_ARG} characters")
    if len(env) > MAX_ENV:
        raise InvalidInput(f"a stdio connection takes at most {MAX_ENV} environment variables")
    for name, value in env.items():
        if not ENV_NAME.fullmatch(name) or not isinstance(value, str) or "\0" in value:
            raise InvalidInput(f"environment variable {name[:40]!r} needs a NAME of letters, digits and _ "
                               "and a value without NUL")


def _add(org: Organization, connection: Connection) -> Connection:
    db.session.add(connection)
    org_changed(org.id)
    commit_and_publish(org.id)
    return connection


def create_stdio_connection(org: Organization, name: str, command: str, args: list[str] | None = None,
                            env: dict[str, str] | None = None, *, actor: Actor = OPERATOR) -> Connection:
    """A connection whose upstream is ``command args…`` run by the bridge, speaking MCP on stdio."""
    require(actor, org, "connections.write")
    if not actor.is_operator:
        raise Forbidden("stdio connections run commands on the gateway's host: only the operator "
                        "(the `mesh` command) can add them")
    args, env = list(args or []), dict(env or {})
    _check_stdio(command, args, env)
    return _add(org, Connection(org_id=org.id, name=_check_name(name), url="", transport="stdio", status="active",
                                headers={}, command=command, args=args, env=env))


def create_sse_connection(org: Organization, name: str, url: str, headers: dict[str, str] | None = None, *,
                          actor: Actor = OPERATOR) -> Connection:
    """A connection to a server speaking the legacy HTTP+SSE transport at ``url`` (its GET
    endpoint, usually ``…/sse``); ``headers`` go with every request the bridge makes to it."""
    require(actor, org, "connections.write")
    return _add(org, Connection(org_id=org.id, name=_check_name(name), url=validate_upstream_url(url),
                                transport="sse", status="active", headers=dict(headers or {})))
