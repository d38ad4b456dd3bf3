"""``python -m dataplane_addon``: the data plane as its own process, in reverse mode on one port.

It embeds a mitmproxy ``Master`` carrying only the addons a reverse proxy needs plus our chain,
rather than ``mitmdump``'s ~35 default addons: hook dispatch is most of mitmproxy's cost per
request (see ``shared/NOTES-libraries.md``).

One process uses one core. ``--reuse-port`` lets several processes listen on the same port
(``SO_REUSEPORT``: the kernel spreads new connections across them), which is how the data plane
scales out on one machine; every process must be started with the flag.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from mitmproxy import options
from mitmproxy.addons import core, dns_resolver, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master
from mitmproxy.proxy import mode_servers

from dataplane_addon.chain import build_chain

DEFAULT_BODY_LIMIT = "4m"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# mitmproxy's own cap, on requests and responses alike: a memory guard well above any MCP
# request (those are limited to --body-size-limit by the routing addon, with a JSON answer).
HARD_BODY_CAP = "64m"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dataplane_addon", description=__doc__.splitlines()[0])
    parser.add_argument("--listen-host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--control-plane", default="127.0.0.1:3001", help="HOST:PORT of the Flask app")
    parser.add_argument("--bridge", default="127.0.0.1:3002",
                        help="HOST:PORT of the bridge for stdio and sse connections (token: MESH_BRIDGE_TOKEN)")
    # A URL carrying a password belongs in the environment: a command line is visible to every local user.
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL,
                        help="default: REDIS_URL from the environment, else " + DEFAULT_REDIS_URL)
    parser.add_argument("--redis-prefix", default="mesh")
    parser.add_argument("--body-size-limit", default=DEFAULT_BODY_LIMIT, help="larger requests get 413")
    parser.add_argument("--upstream-timeout", type=float, default=60.0,
                        help="seconds an upstream may take to start answering before the caller gets 504")
    parser.add_argument("--body-read-timeout", type=float, default=30.0,
                        help="seconds a client may take to send a request body before its connection is closed")
    parser.add_argument("--idle-timeout", type=int, default=3600,
                        help="seconds of silence after which a connection (e.g. an idle SSE stream) is closed")
    parser.add_argument("--session-secret-file", help="file with the hex secret that binds MCP sessions to "
                        "callers; data planes sharing traffic must share it (default: random per process)")
    parser.add_argument("--dataplane-key-file", default="",
                        help="the key connection credentials are sealed under (MESH_DATAPLANE_KEY wins)")
    parser.add_argument("--allow-private-upstreams", default="",
                        help="comma-separated CIDRs that connections registered over the network may reach")
    parser.add_argument("--metrics-listen", default="",
                        help="HOST:PORT serving /metrics and the detailed /health without a token "
                             "(on the public port they need MESH_METRICS_TOKEN)")
    parser.add_argument("--reuse-port", action="store_true",
                        help="listen with SO_REUSEPORT, so several data plane processes share the port")
    return parser.parse_args(argv)


def session_secret(path: str | None) -> str:
    if not path:
        return ""
    with open(path) as handle:
        return handle.read().strip()


def listen_with_reuse_port() -> None:
    """Make mitmproxy's TCP listeners set ``SO_REUSEPORT``.

    mitmproxy 12 opens a TCP-only mode's listener with one ``asyncio.start_server(handler, host,
    port)`` call that takes no ``reuse_port``. This wraps ``AsyncioServerInstance.listen`` to make
    that very call with ``reuse_port=True``; UDP modes and port 0 (which mitmproxy resolves
    itself) go to mitmproxy's own code. Installed only with ``--reuse-port``.
    """
    original = mode_servers.AsyncioServerInstance.listen

    async def listen(self, host: str, port: int):
        if self.mode.transport_protocol != "tcp" or port == 0:
            return await original(self, host, port)
        return [await asyncio.start_server(self.handle_stream, host, port, reuse_port=True)]

    mode_servers.AsyncioServerInstance.listen = listen


async def serve(args: argparse.Namespace) -> None:
    if args.reuse_port:
        listen_with_reuse_port()
    opts = options.Options()
    master = Master(opts, with_termlog=False)
    master.addons.add(core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(), tlsconfig.TlsConfig(),
                      dns_resolver.DnsResolver())
    master.addons.add(build_chain())
    # Options that addons declare exist only now that the master holds them.
    opts.update(
        mode=[f"reverse:http://{args.control_plane}@{args.listen_host}:{args.port}"],
        connection_strategy="lazy",
        body_size_limit=HARD_BODY_CAP,
        mesh_max_request_body=args.body_size_limit,
        tcp_timeout=args.idle_timeout,
        mesh_upstream_timeout=args.upstream_timeout,
        mesh_body_read_timeout=args.body_read_timeout,
        mesh_session_secret=session_secret(args.session_secret_file),
        stream_large_bodies=None,  # never: streamed bodies skip inspection
        mesh_control_plane=args.control_plane,
        mesh_bridge=args.bridge,
        mesh_redis_url=args.redis_url,
        mesh_redis_prefix=args.redis_prefix,
        mesh_dataplane_key_file=args.dataplane_key_file,
        mesh_allow_private_upstreams=args.allow_private_upstreams,
        mesh_metrics_listen=args.metrics_listen,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, master.shutdown)
    await master.run()


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s dataplane %(levelname)s %(message)s")
    logging.getLogger("mitmproxy").setLevel(logging.WARNING)  # no line per client connection
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
