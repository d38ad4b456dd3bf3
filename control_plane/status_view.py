"""How ``mesh status`` and the ``GATEWAY_STATUS`` tool show what the data planes report
(``services.dataplane_status``): one JSON form for both, and the CLI's text."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timezone

from control_plane.presenters import iso
from control_plane.services.dataplane_status import InstanceStatus


def _iso(value: datetime) -> str:
    return iso(value, timespec="seconds")


def instance_out(instance: InstanceStatus, now: datetime | None = None) -> dict:
    now = now or datetime.now(timezone.utc)
    row = asdict(instance)
    row.update(started_at=_iso(instance.started_at), reported_at=_iso(instance.reported_at),
               seconds_since_report=round(max(0.0, (now - instance.reported_at).total_seconds()), 1),
               refused=[{**r, "at": _iso(r["at"])} for r in row["refused"]])
    return row


def status_out(instances: list[InstanceStatus]) -> dict:
    now = datetime.now(timezone.utc)
    return {"instances": [instance_out(i, now) for i in instances]}


def _org(row: dict) -> str:
    return f"{row['org_slug'] or '(deleted)'} {row['org_id']}"


def status_text(instances: list[InstanceStatus]) -> str:
    if not instances:
        return ("no data plane or bridge has reported in the last seconds: is `mesh up` running, "
                "on this Redis and prefix?")
    lines = []
    for row in status_out(instances)["instances"]:
        lines.append(f"{row['kind']:<9} {row['host']} pid {row['pid']}  reported {row['seconds_since_report']}s ago")
        for org in row["orgs"]:
            installed = "-" if org["installed"] is None else org["installed"]
            published = "-" if org["published"] is None else org["published"]
            behind = "" if not org["lag"] else f"  BEHIND by {org['lag']}"
            lines.append(f"  {_org(org):<48} installed {installed} / published {published}{behind}")
        for refused in row["refused"]:
            lines.append(f"  {_org(refused):<48} REFUSED ({refused['reason']}) at {refused['at']}: "
                         f"{refused['message']}")
        if row["refused_more"]:
            lines.append(f"  and {row['refused_more']} more refused snapshots (the latest are shown)")
    return "\n".join(lines)
