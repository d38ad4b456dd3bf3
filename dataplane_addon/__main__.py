"""``python -m dataplane_addon``: the data plane as its own process, a reverse proxy on one port.

It forwards every path that is not an MCP call to the control plane (``mesh_control_plane``).It embeds a mitmproxy ``Master`` carrying only the addons a reverse proxy needs plus our chain,
rather than ``mitmdump``'s ~35 default addons: hook dispatch is most of mitmproxy's cost per
request (see ``shared/NOTES-libraries.md``).

Options are set as with ``mitmdump``: ``--set name=value`` for any option, ours (declared once,
in the ``load()`` of the addon that uses them) or mitmproxy's own (``--options`` lists ours and
those whose defaults differ here),
and ``--listen-host`` / ``-p, --listen-port`` for where it listens. An unknown name is an error.
Only the defaults of a few of mitmproxy's own options differ here (``ENTRY_POINT_DEFAULTS``).
Secrets are never options: they come from the environment (``REDIS_URL``, ``MESH_BRIDGE_TOKEN``,
``MESH_DATAPLANE_KEY``, ``MESH_METRICS_TOKEN``) or from files named by options.

One process uses one core. ``--reuse-port`` lets several processes listen on the same port
(``SO_REUSEPORT``: the kernel spreads new connections across them), which is how the data plane
scales out on one machine; every process must be started with the flag.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from mitmproxy import exceptions, hooks, optmanager, options
from mitmproxy.addons import core, dns_resolver, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master
from mitmproxy.proxy import mode_servers

from dataplane_addon.chain import build_chain
from dataplane_addon.plane_options import describe

PROG = "python -m dataplane_addon"
# mitmproxy's own options whose defaults differ here; ``--set`` may still change them.
ENTRY_POINT_DEFAULTS = {
    "listen_host": "127.0.0.1",  # mitmproxy's default is every interface
    "connection_strategy": "lazy",  # else every client connection also dials the control plane
    # mitmproxy's own cap, on requests and responses alike: a memory guard well above any MCP
    # request (those are limited to mesh_max_request_body by an addon, with a JSON answer).
    "body_size_limit": "64m",
    "stream_large_bodies": None,  # never: streamed bodies skip inspection
    "tcp_timeout": 3600,  # seconds of silence after which a connection (an idle SSE stream) is closed
}


def make_parser(opts: options.Options) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    opts.make_parser(parser, "listen_host", metavar="HOST")
    opts.make_parser(parser, "listen_port", metavar="PORT", short="p")
    parser.add_argument("--set", dest="setoptions", action="append", default=[], metavar="option[=value]",
                        help="set an option, as mitmdump does (--options lists them); may be repeated")
    parser.add_argument("--options", action="store_true",
                        help="show the gateway's options (with --set applied) and what each does, and exit")
    parser.add_argument("--reuse-port", action="store_true",
                        help="listen with SO_REUSEPORT, so several data plane processes share the port")
    return parser


def configure(master: Master, argv) -> argparse.Namespace:
    """Apply the command line to ``master``'s options (its addons are loaded, so ours exist).
    Raises ``OptionsError`` for an unknown option or a value an addon refuses."""
    opts = master.options
    args = make_parser(opts).parse_args(argv)
    if any(spec.partition("=")[0] == "mode" for spec in args.setoptions):
        raise exceptions.OptionsError(f"mode: {PROG} is a reverse proxy in front of mesh_control_plane; for another "
                                      "mode run mitmdump -s dataplane_addon/mitmdump_script.py")
    opts.update(**ENTRY_POINT_DEFAULTS)
    opts.set(*args.setoptions)
    opts.update(**{name: getattr(args, name) for name in ("listen_host", "listen_port")
                   if getattr(args, name) is not None})
    opts.update(mode=[f"reverse:http://{opts.mesh_control_plane}"])  # on listen_host:listen_port
    return args


def build_master() -> Master:
    """A master with only what a reverse proxy needs, and the chain, configured with every
    option's default. Inside a running event loop. Raises ``OptionsError`` for a default an addon
    refuses (a bad ``MESH_DATAPLANE_KEY``, say)."""
    master = Master(options.Options(), with_termlog=False)
    master.addons.add(core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(), tlsconfig.TlsConfig(),
                      dns_resolver.DnsResolver())
    chain = build_chain()
    master.addons.add(chain)
    # An added addon is configured only for options that change later; as mitmproxy's script
    # loader does, configure it once with all of them, so an option left unset takes effect too.
    master.addons.invoke_addon_sync(chain, hooks.ConfigureHook(set(master.options.keys())))
    return master


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


async def serve(argv) -> None:
    try:
        master = build_master()
        args = configure(master, argv)
    except exceptions.OptionsError as error:
        sys.exit(f"{PROG}: {error}")
    if args.options:
        shown = [name for name in master.options.keys() if name.startswith("mesh_")]
        print(describe(optmanager.dump_dicts(master.options, [*ENTRY_POINT_DEFAULTS, "listen_port", *shown])), end="")
        return
    if args.reuse_port:
        listen_with_reuse_port()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, master.shutdown)
    await master.run()


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s dataplane %(levelname)s %(message)s")
    logging.getLogger("mitmproxy").setLevel(logging.WARNING)  # no line per client connection
    asyncio.run(serve(argv))


if __name__ == "__main__":
    main()
