"""The addon chain, in the order a call goes through it: route, authenticate, resolve the
connection, parse, inject, stream, record (tool-level authorization joins after parse). Each addon steps aside once an earlier one has answered."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from dataplane_addon.authenticate import Authenticator
from dataplane_addon.inject import CredentialInjector
from dataplane_addon.parse import JsonRpcParser
from dataplane_addon.record import LocalEndpoints, Recorder
from dataplane_addon.resolve import ConnectionResolver
from dataplane_addon.routing import Router
from dataplane_addon.snapshot_store import SnapshotFollower, SnapshotStore
from dataplane_addon.stream import EventStreamPassthrough
from dataplane_addon.upstream_errors import UpstreamErrors


def build_chain(store: SnapshotStore | None = None) -> list:
    store = store or SnapshotStore()
    registry = CollectorRegistry()
    follower = SnapshotFollower(store)
    return [
        follower,
        UpstreamErrors(),
        Router(),
        LocalEndpoints(store, follower, registry),
        Authenticator(store),
        ConnectionResolver(store),
        JsonRpcParser(),
        CredentialInjector(),
        EventStreamPassthrough(),
        Recorder(registry),
    ]
