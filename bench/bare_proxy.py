"""The fair baseline: the same lean mitmproxy ``Master`` the data plane embeds (core,
proxyserver, next_layer, tlsconfig, dns_resolver), in reverse mode to the upstream, with NO
addon chain. The gap between this and the gateway is what our addons cost.

    python -m bench.bare_proxy --port PORT --upstream http://127.0.0.1:UPSTREAM_PORT
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from mitmproxy import options
from mitmproxy.addons import core, dns_resolver, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master


async def serve(port: int, upstream: str) -> None:
    opts = options.Options()
    master = Master(opts, with_termlog=False)
    master.addons.add(core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(), tlsconfig.TlsConfig(),
                      dns_resolver.DnsResolver())
    # The data plane's settings, so the two differ only by the addon chain.
    opts.update(mode=[f"reverse:{upstream}@127.0.0.1:{port}"], connection_strategy="lazy",
                body_size_limit="4m", stream_large_bodies=None)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, master.shutdown)
    await master.run()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="http://HOST:PORT")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.port, args.upstream))


if __name__ == "__main__":
    main()
