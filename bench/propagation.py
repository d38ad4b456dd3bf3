"""Policy propagation: the time from a change made through the control plane's service layer (as
``mesh`` makes it: commit, compile the org's snapshot, publish it to Redis) to the data plane
enforcing it, seen from outside by polling the gateway over one keep-alive connection.

The changes rotate through three kinds, each with its own proof of enforcement:
- a new connection: a call to it answers 200 (it was 404);
- a new API key: a call with it answers 200 (it was 401);
- revoking that key: a call with it answers 401 again.
"""

from __future__ import annotations

import http.client
import time
from dataclasses import dataclass, field

from bench.latency import Histogram
from bench.mcp_request import echo_body, echo_headers
from bench.seed import SeededOrg, service_context
from control_plane.settings import Settings

POLL_INTERVAL = 0.001
GIVE_UP_AFTER = 5.0  # per change; a change not enforced by then counts as a failure


@dataclass
class PropagationResult:
    changes: int = 0
    failures: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    latency: Histogram = field(default_factory=Histogram)


class Poller:
    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        self.body = echo_body()

    def status(self, connection_id: str, api_key: str) -> int:
        try:
            self.connection.request("POST", f"/mcp/{connection_id}", body=self.body, headers=echo_headers(api_key))
            response = self.connection.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            self.connection.close()  # reconnects on the next request
            return 0

    def wait_for(self, connection_id: str, api_key: str, status: int, since: float) -> float | None:
        """Seconds from ``since`` until a call answers ``status``; None if it never does."""
        while time.perf_counter() - since < GIVE_UP_AFTER:
            if self.status(connection_id, api_key) == status:
                return time.perf_counter() - since
            time.sleep(POLL_INTERVAL)
        return None

    def close(self) -> None:
        self.connection.close()


def measure_propagation(settings: Settings, port: int, seeded: SeededOrg, upstream_url: str,
                        changes: int = 100) -> PropagationResult:
    from control_plane.services.actors import OPERATOR
    from control_plane.services.api_keys import create_api_key, revoke_api_key
    from control_plane.services.connections import create_connection
    from control_plane.services.orgs import find_org, find_user

    result = PropagationResult()
    poller = Poller(port)
    key_to_revoke: tuple[str, str] | None = None  # (key id, key)
    try:
        with service_context(settings, publish=True):
            org = find_org(seeded.org_id)
            member = find_user(seeded.member_email)
            for n in range(changes):
                kind = ("connection", "key", "revocation")[n % 3]
                started = time.perf_counter()
                if kind == "connection":
                    connection = create_connection(org, f"propagation-{n}", upstream_url, actor=OPERATOR)
                    elapsed = poller.wait_for(connection.id, seeded.api_key, 200, started)
                elif kind == "key":
                    key, row = create_api_key(org, member, f"propagation-{n}", actor=OPERATOR)
                    key_to_revoke = (row.id, key)
                    elapsed = poller.wait_for(seeded.connection_id, key, 200, started)
                else:
                    key_id, key = key_to_revoke
                    revoke_api_key(org, key_id, actor=OPERATOR)
                    elapsed = poller.wait_for(seeded.connection_id, key, 401, started)
                result.changes += 1
                result.by_kind[kind] = result.by_kind.get(kind, 0) + 1
                if elapsed is None:
                    result.failures += 1
                else:
                    result.latency.add(round(elapsed * 1e6))
    finally:
        poller.close()
    return result
