"""``mesh keys``: API keys for MCP clients."""

from __future__ import annotations

from datetime import timedelta

import click

from control_plane import presenters
from control_plane.cli.common import emit, json_arg, json_option, org_option, services
from control_plane.models import utcnow
from control_plane.services import orgs as org_service
from control_plane.services.actors import OPERATOR
from control_plane.services.api_keys import (
    create_api_key,
    list_api_keys,
    revoke_api_key,
)
from control_plane.settings import Settings


def _when(value: str | None, none: str) -> str:
    return value[:16].replace("T", " ") if value else none


@click.group()
def keys() -> None:
    """API keys for MCP clients."""


@keys.command("create")
@click.option("--name", required=True)
@org_option
@click.option("--user", "user_ref", help="Owning user's email (default: the org's owner).")
@click.option("--scope", help='Narrow the key to part of its user\'s permissions, e.g. \'{"tools": {"*": ["echo"]}}\'.')
@click.option("--expires-in-days", type=click.IntRange(1, 3650), help="The key stops working after this many days.")
@json_option
@click.pass_obj
def keys_create(settings: Settings, name, org_ref, user_ref, scope, expires_in_days, as_json) -> None:
    """Create an API key and print it. It is shown this once and never again."""
    with services(settings):
        org = org_service.find_org(org_ref)
        user = org_service.find_user(user_ref) if user_ref else org_service.org_owner(org)
        expires = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
        key, row = create_api_key(org, user, name, scope=json_arg(scope, "--scope"), expires_at=expires, actor=OPERATOR)
        emit(as_json, {**presenters.api_key(row), "key": key}, key)


@keys.command("list")
@org_option
@json_option
@click.pass_obj
def keys_list(settings: Settings, org_ref, as_json) -> None:
    """API keys (never the keys themselves: their prefixes), with their state (active, revoked,
    expired), last use and expiry (UTC)."""
    with services(settings):
        rows = [presenters.api_key(r) for r in list_api_keys(org_service.find_org(org_ref), actor=OPERATOR)]
        emit(as_json, rows, "\n".join(
            f"{r['id']}  {r['prefix']}  {r['status']:<8} {r['name']:<24} last used {_when(r['last_used_at'], 'never')}"
            f"  expires {_when(r['expires_at'], 'never')}" for r in rows))


@keys.command("revoke")
@click.argument("key_id")
@org_option
@json_option
@click.pass_obj
def keys_revoke(settings: Settings, key_id, org_ref, as_json) -> None:
    """Revoke a key; every data plane refuses it within a second."""
    with services(settings):
        row = revoke_api_key(org_service.find_org(org_ref), key_id, actor=OPERATOR)
        emit(as_json, presenters.api_key(row), f"revoked {row.id}")
