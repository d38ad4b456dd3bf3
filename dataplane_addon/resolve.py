"""Resolve: the connection named in the path, looked up in the caller's own org. A connection of
another org gets the very answer an unknown one gets (404), so orgs cannot probe each other.
This runs on the request's headers, before the body is read or parsed: what a caller may not
reach, it learns nothing about."""

from __future__ import annotations

from mitmproxy import http

from dataplane_addon.call import undecided_call
from dataplane_addon.routing import not_found
from dataplane_addon.snapshot_store import SnapshotStore


class ConnectionResolver:
    def __init__(self, store: SnapshotStore) -> None:
        self.store = store

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        call = undecided_call(flow)
        if call is None:
            return
        upstream = self.store.upstream(call.connection_id)
        if upstream is None or call.principal is None or upstream.org_id != call.principal.org_id:
            flow.response = not_found()
            return
        call.upstream = upstream
