"""The options that give a connection its secrets (``mesh connections add`` and ``set-secret``).

A secret typed on a command line stays in the shell's history and shows in ``ps``. So every
secret option has a form that reads it from elsewhere: ``--bearer -`` and ``--basic -`` read one
line from stdin (a hidden prompt on a terminal), and ``--bearer-env VAR``, ``--basic-env VAR``,
``--header-env "Name: VAR"`` read an environment variable. Nothing here echoes a value back.
"""

from __future__ import annotations

import functools
import os
import sys

import click

from control_plane.services.secrets import credential_fields, parse_env, parse_header

STDIN = "-"


def secret_options(command):
    """The options that set a connection's secrets, for ``connections add`` and ``set-secret``."""
    options = [
        click.option("--bearer", metavar="TOKEN|-", help="Sent as 'Authorization: Bearer TOKEN'; '-' reads stdin."),
        click.option("--bearer-env", metavar="VAR",
                     help="Like --bearer, the token read from environment variable VAR."),
        click.option("--basic", metavar="USER:PASS|-", help="Sent as HTTP basic auth; '-' reads stdin."),
        click.option("--basic-env", metavar="VAR", help="Like --basic, USER:PASS read from environment variable VAR."),
        click.option("--header", "headers", multiple=True, metavar='"NAME: VALUE"',
                     help="A header sent to the upstream, e.g. 'X-API-Key: …'; repeatable."),
        click.option("--header-env", "header_envs", multiple=True, metavar='"NAME: VAR"',
                     help="A header whose value is read from environment variable VAR; repeatable."),
        click.option("--env", "envs", multiple=True, metavar="NAME=VALUE",
                     help="An environment variable for a stdio server; repeatable."),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), command)


def collect_secrets(bearer, bearer_env, basic, basic_env, headers, header_envs, envs) -> dict[str, str]:
    """The vault fields the secret options ask for (``services.secrets.credential_fields``)."""
    if bearer is not None and bearer_env:
        raise click.UsageError("give --bearer or --bearer-env, not both")
    if basic is not None and basic_env:
        raise click.UsageError("give --basic or --basic-env, not both")
    if bearer == STDIN and basic == STDIN:
        raise click.UsageError("only one secret can be read from stdin")
    header_values = dict(parse_header(spec) for spec in headers)
    for spec in header_envs:
        name, variable = parse_header(spec)
        header_values[name] = _from_environment(variable, f"--header-env {name}")
    return credential_fields(
        bearer=_from_environment(bearer_env, "--bearer-env") if bearer_env else _maybe_stdin(bearer, "Bearer token"),
        basic=_from_environment(basic_env, "--basic-env") if basic_env else _maybe_stdin(basic, "USER:PASSWORD"),
        headers=header_values,
        env=dict(parse_env(spec) for spec in envs),
    )


def _maybe_stdin(value: str | None, prompt: str) -> str | None:
    if value != STDIN:
        return value
    stream = sys.stdin  # click.get_text_stream is deprecated; CliRunner swaps sys.stdin as well
    if stream.isatty():
        return click.prompt(prompt, hide_input=True)
    return stream.readline().rstrip("\r\n")


def _from_environment(variable: str, option: str) -> str:
    value = os.environ.get(variable)
    if value is None:
        raise click.UsageError(f"{option}: environment variable {variable} is not set")
    return value
