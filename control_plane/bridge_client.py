"""How the control plane reaches the bridge of a running ``mesh up``: on loopback, with the token
``mesh up`` keeps in ``<data dir>/bridge.token`` while it runs (the bridge answers nothing
without it). Two uses: listings read its ``/health`` (per stdio and sse connection: state,
restarts, last error), and ``CONNECTION_TEST`` talks MCP to a stdio or sse connection through
it, as the data plane does. No token file, or nobody answering, means no gateway runs here."""

from __future__ import annotations

import json
import urllib.request

from control_plane import presenters
from control_plane.models import Connection
from control_plane.runner import BRIDGE_TOKEN_FILE
from control_plane.settings import Settings
from dataplane_addon.bridge.address import TOKEN_HEADER, connection_path
from shared.vocabulary import Transport

TIMEOUT = 1.0
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy


def token(settings: Settings) -> str | None:
    try:
        return (settings.data_dir / BRIDGE_TOKEN_FILE).read_text().strip() or None
    except OSError:
        return None


def headers(settings: Settings) -> dict[str, str] | None:
    """What a request to the bridge carries; None when no gateway runs with this data dir."""
    found = token(settings)
    return {TOKEN_HEADER: found} if found else None


def _url(settings: Settings, path: str) -> str:
    return f"http://{settings.bridge_address}{path}"


def connection_url(settings: Settings, connection_id: str) -> str:
    return _url(settings, connection_path(connection_id))


def health(settings: Settings) -> dict[str, dict] | None:
    """connection id -> its ``/health`` entry; None when no bridge of this data dir answers."""
    sent = headers(settings)
    if sent is None:
        return None
    request = urllib.request.Request(_url(settings, "/health"), headers=sent)
    try:
        with _DIRECT.open(request, timeout=TIMEOUT) as response:
            connections = json.load(response).get("connections")
    except (OSError, ValueError, AttributeError):
        return None
    return {cid: entry for cid, entry in (connections or {}).items() if isinstance(entry, dict)}


def shown(settings: Settings, connections: list[Connection]) -> list[dict]:
    """``connections`` as ``presenters.connection`` shows them, each bridged one with what the
    running bridge reports of it; the bridge is asked once, and only if one of them is bridged."""
    bridged = any(Transport(c.transport).bridged for c in connections)
    reported = (health(settings) or {}) if bridged else {}
    return [presenters.connection(c, entry if (entry := reported.get(c.id)) and entry.get("org_id") == c.org_id
                                  else None) for c in connections]
