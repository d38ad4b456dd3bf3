"""``python -m dataplane_addon``: the data plane as its own process, in reverse mode on one port.

It embeds a mitmproxy ``Master`` carrying only the addons a reverse proxy needs plus our chain,
rather than ``mitmdump``'s ~35 default addons: hook dispatch is most of mitmproxy's cost per
request (see ``shared/NOTES-libraries.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from mitmproxy import options
from mitmproxy.addons import core, dns_resolver, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master

from dataplane_addon.chain import build_chain

DEFAULT_BODY_LIMIT = "4m"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dataplane_addon", description=__doc__.splitlines()[0])
    parser.add_argument("--listen-host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--control-plane", default="127.0.0.1:3001", help="HOST:PORT of the Flask app")
    parser.add_argument("--bridge", default="127.0.0.1:3002",
                        help="HOST:PORT of the bridge for stdio and sse connections (token: MESH_BRIDGE_TOKEN)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--redis-prefix", default="mesh")
    parser.add_argument("--body-size-limit", default=DEFAULT_BODY_LIMIT, help="larger requests get 413")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    opts = options.Options()
    master = Master(opts, with_termlog=False)
    master.addons.add(core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(), tlsconfig.TlsConfig(),
                      dns_resolver.DnsResolver())
    master.addons.add(*build_chain())
    # Options that addons declare exist only now that the master holds them.
    opts.update(
        mode=[f"reverse:http://{args.control_plane}@{args.listen_host}:{args.port}"],
        connection_strategy="lazy",
        body_size_limit=args.body_size_limit,
        stream_large_bodies=None,  # never: streamed bodies skip inspection
        mesh_control_plane=args.control_plane,
        mesh_bridge=args.bridge,
        mesh_redis_url=args.redis_url,
        mesh_redis_prefix=args.redis_prefix,
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
