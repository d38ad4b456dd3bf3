"""The vault's part of the ``mesh`` command: ``mesh vault rotate|status``, and the options that
give a connection its secrets (``mesh connections add`` and ``set-secret``).

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

from control_plane.settings import Settings

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
    from control_plane.services.secrets import credential_fields, parse_env, parse_header

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


@click.group()
def vault() -> None:
    """The credential vault's master key."""


@vault.command("rotate")
@click.option("--batch-size", default=200, show_default=True, type=click.IntRange(1, 10_000),
              help="Secrets re-wrapped per transaction.")
@click.option("--grace", default=2.0, show_default=True, type=click.FloatRange(0, 60),
              help="Seconds to wait before the last sweep, for writes that began under the old key.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def vault_rotate(settings: Settings, batch_size: int, grace: float, as_json: bool) -> None:
    """Re-wrap every secret under a new master key while the gateway serves, then retire the old
    key. With the keyring file (no ENCRYPTION_KEY) the new key is generated here; with
    ENCRYPTION_KEY, set the new key there and the old one in ENCRYPTION_KEY_PREVIOUS first."""
    from flask import current_app

    from control_plane.cli import _emit, _services
    from control_plane.rotation import rotate_master_key
    from control_plane.vault_keys import BACKUP_WARNING

    with _services(settings):
        say = (lambda text: None) if as_json else (lambda text: click.echo(text, err=True))
        report = rotate_master_key(current_app.extensions["mesh.vault"], batch_size, grace, say)
        lines = [f"re-wrapped {report.rewrapped} secret(s) under master key {report.active_key}"]
        for where, reason in report.unreadable.items():
            lines.append(f"could not re-wrap {where} ({reason}): its connection is broken; set the secret again")
        if report.from_environment:
            lines.append("every readable secret is under ENCRYPTION_KEY now: remove ENCRYPTION_KEY_PREVIOUS "
                         "from the environment of every control-plane process")
        else:
            retired = ", ".join(report.retired_keys) or "none"
            lines.append(f"retired {retired}. {settings.master_key_file} holds only the new key. {BACKUP_WARNING}")
        _emit(as_json, {"active_key": report.active_key, "retired_keys": report.retired_keys,
                        "rewrapped": report.rewrapped, "unreadable": report.unreadable}, "\n".join(lines))


@vault.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def vault_status(settings: Settings, as_json: bool) -> None:
    """Where the master key comes from, which key wraps how many secrets, and which cannot be opened."""
    from flask import current_app

    from control_plane.cli import _emit, _services
    from control_plane.rotation import vault_status as status_of

    with _services(settings):
        status = status_of(current_app.extensions["mesh.vault"])
        lines = [f"master key: {status.active_key} (from {status.source}); held: {', '.join(status.held_keys)}"]
        lines += [f"  {kid}: {count} secret(s)" + ("" if kid in status.held_keys else "  (key not held!)")
                  for kid, count in sorted(status.secrets_by_key.items())]
        lines += [f"  cannot open {where} ({reason})" for where, reason in status.unreadable.items()]
        _emit(as_json, {"source": status.source, "active_key": status.active_key, "held_keys": status.held_keys,
                        "secrets_by_key": status.secrets_by_key, "unreadable": status.unreadable}, "\n".join(lines))
