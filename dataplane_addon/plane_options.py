"""The options the data plane and the bridge both take, each declared here once.

A data plane addon declares its options in ``load(loader)``, as mitmproxy's own addons do; for
these it names them (``declare(loader, "mesh_redis_prefix")``) instead of spelling them out,
because the bridge takes the same options and must not import mitmproxy (it does not run it):
its own loader (``dataplane_addon.bridge.options``) is given the same declarations. Either way
``--set name=value`` sets them, with the one default and help written below.

No secret is an option: the Redis URL's default is ``REDIS_URL`` from the environment (the place
for one carrying a password), and the bridge token and the data-plane key come from the
environment only (``MESH_BRIDGE_TOKEN``, ``MESH_DATAPLANE_KEY``). Free of mitmproxy.
"""

from __future__ import annotations

import os

from shared.bus import DEFAULT_PREFIX
from shared.credentials import mask_url

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_BRIDGE = "127.0.0.1:3002"

URL_OPTIONS = frozenset({"mesh_redis_url"})  # may carry a password: masked wherever shown
# name -> (type, default or a function giving it when declared, help)
SHARED_OPTIONS = {
    "mesh_redis_url": (str, lambda: os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL,
                       "Redis holding the snapshots the control plane publishes (default: REDIS_URL from the "
                       f"environment, else {DEFAULT_REDIS_URL}; keep a URL with a password there, not on a "
                       "command line)."),
    "mesh_redis_prefix": (str, DEFAULT_PREFIX, "Prefix of every MCP Mesh key in Redis."),
    "mesh_bridge": (str, DEFAULT_BRIDGE,
                    "HOST:PORT of the bridge serving stdio and sse connections, on 127.0.0.1 (its token comes "
                    "from MESH_BRIDGE_TOKEN in the environment)."),
    "mesh_dataplane_key_file": (str, "",
                                "File holding the data-plane key that connection credentials and snapshots are "
                                "sealed under (MESH_DATAPLANE_KEY, when set, is used instead)."),
    "mesh_allow_private_upstreams": (str, "",
                                     "Comma-separated CIDRs of private addresses that connections registered over "
                                     "the network may reach (operator-registered ones may reach any private "
                                     "address)."),
}


def declare(loader, *names: str) -> None:
    """Declare the options ``names`` (keys of ``SHARED_OPTIONS``) on ``loader``: mitmproxy's, or
    the bridge's."""
    for name in names:
        typespec, default, help_text = SHARED_OPTIONS[name]
        loader.add_option(name, typespec, default() if callable(default) else default, help_text)


def describe(options: dict[str, dict]) -> str:
    """``--options``: each option's value in effect and its help, from ``{name: {"value": …,
    "help": …}}`` (the shape of mitmproxy's ``optmanager.dump_dicts``). A URL's password is masked."""
    def shown(name, value):
        return "" if value is None else mask_url(value) if name in URL_OPTIONS else value

    return "".join(f"{name} = {shown(name, spec['value'])}\n    {spec['help'].strip()}\n"
                   for name, spec in sorted(options.items()))


def parse_seconds(name: str, text: str) -> float:
    """A duration option's value: a positive number of seconds, written as text (``--set`` takes
    no floats). Raises ``ValueError`` naming the option."""
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, not {text!r}") from None
    if not 0 < seconds < float("inf"):
        raise ValueError(f"{name} must be a positive number of seconds, not {text!r}")
    return seconds
