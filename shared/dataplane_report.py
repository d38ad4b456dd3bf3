"""What each data plane and bridge process tells the control plane through Redis, as Envoy's
ACK/NACK does: which snapshot version of each org it has installed, and which stored snapshots
it refused, with the reason. Written by ``dataplane_addon.snapshot_report``, read by
``control_plane.services.dataplane_status``; the key is named in ``shared.bus``.

One Redis hash per process, ``<p>:dataplanes:<instance>`` (``instance`` is ``kind@host:pid``):

- ``identity``     JSON ``{"kind": "dataplane" | "bridge", "host": …, "pid": N, "started_at": unix s}``
- ``reported_at``  unix seconds of the latest report, refreshed every ``REPORT_EVERY`` seconds
- ``versions``     JSON ``{org_id: version installed}``
- ``refused``      JSON ``{org_id: {"reason": one of shared.snapshot_mac.REASONS, "message": …,
                   "at": unix s}}``: the org's stored snapshot that this process refused (it keeps
                   serving the version in ``versions``); gone once the org's stored snapshot verifies.
                   The latest ``MOST_REFUSALS`` only: whoever writes to Redis can make any number
- ``refused_more`` how many refusals were left out of ``refused``

The hash expires ``REPORT_TTL`` seconds after the last report, so a process that stopped (or
lost Redis) disappears by itself. A report is for display only: whoever can write to Redis can
write one, so nothing is decided on it, and what it holds is checked and cut to size when read
(``read_report``), never printed raw.

Imports neither Flask nor mitmproxy; logs nothing.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field

from shared.snapshot_mac import REASONS

KINDS = ("dataplane", "bridge")
REPORT_EVERY = 5.0  # seconds between reports when nothing changes
REPORT_TTL = 15  # seconds a report outlives its process: three missed reports
_TEXT_LIMIT = 300  # characters kept of a host name or a refusal's message
MOST_REFUSALS = 100  # refusals a report carries (the latest)


@dataclass(frozen=True, slots=True)
class Identity:
    kind: str
    host: str
    pid: int
    started_at: float

    @classmethod
    def of_this_process(cls, kind: str) -> "Identity":
        return cls(kind, socket.gethostname(), os.getpid(), time.time())

    @property
    def instance(self) -> str:
        return f"{self.kind}@{self.host}:{self.pid}"


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    message: str
    at: float


@dataclass(frozen=True, slots=True)
class InstanceReport:
    identity: Identity
    reported_at: float
    versions: dict[str, int] = field(default_factory=dict)
    refused: dict[str, Refusal] = field(default_factory=dict)
    refused_more: int = 0  # refusals left out of ``refused``

    def fields(self) -> dict[str, str]:
        """The hash's fields, as written (the latest ``MOST_REFUSALS`` refusals)."""
        i = self.identity
        latest = sorted(self.refused.items(), key=lambda item: item[1].at, reverse=True)[:MOST_REFUSALS]
        return {
            "identity": json.dumps({"kind": i.kind, "host": i.host, "pid": i.pid, "started_at": i.started_at}),
            "reported_at": repr(self.reported_at),
            "versions": json.dumps(self.versions),
            "refused": json.dumps({org: {"reason": r.reason, "message": r.message, "at": r.at} for org, r in latest}),
            "refused_more": str(self.refused_more + len(self.refused) - len(latest)),
        }


def _text(value) -> str:
    if not isinstance(value, str):
        raise ValueError("not a string")
    return "".join(c for c in value if c.isprintable())[:_TEXT_LIMIT]


def _org_id(value) -> str:
    if _text(value) != value:
        raise ValueError("not an org id")
    return value


def _seconds(value) -> float:
    """Unix seconds (a number, or its text in the hash's own field)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("not a time")
    seconds = float(value)
    if not 0 <= seconds < 1e11:  # also refuses NaN and infinities, which no clock gives
        raise ValueError("not a time")
    return seconds


def read_report(raw: dict[bytes, bytes]) -> InstanceReport:
    """A report as ``HGETALL`` returns it, checked; ``ValueError`` if it is not one."""
    try:
        doc = {k.decode(): v.decode() for k, v in raw.items()}
        ident = json.loads(doc["identity"])
        kind = ident["kind"]
        if kind not in KINDS or isinstance(ident["pid"], bool) or not isinstance(ident["pid"], int):
            raise ValueError("not a report's identity")
        identity = Identity(kind, _text(ident["host"]), ident["pid"], _seconds(ident["started_at"]))
        versions = json.loads(doc["versions"])
        if not isinstance(versions, dict) or not all(
                _org_id(k) and isinstance(v, int) and not isinstance(v, bool) for k, v in versions.items()):
            raise ValueError("versions are not org -> version")
        refused = {}
        for org_id, entry in json.loads(doc["refused"]).items():
            reason = entry["reason"]
            if reason not in REASONS:
                raise ValueError("an unknown reason")
            refused[_org_id(org_id)] = Refusal(reason, _text(entry["message"]), _seconds(entry["at"]))
        more = int(doc["refused_more"])
        if len(refused) > MOST_REFUSALS or more < 0:
            raise ValueError("not a report's refusals")
        return InstanceReport(identity, _seconds(doc["reported_at"]), versions, refused, more)
    except (KeyError, TypeError, AttributeError, UnicodeDecodeError, RecursionError) as error:
        raise ValueError(f"not a report ({type(error).__name__})") from None
