"""What the data planes and bridges report back (``shared.dataplane_report``): every live
process, when it last reported, per org the snapshot version it installed against the version
published, and the snapshots it refused with the reason.

The operator sees every org; a member with ``gateway.read`` sees the processes but only their
own org's versions and refusals. Reports come from Redis, which anyone with write access to it
can fill: they are shown, never acted on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import redis
import sqlalchemy as sa
from flask import current_app

from control_plane.models import Organization, db
from control_plane.services.actors import Actor, require
from control_plane.services.errors import Forbidden, Unavailable
from shared.dataplane_report import InstanceReport, read_report


@dataclass(frozen=True)
class OrgVersion:
    org_id: str
    org_slug: str | None  # None: the org is no longer in the database (its tombstone is published)
    installed: int | None  # None: this process holds no snapshot of the org
    published: int | None  # None: nothing of the org is in Redis
    lag: int | None  # published - installed (installed counts as 0 when absent); None: nothing published


@dataclass(frozen=True)
class RefusedSnapshot:
    org_id: str
    org_slug: str | None
    reason: str  # one of shared.snapshot_mac.REASONS
    message: str
    at: datetime


@dataclass(frozen=True)
class InstanceStatus:
    instance: str
    kind: str
    host: str
    pid: int
    started_at: datetime
    reported_at: datetime
    orgs: list[OrgVersion]
    refused: list[RefusedSnapshot]  # the latest (shared.dataplane_report.MOST_REFUSALS)
    refused_more: int  # refusals of other orgs beyond those (the operator's view only)


def gateway_status(org: Organization | None = None, *, actor: Actor) -> list[InstanceStatus]:
    """Every live data plane and bridge, for ``org`` only or (the operator) for every org."""
    if org is not None:
        require(actor, org, "gateway.read")
    elif not actor.is_operator:
        raise Forbidden("only the operator sees every org's versions: name an org")
    publisher = current_app.extensions["mesh.publisher"]
    client, keys = publisher.redis, publisher.keys
    try:
        report_keys = sorted(client.scan_iter(match=keys.instance_reports, count=1000))
        with client.pipeline(transaction=False) as pipe:
            for key in report_keys:
                pipe.hgetall(key)
            raw_reports = pipe.execute()
        stored = client.hgetall(keys.versions) if org is None else {org.id.encode(): client.hget(keys.versions, org.id)}
    except redis.RedisError as error:
        raise Unavailable(f"Redis does not answer ({type(error).__name__}), so the data planes' reports "
                          "cannot be read") from None
    # Written by the control plane's publishing script; anything else there is not shown as a version.
    published = {k.decode(errors="replace"): int(v) for k, v in stored.items() if v is not None and v.isdigit()}
    reports = []
    for raw in raw_reports:
        try:
            reports.append(read_report(raw))
        except ValueError:
            continue  # expired between the scan and the read, or not written by a data plane
    wanted = None if org is None else {org.id}
    slugs = dict(db.session.execute(sa.select(Organization.id, Organization.slug)).all()) if org is None \
        else {org.id: org.slug}
    return [_instance(r, published, wanted, slugs) for r in
            sorted(reports, key=lambda r: (r.identity.kind, r.identity.host, r.identity.pid))]


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def _instance(report: InstanceReport, published: dict[str, int], wanted: set[str] | None,
              slugs: dict[str, str]) -> InstanceStatus:
    org_ids = set(published) | set(report.versions) if wanted is None else wanted
    orgs = []
    for org_id in sorted(org_ids, key=lambda o: (slugs.get(o) or "\uffff", o)):
        installed, latest = report.versions.get(org_id), published.get(org_id)
        lag = None if latest is None else latest - (installed or 0)
        orgs.append(OrgVersion(org_id, slugs.get(org_id), installed, latest, lag))
    refused = [RefusedSnapshot(org_id, slugs.get(org_id), r.reason, r.message, _time(r.at))
               for org_id, r in sorted(report.refused.items()) if wanted is None or org_id in wanted]
    i = report.identity
    return InstanceStatus(i.instance, i.kind, i.host, i.pid, _time(i.started_at), _time(report.reported_at),
                          orgs, refused, report.refused_more if wanted is None else 0)
