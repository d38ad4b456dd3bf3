"""Upstream addresses: every connection the data plane opens for an MCP call goes only where
``shared.upstream_addresses`` allows that call's connection to go, checked at connect time.

- Per call (``request``, after ``inject`` has pointed it at its upstream): an upstream written
  as an IP address is decided at once, under this call's rule (cheap: decisions are cached), so
  a connection reused for it, opened for another call perhaps held to a more lenient rule, does
  not matter. An upstream named by a host name is noted under its client connection and target
  (host, port), and a connection to that target which the client already holds, and which this
  call's rule would refuse, is closed first, so mitmproxy opens a new one (checked below)
  instead of reusing it.
- Per connection (``server_connect``): the target is resolved and every address checked under
  the strictest rule among the calls waiting for it; a refusal kills the connection before a
  packet is sent, and the calls get 502 naming the reason (``protocol_errors``).
- ``server_connected``: the address actually reached is checked again (a name may resolve
  otherwise between the check and the connect: DNS rebinding); a refused one is cut off before a
  byte of the request is written.

The rules: connections registered by the operator may reach loopback and private addresses,
those registered over the network only the ranges in ``mesh_allow_private_upstreams``; no
upstream is ever a link-local or metadata address or one of the gateway's own ports
(``mesh_control_plane``, ``mesh_bridge``, ``mesh_metrics_listen`` and the listen ports). The
bridge itself, where stdio and sse connections are served, is the gateway's own: calls routed
there are not checked here (the bridge checks the sse servers it connects to).
"""

from __future__ import annotations

import logging

from mitmproxy import connection, ctx, http
from mitmproxy.proxy.mode_specs import ProxyMode

from dataplane_addon.call import CALL, McpCall, address_refused, connection_handler, undecided_call
from dataplane_addon.plane_options import declare
from dataplane_addon.routing import parse_control_plane
from shared.upstream_addresses import AddressRules, literal_address, resolve_async

log = logging.getLogger(__name__)

_NOTED = "mesh.upstream_target"  # flow.metadata: the key the call is noted under


class UpstreamAddressGuard:
    def __init__(self) -> None:
        self.rules = AddressRules()
        self.waiting: dict[tuple[str, str, int], list[http.HTTPFlow]] = {}  # (client id, host, port) -> calls
        # Connections refused before connecting, by target. mitmproxy keeps a failed connection and
        # answers later calls of the same client connection to its target with its error, without
        # asking again; a later call may be held to another rule, so it gets a fresh check.
        self.refused: dict[tuple[str, str, int], connection.Server] = {}

    def load(self, loader) -> None:
        declare(loader, "mesh_allow_private_upstreams")  # the bridge takes it too

    def configure(self, updated) -> None:
        from mitmproxy.exceptions import OptionsError

        if updated & {"mesh_allow_private_upstreams", "mesh_control_plane", "mesh_bridge", "mesh_metrics_listen",
                      "mode", "listen_port"}:
            try:
                self.rules = AddressRules.from_settings(ctx.options.mesh_allow_private_upstreams, self._own_ports())
            except ValueError as exc:
                raise OptionsError(f"mesh_allow_private_upstreams: {exc}") from None

    @staticmethod
    def _own_ports() -> set[int]:
        ports = set()
        for spec in ctx.options.mode:
            try:
                ports.add(ProxyMode.parse(spec).listen_port(ctx.options.listen_port))
            except ValueError:
                pass
        for option in ("mesh_control_plane", "mesh_bridge", "mesh_metrics_listen"):
            value = getattr(ctx.options, option, "")
            if value:
                try:
                    ports.add(parse_control_plane(value)[1])
                except ValueError:
                    pass
        return {port for port in ports if port}

    # -- per call -----------------------------------------------------------------------------

    def request(self, flow: http.HTTPFlow) -> None:
        call = undecided_call(flow)
        if call is None or call.upstream is None or call.upstream.internal:
            return
        literal = literal_address(flow.request.host)
        if literal is not None:
            reason = self.rules.refusal(literal, flow.request.port, private_ok=call.upstream.private_ok)
            if reason:
                self._refuse([call], f"{flow.request.host}:{flow.request.port}", reason)
                flow.response = address_refused(call, reason)
            return
        target = (flow.client_conn.id, flow.request.host, flow.request.port)
        self.waiting.setdefault(target, []).append(flow)
        flow.metadata[_NOTED] = target
        failed = self.refused.pop(target, None)
        if failed is not None:
            failed.error = None  # not reusable now: mitmproxy opens (and we check) a new connection
        handler = connection_handler(flow.client_conn)
        if handler is None:
            return
        for server in list(handler.transports):
            if (isinstance(server, connection.Server) and server.address == target[1:] and server.peername
                    and self.rules.refusal(server.peername[0], server.peername[1],
                                           private_ok=call.upstream.private_ok)):
                handler.close_connection(server)  # not to be reused for this call

    # A call no longer waits for a connection once an answer (the upstream's or the gateway's
    # own) or an error has come.
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self._forget(flow)

    def response(self, flow: http.HTTPFlow) -> None:
        self._forget(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._forget(flow)

    def _forget(self, flow: http.HTTPFlow) -> None:
        target = flow.metadata.pop(_NOTED, None)
        flows = self.waiting.get(target)
        if flows is not None:
            if flow in flows:
                flows.remove(flow)
            if not flows:
                del self.waiting[target]

    def client_disconnected(self, client: connection.Client) -> None:
        for noted in (self.waiting, self.refused):
            for target in [t for t in noted if t[0] == client.id]:
                del noted[target]

    # -- per connection -----------------------------------------------------------------------

    def _calls(self, data) -> list[McpCall]:
        flows = self.waiting.get((data.client.id, *data.server.address), [])
        return [call for flow in flows if (call := flow.metadata.get(CALL)) is not None]

    def _refuse(self, calls: list[McpCall], where: str, reason: str) -> None:
        for call in calls:
            call.refused_address = reason
        log.warning("refused to connect to %s for connection(s) %s: %s", where,
                    ", ".join(sorted({c.connection_id for c in calls})), reason)

    async def server_connect(self, data) -> None:
        calls = self._calls(data)
        if not calls:
            return  # the control plane, the bridge, or an address decided per call
        private_ok = all(call.upstream.private_ok for call in calls)
        host, port = data.server.address
        try:
            literal = literal_address(host)
            addresses = [literal] if literal is not None else await resolve_async(host, port)
        except OSError:
            return  # mitmproxy's own connect fails the same way, with its error
        for address in addresses:
            reason = self.rules.refusal(address, port, private_ok=private_ok)
            if reason:
                self._refuse(calls, f"{host}:{port}", reason)
                self.refused[(data.client.id, host, port)] = data.server
                data.server.error = reason
                return

    async def server_connected(self, data) -> None:
        calls = self._calls(data)
        if not calls or not data.server.peername:
            return
        private_ok = all(call.upstream.private_ok for call in calls)
        reason = self.rules.refusal(data.server.peername[0], data.server.peername[1], private_ok=private_ok)
        if reason:
            self._refuse(calls, f"{data.server.address[0]}:{data.server.address[1]}", reason)
            handler = connection_handler(data.client)
            io = handler.transports.get(data.server) if handler is not None else None
            if io is not None and io.writer is not None:
                io.writer.transport.abort()  # before the request is written: nothing reaches it
