"""Record: Prometheus metrics for every request, and the data plane's own endpoints ``/health``
and ``/metrics``. (Audit records and traces join here in later issues.)"""

from __future__ import annotations

import json
import time

from mitmproxy import http
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from dataplane_addon.call import CALL, LOCAL
from dataplane_addon.snapshot_store import SnapshotFollower, SnapshotStore
from shared.snapshot_mac import REASONS


class Recorder:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("mesh_requests", "Requests by route and HTTP status.", ["route", "status"],
                                registry=registry)
        self.duration = Histogram("mesh_mcp_request_duration_seconds",
                                  "Time from the request to the end of the answer, MCP calls only.",
                                  buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30),
                                  registry=registry)

    def response(self, flow: http.HTTPFlow) -> None:
        call = flow.metadata.get(CALL)
        route = "mcp" if call is not None else ("local" if LOCAL in flow.metadata else "control_plane")
        self.requests.labels(route, str(flow.response.status_code)).inc()
        if call is not None:
            self.duration.observe(time.perf_counter() - call.started)

    def error(self, flow: http.HTTPFlow) -> None:
        route = "mcp" if flow.metadata.get(CALL) is not None else "control_plane"
        self.requests.labels(route, "error").inc()


class LocalEndpoints:
    def __init__(self, store: SnapshotStore, follower: SnapshotFollower, registry: CollectorRegistry) -> None:
        self.store = store
        self.follower = follower
        self.registry = registry
        self.started = time.time()
        gauge = Gauge("mesh_snapshot_entries", "Entries held in memory, by kind.", ["kind"], registry=registry)
        for kind in ("orgs", "connections", "api_keys"):
            gauge.labels(kind).set_function(lambda kind=kind: self.store.stats()[kind])
        Gauge("mesh_redis_connected", "1 while the data plane follows Redis.", registry=registry).set_function(
            lambda: 1 if self.follower.connected else 0)
        registry.register(_RejectedSnapshots(follower))

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        path = flow.metadata.get(LOCAL)
        if path == "/health":
            body = {"status": "ok", "plane": "data", "redis": "connected" if self.follower.connected else "disconnected",
                    "uptime_seconds": round(time.time() - self.started, 1), **self.store.stats(),
                    "rejected_snapshots": sum(self.follower.rejected.values())}
            flow.response = http.Response.make(200, json.dumps(body).encode(), {"Content-Type": "application/json"})
        elif path == "/metrics":
            flow.response = http.Response.make(200, generate_latest(self.registry), {"Content-Type": CONTENT_TYPE_LATEST})


class _RejectedSnapshots:
    """``mesh_snapshots_rejected_total{reason}``: the follower's count, read when scraped."""

    def __init__(self, follower: SnapshotFollower) -> None:
        self.follower = follower

    def collect(self):
        family = CounterMetricFamily("mesh_snapshots_rejected",
                                     "Snapshots in Redis refused by this data plane (not authentic, or unusable), "
                                     "by reason; each stored value counts once.", labels=["reason"])
        for reason in REASONS:
            family.add_metric([reason], self.follower.rejected[reason])
        yield family
