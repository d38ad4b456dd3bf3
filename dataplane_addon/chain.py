"""The addon chain, in the order a call goes through it: route, authenticate, resolve the
connection, parse, authorize, bind the session, inject, time the upstream, stream, inspect,
record. Each addon steps aside once an earlier one has answered."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from dataplane_addon.authenticate import Authenticator
from dataplane_addon.authorize import ToolAuthorizer
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


def build_chain(store: SnapshotStore | None = None) -> list:
    store = store or SnapshotStore()
    registry = CollectorRegistry()
    follower = SnapshotFollower(store)
    return [
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
        CredentialInjector(),
        UpstreamTimeout(),
        EventStreamInspector(),
        ListingFilter(),
        Recorder(registry),
    ]
