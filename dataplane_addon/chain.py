"""The addon chain, in the order a call goes through it: route, authenticate, resolve the
connection, parse, authorize, bind the session, inject, time the upstream, stream, inspect,
record. Each addon steps aside once an earlier one has answered."""

from __future__ import annotations

import inspect
import logging

from prometheus_client import CollectorRegistry

from dataplane_addon.authenticate import Authenticator
from dataplane_addon.authorize import ToolAuthorizer
from dataplane_addon.call import CALL, rpc_answer
from dataplane_addon.inject import CredentialInjector
from dataplane_addon.inspect import ListingFilter
from dataplane_addon.key_usage import KeyUsageReporter
from dataplane_addon.parse import JsonRpcParser
from dataplane_addon.protocol_errors import ProtocolErrors
from dataplane_addon.record import LocalEndpoints, Recorder
from dataplane_addon.resolve import ConnectionResolver
from dataplane_addon.routing import Router
from dataplane_addon.snapshot_store import SnapshotFollower, SnapshotStore
from dataplane_addon.sessions import SessionBinding
from dataplane_addon.stream import EventStreamInspector
from dataplane_addon.upstream_timeout import UpstreamTimeout
from shared.jsonrpc import INTERNAL_ERROR

log = logging.getLogger(__name__)


HTTP_HOOKS = ("requestheaders", "request", "responseheaders", "response", "error")
LIFECYCLE = ("load", "configure", "running", "done")


class AddonChain:
    """The chain as mitmproxy sees it: one addon that calls its members' hooks in order.

    mitmproxy dispatches every event to every addon it holds; with a dozen small addons that
    dispatch, not their work, was most of the gateway's cost per call (bench/: ~200 µs through
    the dispatcher against ~40 µs of the addons' own work). So mitmproxy holds this one addon,
    and each member stays a small class with one concern, tested on its own.

    Fail closed: if a member raises while a request is being decided, the flow is answered here
    with a JSON-RPC internal error (the traceback goes to the log, never to the client) instead
    of going on to the upstream half-checked.
    """

    def __init__(self, members: list) -> None:
        self.members = list(members)  # not "addons": mitmproxy would dispatch to those itself
        for name in (*HTTP_HOOKS, *LIFECYCLE):
            hooks = [getattr(m, name) for m in self.members if hasattr(m, name)]
            if any(inspect.iscoroutinefunction(h) for h in hooks):
                raise TypeError(f"{name}: chain members' hooks must be synchronous")
            setattr(self, f"_{name}", tuple(hooks))

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

    # the HTTP hooks of a call
    def requestheaders(self, flow) -> None:
        self._run(self._requestheaders, flow)

    def request(self, flow) -> None:
        self._run(self._request, flow)

    def responseheaders(self, flow) -> None:
        self._run(self._responseheaders, flow)

    def response(self, flow) -> None:
        self._run(self._response, flow)

    def error(self, flow) -> None:
        self._run(self._error, flow)

    @staticmethod
    def _run(hooks, flow) -> None:
        try:
            for hook in hooks:
                hook(flow)
        except Exception:
            log.exception("a data plane addon failed on %s %s", flow.request.method, flow.request.path)
            if flow.live and flow.response is None:
                flow.response = rpc_answer(500, INTERNAL_ERROR, "Internal error in the gateway; see its log",
                                           call.request_id if (call := flow.metadata.get(CALL)) else None)


def build_chain(store: SnapshotStore | None = None) -> AddonChain:
    store = store or SnapshotStore()
    registry = CollectorRegistry()
    injector = CredentialInjector()  # owns the data-plane key option
    follower = SnapshotFollower(store, lambda: injector.keyring)  # snapshots are authenticated under that key
    return AddonChain([
        follower,
        ProtocolErrors(),
        Router(),
        LocalEndpoints(store, follower, registry),
        Authenticator(store),
        ConnectionResolver(store),
        KeyUsageReporter(),
        JsonRpcParser(),
        ToolAuthorizer(),
        SessionBinding(),
        injector,
        UpstreamTimeout(),
        EventStreamInspector(),
        ListingFilter(),
        Recorder(registry),
    ])
