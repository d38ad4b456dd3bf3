"""Write access to Redis is not control of the gateway (security review, issue #10, item 11).

Someone who can write to the gateway's Redis but holds none of its keys writes snapshots
straight into ``<prefix>:snapshots`` and announces them on ``<prefix>:changes``, against the real
`mesh up`: the data plane must not honour a forged API key, the bridge must never run a forged
command, a snapshot copied from another org's field must not be used, and every refusal must be
visible (``/health``, ``/metrics``, the log). Snapshots the control plane signs keep flowing.
"""

from __future__ import annotations

import dataclasses
import re
import time
from contextlib import contextmanager

import pytest
import redis

from shared.apikeys import generate_key as generate_api_key
from shared.apikeys import hash_key
from shared.bus import BusKeys, ChangeMessage
from shared.envelope import Keyring, generate_key
from shared.snapshot import ConnectionRoute, KeyGrant, Snapshot
from shared.snapshot_mac import sign_snapshot
from tests.support import STDIO_SERVER, call_tool_status, wait_for

pytestmark = pytest.mark.e2e

SETTLE = 10  # seconds a data plane or the bridge may take to act on a change message


class RedisWriter:
    """What someone with write access to the gateway's Redis, and none of its keys, can do."""

    def __init__(self, gateway) -> None:
        self.client = redis.Redis.from_url(gateway.redis_url)
        self.keys = BusKeys(gateway.prefix)

    def stored(self, org_id: str) -> bytes:
        return self.client.hget(self.keys.snapshots, org_id)

    def put(self, org_id: str, value: bytes | str, version: int) -> None:
        self.client.hset(self.keys.snapshots, org_id, value)
        self.client.publish(self.keys.changes, ChangeMessage(org_id, version).to_json())

    @contextmanager
    def restoring(self, *org_ids: str):
        """Put the authentic snapshots back afterwards, so the next test starts from them."""
        saved = {org_id: self.stored(org_id) for org_id in org_ids}
        try:
            yield saved
        finally:
            for org_id, value in saved.items():
                self.client.hset(self.keys.snapshots, org_id, value)


def forgeries(snapshot: Snapshot, authentic: bytes) -> dict[str, bytes]:
    """``snapshot`` as a writer without the data-plane key can store it."""
    payload = snapshot.to_json().encode()
    header = authentic.split(b".", 3)[:3]  # the real MAC of the real snapshot, lifted
    return {
        "unsigned (the format before MACs)": payload,
        "signed under another key": sign_snapshot(snapshot, Keyring.single(generate_key())).encode(),
        "the real MAC on another payload": b".".join([*header, payload]),
    }


@pytest.fixture(scope="module")
def writer(gateway):
    bus = RedisWriter(gateway)
    yield bus
    bus.client.close()


@pytest.fixture(scope="module")
def org_id(gateway) -> str:
    return next(o["id"] for o in gateway.mesh("orgs", "list") if o["slug"] == "default")


@pytest.fixture(scope="module")
def connection_id(gateway, upstream) -> str:
    cid = gateway.add_connection("echo", upstream.url)
    wait_for(lambda: works(gateway, cid, gateway.first_run_key), what="the connection to be served")
    return cid


def works(gateway, connection_id: str, key: str) -> bool:
    code, answer = call_tool_status(gateway.mcp_url(connection_id), key, "echo", {"text": "still here"})
    return code == 200 and "result" in answer


def status(gateway, connection_id: str, key: str) -> int:
    return call_tool_status(gateway.mcp_url(connection_id), key, "echo", {"text": "x"})[0]


def rejected(gateway) -> int:
    return gateway.health().get("rejected_snapshots", 0)


def rejected_metric(gateway, reason: str = "unauthenticated") -> float:
    text = gateway.metrics().text
    found = re.search(rf'^mesh_snapshots_rejected_total{{reason="{reason}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def refusals(gateway, process: str, org: str) -> list[str]:
    """The log lines in which ``process`` ("dataplane" or "bridge") refused a snapshot of ``org``."""
    return [line for line in gateway.log().splitlines()
            if f" {process} ERROR refused the snapshot of org '{org}'" in line]


def forged_key_snapshot(current: Snapshot, first_run_key: str) -> tuple[Snapshot, str]:
    """The org's snapshot plus an API key the attacker holds, with the first-run key's rights."""
    key, _ = generate_api_key()
    grant = current.api_keys[hash_key(first_run_key)]
    forged = dataclasses.replace(current, version=current.version + 1, api_keys={
        **current.api_keys, hash_key(key): KeyGrant(key_id="key_forged", user_id=grant.user_id, policy=grant.policy)})
    return forged, key


def test_a_forged_api_key_gets_401_and_existing_keys_keep_working(gateway, writer, org_id, connection_id):
    current = gateway.published(org_id)
    forged, key = forged_key_snapshot(current, gateway.first_run_key)
    keys_held = gateway.health()["api_keys"]
    with writer.restoring(org_id) as authentic:
        for how, value in forgeries(forged, authentic[org_id]).items():
            before = rejected(gateway)
            writer.put(org_id, value, forged.version)
            # Settled when the data plane has refused it, or (the hole) taken it.
            wait_for(lambda: rejected(gateway) > before or status(gateway, connection_id, key) != 401,
                     timeout=SETTLE, what=f"the data plane to act on a forged snapshot ({how})")
            assert status(gateway, connection_id, key) == 401, f"a key from a forged snapshot ({how}) was accepted"
            assert works(gateway, connection_id, gateway.first_run_key), "the org lost its own snapshot"
            assert gateway.health()["api_keys"] == keys_held


def test_the_bridge_never_runs_a_command_from_a_forged_snapshot(gateway, writer, org_id, tmp_path):
    marker = tmp_path / "pwned"
    current = gateway.published(org_id)
    route = ConnectionRoute(name="pwned", url="", transport="stdio", command="/bin/sh", args=["-c", f"touch {marker}"])
    forged = dataclasses.replace(current, version=current.version + 1,
                                 connections={**current.connections, "conn_pwned": route})
    with writer.restoring(org_id) as authentic:
        for how, value in forgeries(forged, authentic[org_id]).items():
            before = len(refusals(gateway, "bridge", org_id))
            writer.put(org_id, value, forged.version)
            wait_for(lambda: len(refusals(gateway, "bridge", org_id)) > before or marker.exists()
                     or "conn_pwned" in gateway.bridge_health(), timeout=SETTLE,
                     what=f"the bridge to act on a forged snapshot ({how})")
            time.sleep(0.5)  # a child it had started would have run by now
            assert not marker.exists(), f"the bridge ran a command from a forged snapshot ({how})"
            assert "conn_pwned" not in gateway.bridge_health()
            assert status(gateway, "conn_pwned", gateway.first_run_key) == 404  # the data plane refused it too
    # The normal path still reaches the bridge, after the forgeries (it handles changes in order).
    cid = gateway.add_stdio_connection("real", STDIO_SERVER)
    wait_for(lambda: (gateway.bridge_health().get(cid) or {}).get("state") == "ready", timeout=30,
             what="a connection added through the control plane to be bridged")
    assert not marker.exists() and "conn_pwned" not in gateway.bridge_health()


def test_a_snapshot_copied_from_another_orgs_field_is_refused(gateway, writer, org_id, connection_id):
    other_id = gateway.mesh("orgs", "create", "--name", "Other")["id"]
    wait_for(lambda: writer.stored(other_id), what="the new org's snapshot")
    orgs_held = gateway.health()["orgs"]
    newest = max(gateway.published(org_id).version, gateway.published(other_id).version)
    with writer.restoring(org_id, other_id) as authentic:
        for target, source in ((org_id, other_id), (other_id, org_id)):
            before, logged = rejected(gateway), len(refusals(gateway, "dataplane", target))
            writer.put(target, authentic[source], newest + 1000)
            wait_for(lambda: rejected(gateway) > before, timeout=SETTLE,
                     what="the data plane to refuse a snapshot copied from another org's field")
            [line] = refusals(gateway, "dataplane", target)[logged:]
            assert "another org's field" in line
    assert works(gateway, connection_id, gateway.first_run_key)
    assert gateway.health()["orgs"] == orgs_held


def test_refusals_show_in_health_metrics_and_the_log_once_per_stored_value(gateway, writer, org_id, connection_id):
    current = gateway.published(org_id)
    forged, key = forged_key_snapshot(current, gateway.first_run_key)
    before, metric = rejected(gateway), rejected_metric(gateway)
    logged = {p: len(refusals(gateway, p, org_id)) for p in ("dataplane", "bridge")}
    value = forged.to_json()
    for _ in range(3):  # the same forgery announced again and again
        writer.put(org_id, value, forged.version)
    wait_for(lambda: rejected(gateway) > before, timeout=SETTLE, what="the data plane to refuse the forgery")
    # A change through the control plane after them: once it is served, all three were handled.
    later = gateway.create_key("after-the-forgery")
    wait_for(lambda: works(gateway, connection_id, later), timeout=SETTLE, what="the signed change")
    wait_for(lambda: len(refusals(gateway, "bridge", org_id)) > logged["bridge"], timeout=SETTLE,
             what="the bridge to log its refusal")
    assert rejected(gateway) == before + 1
    assert rejected_metric(gateway) == metric + 1
    for process in ("dataplane", "bridge"):
        [line] = refusals(gateway, process, org_id)[logged[process]:]
        assert "its MAC" in line or "no MAC" in line
    log = gateway.log()
    assert key not in log and hash_key(key) not in log  # no content of the snapshot
    assert gateway.dataplane_key_file.read_text().strip() not in log


def test_the_same_snapshot_signed_with_the_dataplane_key_is_served(gateway, writer, upstream):
    """The control for the forgeries above: built the same way but signed under the data-plane key
    (which the test reads from the data dir, as the control plane does), it is installed. Its
    own org, since it takes the version the control plane would publish next."""
    org = gateway.mesh("orgs", "create", "--name", "Signed")["id"]
    owner_key = gateway.mesh("keys", "create", "--name", "owner", "--org", org)["key"]
    cid = gateway.mesh("connections", "add", "--name", "echo", "--url", upstream.url, "--org", org)["id"]
    wait_for(lambda: works(gateway, cid, owner_key), timeout=SETTLE, what="the new org to be served")
    signed, key = forged_key_snapshot(gateway.published(org), owner_key)
    before = rejected(gateway)
    writer.put(org, sign_snapshot(signed, gateway.dataplane_keyring()), signed.version)
    wait_for(lambda: works(gateway, cid, key), timeout=SETTLE, what="a correctly signed snapshot to be served")
    assert rejected(gateway) == before


def test_a_running_data_plane_never_goes_back_to_an_older_authentic_snapshot(gateway, writer, org_id,
                                                                               connection_id):
    old = writer.stored(org_id)
    newer = gateway.create_key("newer-than-the-replay")
    wait_for(lambda: works(gateway, connection_id, newer), timeout=SETTLE, what="the newer key")
    before = rejected(gateway)
    writer.put(org_id, old, gateway.published(org_id).version + 1000)  # a replay of what was authentic
    last = gateway.create_key("after-the-replay")  # handled after it, in order
    wait_for(lambda: works(gateway, connection_id, last), timeout=SETTLE, what="the change after the replay")
    assert works(gateway, connection_id, newer)
    assert rejected(gateway) == before  # authentic, so not "refused": merely older than what is held
