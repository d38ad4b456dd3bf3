"""Everything that crosses Redis between the planes: key names, the change message, the
script that publishes a snapshot and the one that writes a data plane's report. Both planes name Redis keys only through this module.

Keys (``<p>`` is the prefix, ``mesh`` unless ``MESH_REDIS_PREFIX`` says otherwise, so several
installations or test runs can share one Redis):

- ``<p>:snapshots``  hash  org_id -> the org's snapshot JSON (``shared.snapshot``) behind a MAC
                     bound to the field (``shared.snapshot_mac``; written and read only through it)
- ``<p>:versions``   hash  org_id -> version of the snapshot stored above
- ``<p>:changes``    pub/sub channel; each message is ``{"org_id": "…", "version": N}``
- ``<p>:key_last_used`` hash  key_id -> unix seconds of its latest use seen by a data plane
                     (written at most once a minute per key by each data plane)
- ``<p>:dataplanes:<instance>`` hash  what one live data plane or bridge process reports: the
                     snapshot version it installed per org and the snapshots it refused
                     (``shared.dataplane_report``); expires unless refreshed, so only live ones stay

Nothing read from Redis is trusted by itself: a snapshot is used only once its MAC verifies under
a key derived from the data-plane key, which Redis never holds; a change message only makes the
data plane fetch (and check) the org's snapshot; ``versions`` only orders publishing.

Publishing is compare-and-set on the version, in one Lua script, so two control-plane workers
racing can never replace a newer snapshot with an older one, and a message is sent only when
the stored snapshot really changed. Redis keeps nothing the control plane cannot rebuild: after
a Redis restart the control plane's reconciler publishes every org again.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

DEFAULT_PREFIX = "mesh"


@dataclass(frozen=True, slots=True)
class BusKeys:
    prefix: str = DEFAULT_PREFIX

    @classmethod
    def from_env(cls) -> "BusKeys":
        return cls(os.environ.get("MESH_REDIS_PREFIX") or DEFAULT_PREFIX)

    @property
    def snapshots(self) -> str:
        return f"{self.prefix}:snapshots"

    @property
    def versions(self) -> str:
        return f"{self.prefix}:versions"

    @property
    def changes(self) -> str:
        return f"{self.prefix}:changes"

    @property
    def key_last_used(self) -> str:
        return f"{self.prefix}:key_last_used"

    def instance_report(self, instance: str) -> str:
        return f"{self.prefix}:dataplanes:{instance}"

    @property
    def instance_reports(self) -> str:
        """The ``SCAN`` pattern matching every ``instance_report`` key (the prefix taken literally)."""
        return re.sub(r"([\\*?\[\]])", r"\\\1", self.prefix) + ":dataplanes:*"


@dataclass(frozen=True, slots=True)
class ChangeMessage:
    org_id: str
    version: int

    def to_json(self) -> str:
        return json.dumps({"org_id": self.org_id, "version": self.version})

    @classmethod
    def from_json(cls, raw: str | bytes) -> "ChangeMessage":
        doc = json.loads(raw)
        return cls(org_id=str(doc["org_id"]), version=int(doc["version"]))


# KEYS: snapshots hash, versions hash, changes channel. ARGV: org_id, version, the signed snapshot
# (``shared.snapshot_mac.sign_snapshot``), change message, and what it may replace: "newer" (only
# an older version: the normal case), "same" (the same version too: a stored value that does not
# verify) or "any" (a stored version ahead of the database, which no authentic snapshot can be;
# see ``SnapshotPublisher.reconcile``). Returns 1 when stored and announced, else 0.
PUBLISH_SCRIPT = """
local current = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
local version = tonumber(ARGV[2])
if ARGV[5] ~= 'any' and (version < current or (version == current and ARGV[5] ~= 'same')) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PUBLISH', KEYS[3], ARGV[4])
return 1
"""


# KEYS: the process's report hash (``BusKeys.instance_report``). ARGV: its time to live in
# seconds, "refresh" (only the report's time, if the report is still there) or "whole", then
# field, value pairs (``shared.dataplane_report``). One script rather than MULTI, which the
# documented ACL (README, Redis) does not grant. Returns 1 when written, 0 when there was nothing
# to refresh (it expired: write it whole).
REPORT_SCRIPT = """
if ARGV[2] == 'refresh' then
  if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
else
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""
