"""The data planes report back (issue #11, item 9): `mesh status` and the ``GATEWAY_STATUS`` tool
show every live data plane and bridge of a real `mesh up` plus a second data plane, with the
snapshot version each installed per org against the published one, and the snapshots each
refused, with the reason, while it keeps serving the version it had."""

from __future__ import annotations

import subprocess

import pytest
import redis

from shared.bus import BusKeys, ChangeMessage
from tests.support import MESH, ROOT, call_tool_status, mcp_client, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]


@pytest.fixture(scope="module")
def second_data_plane(gateway):
    with gateway.another_data_plane() as plane:
        yield plane


@pytest.fixture(scope="module")
def default_org(gateway) -> str:
    return next(o["id"] for o in gateway.mesh("orgs", "list") if o["slug"] == "default")


@pytest.fixture(scope="module")
def connection_id(gateway, upstream, second_data_plane) -> str:
    cid = gateway.add_connection("echo", upstream.url)
    for base in (gateway.base, second_data_plane[1]):
        wait_for(lambda: serves(f"{base}/mcp/{cid}", gateway.first_run_key), what=f"the connection at {base}")
    return cid


@pytest.fixture(scope="module")
def bus(gateway):
    client = redis.Redis.from_url(gateway.redis_url)
    yield client, BusKeys(gateway.prefix)
    client.close()


def serves(url: str, key: str) -> bool:
    code, answer = call_tool_status(url, key, "echo", {"text": "still here"})
    return code == 200 and "result" in answer


def instances(gateway, *args: str) -> list[dict]:
    return gateway.mesh("status", *args)["instances"]


def org_row(instance: dict, org_id: str) -> dict:
    return next((o for o in instance["orgs"] if o["org_id"] == org_id), {})


def reported(gateway, holds, what: str) -> list[dict]:
    """`mesh status` once ``holds(rows)``: reports are written at once on a change."""
    def check():
        rows = instances(gateway)
        return rows if holds(rows) else None
    return wait_for(check, what=what)


def all_in_step(rows: list[dict], org_id: str, planes: int = 3) -> bool:
    if len(rows) != planes:
        return False
    versions = [org_row(r, org_id) for r in rows]
    return all(v and v["installed"] == v["published"] and v["lag"] == 0 for v in versions)


def test_mesh_status_shows_both_data_planes_and_the_bridge_with_their_versions(
        gateway, second_data_plane, connection_id, default_org):
    published = gateway.published(default_org).version
    rows = reported(gateway, lambda r: all_in_step(r, default_org),
                    "both data planes and the bridge to report the latest version")
    assert sorted(r["kind"] for r in rows) == ["bridge", "dataplane", "dataplane"]
    assert second_data_plane[0] in {r["pid"] for r in rows if r["kind"] == "dataplane"}
    assert {gateway.plane_pid("data plane"), gateway.plane_pid("bridge")} < {r["pid"] for r in rows}
    for row in rows:
        assert row["instance"] == f"{row['kind']}@{row['host']}:{row['pid']}"
        assert row["seconds_since_report"] < 10 and row["refused"] == []
        assert org_row(row, default_org) == {"org_id": default_org, "org_slug": "default",
                                             "installed": published, "published": published, "lag": 0}

    text = subprocess.run([MESH, "status"], env=gateway.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert sum(line.startswith("dataplane ") for line in lines) == 2
    assert sum(line.startswith("bridge ") for line in lines) == 1
    assert sum(f"default {default_org}" in line and f"installed {published} / published {published}" in line
               for line in lines) == 3


def test_a_corrupted_snapshot_shows_as_refused_while_every_plane_serves_the_previous_one(
        gateway, second_data_plane, connection_id, default_org, bus):
    client, keys = bus
    reported(gateway, lambda r: all_in_step(r, default_org), "every plane in step")
    held = gateway.published(default_org).version
    authentic = client.hget(keys.snapshots, default_org)
    client.hset(keys.snapshots, default_org, authentic[:-40] + b"}")  # corrupted: cut short
    client.publish(keys.changes, ChangeMessage(default_org, held + 1).to_json())

    rows = reported(gateway, lambda r: len(r) == 3 and all(i["refused"] for i in r), "every plane to report the refusal")
    for row in rows:
        [refused] = row["refused"]
        assert refused["org_id"] == default_org and refused["reason"] == "unauthenticated"
        assert "does not verify" in refused["message"]
        assert org_row(row, default_org)["installed"] == held  # still the previous one
    for base in (gateway.base, second_data_plane[1]):
        assert serves(f"{base}/mcp/{connection_id}", gateway.first_run_key)
    text = subprocess.run([MESH, "status"], env=gateway.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert sum("REFUSED (unauthenticated)" in line for line in text.stdout.splitlines()) == 3

    # The next change the control plane publishes replaces it: the refusal goes, every plane catches up.
    gateway.create_key("after the corruption")
    rows = reported(gateway, lambda r: all_in_step(r, default_org) and org_row(r[0], default_org)["installed"] > held,
                    "every plane to install the next authentic snapshot")
    assert all(r["refused"] == [] for r in rows)


async def test_an_org_admin_sees_only_its_orgs_versions_and_refusals(
        gateway, second_data_plane, connection_id, default_org, bus):
    client, keys = bus
    other = gateway.mesh("orgs", "create", "--name", "Other Org")["id"]
    reported(gateway, lambda r: all_in_step(r, other), "the other org installed everywhere")
    client.hset(keys.snapshots, other, b"forged")
    client.publish(keys.changes, ChangeMessage(other, 99).to_json())
    reported(gateway, lambda r: sum(bool(i["refused"]) for i in r) == 3, "the other org refused everywhere")
    assert {r["refused"][0]["org_id"] for r in instances(gateway)} == {other}

    async with mcp_client(gateway.base + "/mcp", gateway.first_run_key) as admin:  # the default org's owner
        result = await admin.call_tool("GATEWAY_STATUS", {})
    assert not result.is_error, result.content
    seen = result.structured_content["instances"]
    assert sorted(r["kind"] for r in seen) == ["bridge", "dataplane", "dataplane"]
    assert all([o["org_id"] for o in r["orgs"]] == [default_org] and r["refused"] == [] for r in seen)

    # The operator's view, for one org, is the same; for every org it holds both.
    assert [r["orgs"] for r in instances(gateway, "--org", "default")] == [r["orgs"] for r in seen]
    assert all({default_org, other} <= {o["org_id"] for o in r["orgs"]} for r in instances(gateway))

    gateway.add_user("mel@example.com", "member")
    member_key = gateway.create_key("mel", "--user", "mel@example.com")
    async with mcp_client(gateway.base + "/mcp", member_key) as member:
        assert "GATEWAY_STATUS" not in {t.name for t in (await member.list_tools()).tools}
        refused = await member.call_tool("GATEWAY_STATUS", {})
        assert refused.is_error and "gateway.read" in refused.content[0].text
        elsewhere = await member.call_tool("GATEWAY_STATUS", {"org_id": other})
        assert elsewhere.is_error and "no such organization" in elsewhere.content[0].text
