"""Every connection the bridge runs, kept in step with the snapshots.

Snapshots arrive through the data plane's own ``SnapshotFollower`` (the same Redis following,
reconnecting and version ordering); ``RouteReportingStore`` is its ``SnapshotStore`` with one
addition: after an org's snapshot is installed, the org's routes are handed to
``BridgedConnections.sync_org``. That starts a supervised upstream, a mirror server and a
Streamable HTTP session manager for each stdio or sse connection that is new, and stops those
whose connection disappeared or changed (a changed command, env or URL is a new upstream; its
clients' sessions end with the old one).

Nothing here touches the network or a child directly: ``supervisor.py`` and
``upstream_session.py`` do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import anyio
import anyio.abc
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings

from dataplane_addon.bridge.child_isolation import ChildIsolation
from dataplane_addon.bridge.mirror_server import MirrorServer
from dataplane_addon.bridge.relay import Relay
from dataplane_addon.bridge.supervisor import UpstreamSupervisor
from dataplane_addon.bridge.upstream_session import UpstreamSpec
from dataplane_addon.snapshot_store import Prepared, SnapshotStore
from shared.upstream_addresses import AddressRules
from shared.envelope import EnvelopeError
from shared.vocabulary import BRIDGED_TRANSPORTS

log = logging.getLogger("mesh.bridge")

# Host and Origin checks are off: the bridge is on loopback behind the data plane, which sets
# Host to the bridge's address and forwards the client's Origin. The shared token (see
# ``address.py``) is what keeps everyone else out, DNS-rebinding pages included.
_BEHIND_THE_DATA_PLANE = TransportSecuritySettings(enable_dns_rebinding_protection=False)


@dataclass(eq=False)
class BridgedConnection:
    connection_id: str
    org_id: str
    spec: UpstreamSpec
    supervisor: UpstreamSupervisor
    server: MirrorServer
    sessions: StreamableHTTPSessionManager
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    adopted: bool = False

    async def run(self) -> None:
        with self.scope:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(self.supervisor.run)
                tasks.start_soon(self.server.run)
                async with self.sessions.run():
                    await anyio.sleep_forever()

    async def ready_for_clients(self, timeout: float) -> bool:
        """Whether clients may be served: the upstream has been up at least once, so there is an
        identity and capabilities to show them. Later outages are reported per call."""
        if self.supervisor.initialized is None and not await self.supervisor.wait_ready(timeout):
            return False
        if not self.adopted:
            self.server.adopt_identity(self.supervisor.initialized)
            self.adopted = True
        return True


class BridgedConnections:
    def __init__(self, tasks: anyio.abc.TaskGroup, isolation: ChildIsolation, keyring=None,
                 rules: AddressRules | None = None) -> None:
        self._tasks = tasks
        self._isolation = isolation  # where and as whom stdio children run
        self._rules = rules  # where sse servers may be (shared.upstream_addresses)
        self._keyring = keyring  # the data-plane key: the connections' credentials are sealed under it
        self._by_id: dict[str, BridgedConnection] = {}

    def get(self, connection_id: str) -> BridgedConnection | None:
        return self._by_id.get(connection_id)

    def health(self) -> dict[str, dict]:
        return {cid: {"org_id": c.org_id, **c.supervisor.health()} for cid, c in self._by_id.items()}

    def sync_org(self, org_id: str, routes: dict) -> None:
        """Make the org's bridged connections exactly those in ``routes`` (connection id -> route)."""
        wanted = {}
        for cid, route in routes.items():
            if route.transport not in BRIDGED_TRANSPORTS:
                continue
            try:
                wanted[cid] = UpstreamSpec.from_route(cid, org_id, route, self._keyring)
            except (EnvelopeError, ValueError) as error:
                # Not started: calls to it get the bridge's "not bridged" answer, not a guess.
                log.error("connection %s is broken: its credentials cannot be opened (%s)", cid, error)
        for cid, running in list(self._by_id.items()):
            if running.org_id == org_id and wanted.get(cid) != running.spec:
                self._stop(cid)
        for cid, spec in wanted.items():
            if cid not in self._by_id:
                self._start(cid, org_id, spec)

    def _start(self, connection_id: str, org_id: str, spec: UpstreamSpec) -> None:
        relay = Relay()
        supervisor = UpstreamSupervisor(connection_id, spec, self._isolation, self._rules,
                                        callbacks=relay.client_callbacks())
        server = MirrorServer(supervisor, relay, audience=connection_id)
        sessions = StreamableHTTPSessionManager(app=server, security_settings=_BEHIND_THE_DATA_PLANE)
        connection = BridgedConnection(connection_id, org_id, spec, supervisor, server, sessions)
        self._by_id[connection_id] = connection
        self._tasks.start_soon(connection.run)
        log.info("bridging connection %s (%s): %s", connection_id, spec.transport, spec.describe())

    def _stop(self, connection_id: str) -> None:
        connection = self._by_id.pop(connection_id)
        connection.scope.cancel()  # its task stops the upstream (and its process group) on the way out
        log.info("stopped bridging connection %s", connection_id)


class RouteReportingStore(SnapshotStore):
    """A ``SnapshotStore`` that reports each installed org's routes (see the module docstring)."""

    def __init__(self, connections: BridgedConnections) -> None:
        super().__init__()
        self.connections = connections

    def install(self, prepared: Prepared) -> bool:
        if not super().install(prepared):
            return False
        self.connections.sync_org(prepared.org_id, prepared.routes)
        return True
