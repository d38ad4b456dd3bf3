"""``python -m dataplane_addon.bridge``: the bridge as its own process, on 127.0.0.1 only.

It follows the snapshots in Redis like the data plane does (refusing any whose MAC does not
verify under the data-plane key: nothing written straight into Redis is ever run) and reports
what it installed and refused (``snapshot_report``, for ``mesh status``); it runs every stdio and
sse connection under supervision and serves each at ``/bridge/<connection id>/mcp``.
``MESH_BRIDGE_TOKEN`` (in the environment) must be set: requests without it are refused. The
Redis URL comes from ``--redis-url`` or else ``REDIS_URL`` (the environment is the place for one
carrying a password: a command line is visible to every local user). ``MESH_STDIO_USER`` runs the stdio children as
another user (see ``child_isolation.py``); one that cannot be used stops the bridge at start.
On SIGTERM or SIGINT it stops serving, then stops every child it started, and exits 0.
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
from pathlib import Path

import anyio
import uvicorn

from dataplane_addon.inject import load_dataplane_keyring
from dataplane_addon.bridge.address import TOKEN_ENV
from dataplane_addon.bridge.bridged_connections import BridgedConnections, RouteReportingStore
from dataplane_addon.bridge.child_isolation import STDIO_USER_ENV, ChildIsolation, ChildUser, StdioUserError, \
    resolve_stdio_user
from dataplane_addon.bridge.http_app import BridgeApp
from dataplane_addon.snapshot_report import SnapshotReporter
from dataplane_addon.snapshot_store import SnapshotFollower
from shared.bus import BusKeys
from shared.upstream_addresses import AddressRules

LISTEN_HOST = "127.0.0.1"  # never anything else: the bridge trusts whoever holds the token
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
GRACEFUL_SECONDS = 2  # open client streams get this long before the children are stopped


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dataplane_addon.bridge", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=3002)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL,
                        help="default: REDIS_URL from the environment, else " + DEFAULT_REDIS_URL)
    parser.add_argument("--redis-prefix", default="mesh")
    parser.add_argument("--dataplane-key-file", default="",
                        help="the key connection credentials are sealed under (MESH_DATAPLANE_KEY wins)")
    parser.add_argument("--allow-private-upstreams", default="",
                        help="comma-separated CIDRs that sse connections registered over the network may reach")
    parser.add_argument("--gateway-ports", default="",
                        help="comma-separated ports of the gateway's other listeners, never an upstream")
    args = parser.parse_args(argv)
    try:
        ports = [args.port, *(int(p) for p in args.gateway_ports.split(",") if p.strip())]
        args.rules = AddressRules.from_settings(args.allow_private_upstreams, ports)
    except ValueError as error:
        parser.error(str(error))
    return args


class _HttpServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        # uvicorn would re-raise the signal once it has stopped serving, killing this process
        # before it stops its children; ``serve`` below handles the signals instead.
        yield


async def serve(args: argparse.Namespace, token: str, stdio_user: ChildUser | None) -> None:
    # Pid files and the stdio children's working directories: in the system's temporary
    # directory, never the data dir.
    with tempfile.TemporaryDirectory(prefix="mesh-bridge-") as run_dir:
        isolation = ChildIsolation.prepare(Path(run_dir), stdio_user)
        async with anyio.create_task_group() as tasks:
            keyring = load_dataplane_keyring(args.dataplane_key_file)
            connections = BridgedConnections(tasks, isolation, keyring, args.rules)
            follower = SnapshotFollower(RouteReportingStore(connections), lambda: keyring)  # checks each MAC
            keys = BusKeys(args.redis_prefix)
            tasks.start_soon(follower.follow, args.redis_url, keys)
            tasks.start_soon(SnapshotReporter(follower, "bridge").run, args.redis_url, keys)
            config = uvicorn.Config(BridgeApp(connections, token), host=LISTEN_HOST, port=args.port,
                                    log_level="warning", lifespan="off", timeout_graceful_shutdown=GRACEFUL_SECONDS)
            http = _HttpServer(config)
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
    args = parse_args(argv)
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        sys.exit(f"{TOKEN_ENV} must be set (mesh up sets it for the bridge and the data plane)")
    try:
        stdio_user = resolve_stdio_user(os.environ.get(STDIO_USER_ENV))
    except StdioUserError as error:
        sys.exit(f"error: {error}")
    asyncio.run(serve(args, token, stdio_user))


if __name__ == "__main__":
    main()
