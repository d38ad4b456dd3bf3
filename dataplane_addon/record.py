"""Record: Prometheus metrics for every request, and the data plane's own endpoints ``/health``
and ``/metrics``. (Audit records and traces join here in later issues.)

On the public port, ``/health`` tells anyone only whether the data plane is up; its details
(Redis, uptime, how many orgs, connections and keys it holds) and ``/metrics`` need the metrics
token (``Authorization: Bearer <MESH_METRICS_TOKEN>``). Both are also served without a token on
a separate address, ``mesh_metrics_listen`` (e.g. loopback, for a Prometheus on the same host),
when it is set.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, make_server

from mitmproxy import ctx, http
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, ThreadingWSGIServer

from dataplane_addon.authenticate import bearer_token
from dataplane_addon.call import CALL, LOCAL, rpc_answer
from dataplane_addon.routing import parse_control_plane
from dataplane_addon.snapshot_store import SnapshotFollower, SnapshotStore
from shared.jsonrpc import UNAUTHORIZED
from shared.snapshot_mac import REASONS

log = logging.getLogger(__name__)
METRICS_TOKEN_ENV = "MESH_METRICS_TOKEN"


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


class _Quiet(WSGIRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
        pass


class LocalEndpoints:
    def __init__(self, store: SnapshotStore, follower: SnapshotFollower, registry: CollectorRegistry) -> None:
        self.store = store
        self.follower = follower
        self.registry = registry
        self.started = time.time()
        self.token = ""
        self._server = None
        gauge = Gauge("mesh_snapshot_entries", "Entries held in memory, by kind.", ["kind"], registry=registry)
        for kind in ("orgs", "connections", "api_keys"):
            gauge.labels(kind).set_function(lambda kind=kind: self.store.stats()[kind])
        Gauge("mesh_redis_connected", "1 while the data plane follows Redis.", registry=registry).set_function(
            lambda: 1 if self.follower.connected else 0)
        registry.register(_RejectedSnapshots(follower))

    def load(self, loader) -> None:
        loader.add_option("mesh_metrics_listen", str, "",
                          "HOST:PORT where /metrics and the detailed /health are served without a token "
                          "(empty: nowhere; on the public port they need MESH_METRICS_TOKEN).")

    def configure(self, updated) -> None:
        self.token = os.environ.get(METRICS_TOKEN_ENV, "")
        if "mesh_metrics_listen" in updated and ctx.options.mesh_metrics_listen:
            from mitmproxy.exceptions import OptionsError

            try:
                host, port = parse_control_plane(ctx.options.mesh_metrics_listen)
            except ValueError as exc:
                raise OptionsError(f"mesh_metrics_listen: {exc}") from None
            self._serve(host, port)

    def done(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    def health(self, detailed: bool) -> dict:
        if not detailed:
            return {"status": "ok"}
        return {"status": "ok", "plane": "data", "redis": "connected" if self.follower.connected else "disconnected",
                "uptime_seconds": round(time.time() - self.started, 1), **self.store.stats(),
                "rejected_snapshots": sum(self.follower.rejected.values())}

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        path = flow.metadata.get(LOCAL)
        if path is None:
            return
        presented = bearer_token(flow.request.headers.get("Authorization"))
        authorized = bool(self.token) and presented is not None and hmac.compare_digest(
            presented.encode(), self.token.encode())
        if path == "/health":
            flow.response = http.Response.make(200, json.dumps(self.health(authorized)).encode(),
                                               {"Content-Type": "application/json"})
        elif not authorized:
            flow.response = rpc_answer(401, UNAUTHORIZED, "Unauthorized: /metrics needs the metrics token "
                                       "(Authorization: Bearer <MESH_METRICS_TOKEN>)",
                                       headers={"WWW-Authenticate": 'Bearer realm="mcp-mesh-metrics"'})
        else:
            flow.response = http.Response.make(200, generate_latest(self.registry), {"Content-Type": CONTENT_TYPE_LATEST})

    # -- the separate metrics address ---------------------------------------------------------

    def _app(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [generate_latest(self.registry)]
        if path == "/health":
            start_response("200 OK", [("Content-Type", "application/json")])
            return [json.dumps(self.health(True)).encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: /metrics and /health only\n"]

    def _serve(self, host: str, port: int) -> None:
        if self._server is not None:
            self._server.shutdown()
        self._server = make_server(host, port, self._app, ThreadingWSGIServer, handler_class=_Quiet)
        threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True).start()
        log.info("serving /metrics and /health on %s:%d", host, port)


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
