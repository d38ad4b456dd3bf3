"""What the data planes report back, read by the control plane (``services.dataplane_status``):
the operator sees every org, a member with ``gateway.read`` only their own org, and a report is
shown checked and cut to printable text, never trusted."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from control_plane.cli import main
from control_plane.services import orgs
from control_plane.services.actors import OPERATOR, member_actor
from control_plane.services.dataplane_status import gateway_status
from control_plane.services.errors import Forbidden, NotFound
from control_plane.status_view import status_text
from shared.bus import REPORT_SCRIPT, BusKeys
from shared.dataplane_report import REPORT_TTL, Identity, InstanceReport, Refusal
from tests.support import free_port


def write_report(redis_client, prefix: str, report: InstanceReport) -> None:
    """As a data plane writes its report (``dataplane_addon.snapshot_report``)."""
    fields = [x for item in report.fields().items() for x in item]
    key = BusKeys(prefix).instance_report(report.identity.instance)
    redis_client.register_script(REPORT_SCRIPT)(keys=[key], args=[REPORT_TTL, "whole", *fields])


@pytest.fixture
def world(app, redis_client, bus_prefix):
    first = orgs.bootstrap_first_run()
    acme = orgs.create_org("Acme", orgs.create_user("ana@acme.example", "a long enough password"), actor=OPERATOR)
    bob = orgs.create_user("bob@example.com", "a long enough password")
    orgs.add_member(first.org, bob, "member", actor=OPERATOR)
    versions = BusKeys(bus_prefix).versions
    held = {first.org.id: int(redis_client.hget(versions, first.org.id)),
            acme.id: int(redis_client.hget(versions, acme.id))}
    now = time.time()
    report = InstanceReport(Identity("dataplane", "box-1", 4242, now - 60), now,
                            versions={first.org.id: held[first.org.id], acme.id: held[acme.id] - 1},
                            refused={acme.id: Refusal("unauthenticated", "its MAC does not verify", now)})
    write_report(redis_client, bus_prefix, report)
    return {"default": first.org, "acme": acme, "admin": orgs.find_user(first.email), "bob": bob, "held": held}


def test_the_operator_sees_every_org_with_its_lag_and_refusals(world):
    [instance] = gateway_status(actor=OPERATOR)
    assert (instance.instance, instance.kind, instance.host, instance.pid) == ("dataplane@box-1:4242", "dataplane",
                                                                             "box-1", 4242)
    by_org = {o.org_id: o for o in instance.orgs}
    acme = by_org[world["acme"].id]
    assert (acme.org_slug, acme.installed, acme.published, acme.lag) == ("acme", world["held"][acme.org_id] - 1,
                                                                        world["held"][acme.org_id], 1)
    assert by_org[world["default"].id].lag == 0
    [refused] = instance.refused
    assert (refused.org_id, refused.reason) == (world["acme"].id, "unauthenticated")
    assert "REFUSED (unauthenticated)" in status_text([instance]) and "BEHIND by 1" in status_text([instance])


def test_an_org_admin_sees_only_its_own_orgs_versions(world):
    as_admin = member_actor(world["default"], world["admin"].id)
    [instance] = gateway_status(world["default"], actor=as_admin)
    assert [o.org_id for o in instance.orgs] == [world["default"].id] and instance.refused == []
    with pytest.raises(Forbidden, match="operator"):
        gateway_status(actor=as_admin)  # every org: the operator's view only
    with pytest.raises(NotFound):
        gateway_status(world["acme"], actor=as_admin)  # not their org: as if there were none


def test_a_member_without_gateway_read_is_told_which_permission(world):
    with pytest.raises(Forbidden, match="gateway.read"):
        gateway_status(world["default"], actor=member_actor(world["default"], world["bob"].id))


def test_a_report_is_checked_and_shown_as_printable_text_only(world, redis_client, bus_prefix):
    keys = BusKeys(bus_prefix)
    redis_client.hset(keys.instance_report("dataplane@junk:1"), mapping={"identity": "{", "versions": "[]"})
    timeless = InstanceReport(Identity("dataplane", "junk", 2, time.time()), time.time()).fields()
    redis_client.hset(keys.instance_report("dataplane@junk:2"), mapping={**timeless, "reported_at": "nan"})
    redis_client.hset(keys.instance_report("dataplane@junk:3"), mapping={**timeless, "versions": "[" * 100_000})
    now = time.time()
    spoofed = InstanceReport(Identity("bridge", "evil\x1b[2J\nhost", 7, now), now, versions={},
                             refused={world["default"].id: Refusal("unauthenticated", "bad\x1b]0;x\x07 MAC", now)})
    write_report(redis_client, bus_prefix, spoofed)
    instances = gateway_status(actor=OPERATOR)
    assert sorted(i.host for i in instances) == ["box-1", "evil[2Jhost"]  # the junk ones are left out
    text = status_text(instances)
    assert "\x1b" not in text and "\x07" not in text and "bad]0;x MAC" in text


def test_mesh_status_prints_the_reports_and_says_clearly_when_redis_is_away(world, settings):
    runner = CliRunner()
    env = {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
           "MESH_REDIS_PREFIX": settings.redis_prefix}
    shown = runner.invoke(main, ["--data-dir", str(settings.data_dir), "status", "--org", "acme", "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    [instance] = json.loads(shown.output)["instances"]
    assert [o["org_slug"] for o in instance["orgs"]] == ["acme"] and instance["refused"][0]["reason"] == "unauthenticated"

    away = runner.invoke(main, ["--data-dir", str(settings.data_dir), "status"],
                         env={**env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert away.exit_code == 1 and "Redis does not answer" in away.output and "Traceback" not in away.output
