"""The addon chain, in the order a call goes through it: route, authenticate, resolve the
connection and check the request body's headers (all four on the request's headers, before the
body is read), parse, authorize, bind the session, inject, guard the upstream's address, time
the upstream, stream, inspect, record. Each addon steps aside once an earlier one has answered."""

from __future__ import annotations

import inspect
import logging

from prometheus_client import CollectorRegistry

from dataplane_addon.authenticate import Authenticator
from dataplane_addon.authorize import ToolAuthorizer
from dataplane_addon.call import CALL, rpc_answer
from dataplane_addon.inject import CredentialInjector
from dataplane_addon.inspect import ListingFilter, refuse_answer
from dataplane_addon.key_usage import KeyUsageReporter
from dataplane_addon.parse import JsonRpcParser
from dataplane_addon.protocol_errors import ProtocolErrors
from dataplane_addon.record import LocalEndpoints, Recorder
from dataplane_addon.request_body import RequestBodyGuard
from dataplane_addon.resolve import ConnectionResolver
from dataplane_addon.routing import Router
from dataplane_addon.snapshot_report import SnapshotReporter
from dataplane_addon.snapshot_store import SnapshotFollower, SnapshotStore
from dataplane_addon.sessions import SessionBinding
from dataplane_addon.stream import EventStreamInspector
from dataplane_addon.upstream_address import UpstreamAddressGuard
from dataplane_addon.upstream_timeout import UpstreamTimeout
from shared.credentials import mask_url
from shared.jsonrpc import INTERNAL_ERROR

log = logging.getLogger(__name__)


HTTP_HOOKS = ("requestheaders", "request", "responseheaders", "response", "error")
LIFECYCLE = ("load", "configure", "running", "done")
# Once per connection, not per call: members may await in these (a DNS look-up, say).
CONNECTION_HOOKS = ("server_connect", "server_connected", "client_disconnected")


class AddonChain:
    """The chain as mitmproxy sees it: one addon that calls its members' hooks in order.

    mitmproxy dispatches every event to every addon it holds; with a dozen small addons that
    dispatch, not their work, was most of the gateway's cost per call (bench/: ~200 µs through
    the dispatcher against ~40 µs of the addons' own work). So mitmproxy holds this one addon,
    and each member stays a small class with one concern, tested on its own.

    Fail closed: if a member raises while a request is being decided, the flow is answered here
    with a JSON-RPC internal error (the traceback goes to the log, never to the client) instead
    of going on to the upstream half-checked; if one raises while the upstream's answer is being
    checked (a listing being filtered, say), that answer is replaced by a JSON-RPC error instead
    of reaching the client unchecked.
    """

    def __init__(self, members: list) -> None:
        self.members = list(members)  # not "addons": mitmproxy would dispatch to those itself
        for name in (*HTTP_HOOKS, *LIFECYCLE):
            hooks = [getattr(m, name) for m in self.members if hasattr(m, name)]
            if any(inspect.iscoroutinefunction(h) for h in hooks):
                raise TypeError(f"{name}: chain members' hooks must be synchronous")
            setattr(self, f"_{name}", tuple(hooks))
        for name in CONNECTION_HOOKS:
            setattr(self, f"_{name}", tuple(getattr(m, name) for m in self.members if hasattr(m, name)))

    def member(self, kind: type):
        return next(m for m in self.members if isinstance(m, kind))

    # lifecycle: every member, in order
    def load(self, loader) -> None:
        for hook in self._load:
            hook(loader)

    def configure(self, updated) -> None:
        for hook in self._configure:
            hook(updated)

    def running(self) -> None:
        for hook in self._running:
            hook()

    def done(self) -> None:
        for hook in self._done:
            hook()

    # the hooks of a connection: every member, in order
    async def server_connect(self, data) -> None:
        await self._run_connection_hooks(self._server_connect, data)

    async def server_connected(self, data) -> None:
        await self._run_connection_hooks(self._server_connected, data)

    async def client_disconnected(self, client) -> None:
        await self._run_connection_hooks(self._client_disconnected, client)

    @staticmethod
    async def _run_connection_hooks(hooks, data) -> None:
        for hook in hooks:
            outcome = hook(data)
            if inspect.isawaitable(outcome):
                await outcome

    # the HTTP hooks of a call
    def requestheaders(self, flow) -> None:
        self._run_on_request(self._requestheaders, flow)
        if flow.response is not None:
            # Answered on the headers: no "100 Continue" invites the body (protocol_errors sends
            # the answer without reading it).
            flow.request.headers.pop("Expect", None)

    def request(self, flow) -> None:
        self._run_on_request(self._request, flow)

    def responseheaders(self, flow) -> None:
        try:
            for hook in self._responseheaders:
                hook(flow)
        except Exception:
            # The answer cannot be checked: it must not go out. Nothing of it has been sent; stop
            # reading it, and protocol_errors answers with a JSON-RPC error instead.
            log.exception("a data plane addon failed on the answer to %s", _described(flow))
            call = flow.metadata.get(CALL)
            if call is not None:
                refuse_answer(flow, call, "the gateway failed while checking it (see its log)")
            else:
                flow.response = _internal_error(None)

    def response(self, flow) -> None:
        try:
            for hook in self._response:
                hook(flow)
        except Exception:
            log.exception("a data plane addon failed on the answer to %s", _described(flow))
            if not flow.response.stream:  # a streamed answer has gone out already
                call = flow.metadata.get(CALL)
                flow.response = _internal_error(call.request_id if call else None, status=502)

    def error(self, flow) -> None:
        try:
            for hook in self._error:
                hook(flow)
        except Exception:
            log.exception("a data plane addon failed on an error of %s", _described(flow))

    @staticmethod
    def _run_on_request(hooks, flow) -> None:
        try:
            for hook in hooks:
                hook(flow)
        except Exception:
            log.exception("a data plane addon failed on %s", _described(flow))
            if flow.live and flow.response is None:
                flow.response = _internal_error(call.request_id if (call := flow.metadata.get(CALL)) else None)


def _described(flow) -> str:
    """The request, for the log: after ``inject`` its path may hold the upstream's query, masked."""
    return f"{flow.request.method} {mask_url(flow.request.path)}"


def _internal_error(request_id, status: int = 500):
    return rpc_answer(status, INTERNAL_ERROR, "Internal error in the gateway; see its log", request_id)


def build_chain(store: SnapshotStore | None = None) -> AddonChain:
    store = store or SnapshotStore()
    registry = CollectorRegistry()
    injector = CredentialInjector()  # owns the data-plane key option
    follower = SnapshotFollower(store, lambda: injector.keyring)  # snapshots are authenticated under that key
    return AddonChain([
        follower,
        SnapshotReporter(follower, "dataplane"),
        ProtocolErrors(),
        Router(),
        LocalEndpoints(store, follower, registry),
        Authenticator(store),
        ConnectionResolver(store),
        RequestBodyGuard(),
        KeyUsageReporter(),
        JsonRpcParser(),
        ToolAuthorizer(),
        SessionBinding(),
        injector,
        UpstreamAddressGuard(),
        UpstreamTimeout(),
        EventStreamInspector(),
        ListingFilter(),
        Recorder(registry),
    ])
