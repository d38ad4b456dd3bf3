"""``mesh vault rotate|status``: the credential vault's master key."""

from __future__ import annotations

import click
from flask import current_app

from control_plane.cli.common import emit, json_option, services
from control_plane.rotation import rotate_master_key
from control_plane.rotation import vault_status as status_of
from control_plane.settings import Settings
from control_plane.vault_keys import BACKUP_WARNING


@click.group()
def vault() -> None:
    """The credential vault's master key."""


@vault.command("rotate")
@click.option("--batch-size", default=200, show_default=True, type=click.IntRange(1, 10_000),
              help="Secrets re-wrapped per transaction.")
@click.option("--grace", default=2.0, show_default=True, type=click.FloatRange(0, 60),
              help="Seconds to wait before the last sweep, for writes that began under the old key.")
@json_option
@click.pass_obj
def vault_rotate(settings: Settings, batch_size: int, grace: float, as_json: bool) -> None:
    """Re-wrap every secret under a new master key while the gateway serves, then retire the old
    key. With the keyring file (no ENCRYPTION_KEY) the new key is generated here; with
    ENCRYPTION_KEY, set the new key there and the old one in ENCRYPTION_KEY_PREVIOUS first."""
    with services(settings):
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
        emit(as_json, {"active_key": report.active_key, "retired_keys": report.retired_keys,
                       "rewrapped": report.rewrapped, "unreadable": report.unreadable}, "\n".join(lines))


@vault.command("status")
@json_option
@click.pass_obj
def vault_status(settings: Settings, as_json: bool) -> None:
    """Where the master key comes from, which key wraps how many secrets, and which cannot be opened."""
    with services(settings):
        status = status_of(current_app.extensions["mesh.vault"])
        lines = [f"master key: {status.active_key} (from {status.source}); held: {', '.join(status.held_keys)}"]
        lines += [f"  {kid}: {count} secret(s)" + ("" if kid in status.held_keys else "  (key not held!)")
                  for kid, count in sorted(status.secrets_by_key.items())]
        lines += [f"  cannot open {where} ({reason})" for where, reason in status.unreadable.items()]
        emit(as_json, {"source": status.source, "active_key": status.active_key, "held_keys": status.held_keys,
                       "secrets_by_key": status.secrets_by_key, "unreadable": status.unreadable}, "\n".join(lines))
