"""``python -m dataplane_addon.bridge``: the bridge as its own process, on 127.0.0.1 only.

It follows the snapshots in Redis like the data plane does (refusing any whose MAC does not
verify under the data-plane key: nothing written straight into Redis is ever run) and reports
what it installed and refused (``snapshot_report``, for ``mesh status``); it runs every stdio and
sse connection under supervision and serves each at ``/bridge/<connection id>/mcp``.
Options are set as the data plane's are, ``--set name=value`` (``--options`` lists them); those
both planes take (``mesh_bridge``, where it listens, ``mesh_redis_url``, ``mesh_redis_prefix``,
``mesh_dataplane_key_file``, ``mesh_allow_private_upstreams``) mean the same in both. No secret is
an option: ``MESH_BRIDGE_TOKEN`` (in the environment) must be set, and requests without it are
refused; the Redis URL defaults to ``REDIS_URL`` (the place for one carrying a password: a command
line is visible to every local user); ``MESH_DATAPLANE_KEY`` wins over the key file.
``MESH_STDIO_USER`` runs the stdio children as another user (see ``child_isolation.py``); one
that cannot be used stops the bridge at start. On SIGTERM or SIGINT it stops serving, then stops
every child it started, and exits 0. It never imports mitmproxy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import uvicorn

from dataplane_addon.bridge.address import TOKEN_ENV, parse_bridge_address
from dataplane_addon.bridge.bridged_connections import BridgedConnections, RouteReportingStore
from dataplane_addon.bridge.child_isolation import STDIO_USER_ENV, ChildIsolation, ChildUser, StdioUserError, \
    resolve_stdio_user
from dataplane_addon.bridge.http_app import BridgeApp
from dataplane_addon.bridge.options import BridgeOptions, OptionsError
from dataplane_addon.plane_options import SHARED_OPTIONS, declare, describe
from dataplane_addon.snapshot_report import SnapshotReporter
from dataplane_addon.snapshot_store import SnapshotFollower
from shared.bus import BusKeys
from shared.envelope import Keyring
from shared.keys import load_dataplane_keyring
from shared.upstream_addresses import AddressRules

PROG = "python -m dataplane_addon.bridge"
LISTEN_HOST = "127.0.0.1"  # never anything else: the bridge trusts whoever holds the token
GRACEFUL_SECONDS = 2  # open client streams get this long before the children are stopped


@dataclass(frozen=True)
class BridgeConfig:
    """What the bridge runs with, checked before anything starts."""
    port: int
    redis_url: str = field(repr=False)
    keys: BusKeys
    keyring: Keyring | None = field(repr=False)
    rules: AddressRules


def build_options() -> BridgeOptions:
    options = BridgeOptions()
    declare(options, *SHARED_OPTIONS)  # mesh_bridge is where the bridge itself listens
    options.add_option("mesh_gateway_ports", str, "",
                       "Comma-separated ports of the gateway's other listeners, which no upstream may be.")
    return options


def parse_args(argv=None) -> BridgeConfig:
    """The bridge's configuration from its command line; exits with a clear message if it cannot be used."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="setoptions", action="append", default=[], metavar="option=value",
                        help="set an option (--options lists them); may be repeated")
    parser.add_argument("--options", action="store_true",
                        help="show the options (with --set applied) and what each does, and exit")
    args = parser.parse_args(argv)
    options = build_options()
    try:
        options.set(*args.setoptions)
        bridge = _option(parse_bridge_address, "mesh_bridge", options.mesh_bridge, token="")
        if bridge.host != LISTEN_HOST:
            raise OptionsError(f"mesh_bridge: the bridge listens on {LISTEN_HOST} only, not {bridge.host}")
        ports = [bridge.port, *(_option(int, "mesh_gateway_ports", p) for p in options.mesh_gateway_ports.split(",")
                                if p.strip())]
        rules = _option(AddressRules.from_settings, "mesh_allow_private_upstreams",
                        options.mesh_allow_private_upstreams, ports)
        keyring = load_dataplane_keyring(options.mesh_dataplane_key_file)
    except ValueError as error:  # OptionsError and shared.envelope.KeyFormatError are ValueErrors
        sys.exit(f"{PROG}: {error}")
    if args.options:
        print(describe(options.dump_dicts()), end="")
        sys.exit(0)
    return BridgeConfig(bridge.port, options.mesh_redis_url, BusKeys(options.mesh_redis_prefix), keyring, rules)


def _option(parse, name: str, *args, **kwargs):
    """``parse(*args)``, its error naming the option."""
    try:
        return parse(*args, **kwargs)
    except ValueError as error:
        raise OptionsError(f"{name}: {error}") from None


class _HttpServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        # uvicorn would re-raise the signal once it has stopped serving, killing this process
        # before it stops its children; ``serve`` below handles the signals instead.
        yield


async def serve(config: BridgeConfig, token: str, stdio_user: ChildUser | None) -> None:
    # Pid files and the stdio children's working directories: in the system's temporary
    # directory, never the data dir.
    with tempfile.TemporaryDirectory(prefix="mesh-bridge-") as run_dir:
        isolation = ChildIsolation.prepare(Path(run_dir), stdio_user)
        async with anyio.create_task_group() as tasks:
            connections = BridgedConnections(tasks, isolation, config.keyring, config.rules)
            follower = SnapshotFollower(RouteReportingStore(connections), lambda: config.keyring)  # checks each MAC
            tasks.start_soon(follower.follow, config.redis_url, config.keys)
            tasks.start_soon(SnapshotReporter(follower, "bridge").run, config.redis_url, config.keys)
            uvicorn_config = uvicorn.Config(BridgeApp(connections, token), host=LISTEN_HOST, port=config.port,
                                            log_level="warning", lifespan="off",
                                            timeout_graceful_shutdown=GRACEFUL_SECONDS)
            http = _HttpServer(uvicorn_config)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, setattr, http, "should_exit", True)
            await http.serve()
            tasks.cancel_scope.cancel()  # every connection's task stops its upstream on the way out
    logging.getLogger("mesh.bridge").info("bridge stopped")


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bridge %(levelname)s %(message)s")
    logging.getLogger("mcp").setLevel(logging.WARNING)
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    config = parse_args(argv)
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        sys.exit(f"{TOKEN_ENV} must be set (mesh up sets it for the bridge and the data plane)")
    try:
        stdio_user = resolve_stdio_user(os.environ.get(STDIO_USER_ENV))
    except StdioUserError as error:
        sys.exit(f"error: {error}")
    asyncio.run(serve(config, token, stdio_user))


if __name__ == "__main__":
    main()
