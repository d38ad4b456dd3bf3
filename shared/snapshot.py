"""The snapshot: everything the data plane needs to decide about one organization's traffic,
compiled by the control plane and read by the data plane without a database.

Layout (JSON, ``schema`` 1; in Redis it is stored behind a MAC bound to its org, see
``shared.snapshot_mac``, and read only through it)::

    {
      "schema": 1,
      "org_id": "org_…",
      "version": 7,                # strictly increasing per org; older versions are ignored
      "deleted": false,            # a tombstone removes the org from every data plane
      "connections": {
        "conn_…": {"name": "…", "url": "http://…/mcp", "transport": "http",
                    "status": "active",            # or "broken": its secrets cannot be opened
                    "credentials": {"bearer": "<sealed record>", "header:X-Api-Key": "<sealed record>"},
                    "command": "", "args": [],  # stdio connections: what the bridge runs
                    "allow_private": false}     # may reach loopback/private addresses (operator's)
      },
      "api_keys": {
        "<sha256 of the key>": {"key_id": "key_…", "user_id": "usr_…", "expires_at": null,
                                "policy": "role:member"}
      },
      "policies": {                # permission documents (shared.policy) that must all allow
        "role:member": [{"tools": {"*": ["*"]}, …}],
        "key:key_…":   [{…the role's…}, {…the key's narrowing scope…}]
      }
    }

``transport`` is "http" (Streamable HTTP at ``url``), "sse" (a legacy HTTP+SSE server at
``url``) or "stdio" (``command`` with ``args`` and ``env``, run by the bridge). The data plane
sends "sse" and "stdio" connections to the bridge (``dataplane_addon/bridge``), which opens
the upstream; snapshots written before these fields existed still parse.

Keys share their role's policy unless narrowed, so 10,000 keys of 100 roles carry ~100
policies, each compiled once by the data plane.

The data plane never decides on anything that is not in here. Credentials are never in the
clear: each is a ``shared.envelope`` record sealed under the data-plane key, bound to its org,
connection and field (``shared.credentials``), and opened by the data plane only to inject it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA = 1


@dataclass(frozen=True, slots=True)
class ConnectionRoute:
    name: str
    url: str
    transport: str = "http"
    status: str = "active"
    credentials: dict[str, str] = field(default_factory=dict)  # field -> record sealed for the data plane
    command: str = ""  # stdio only, like args; its environment values are credentials (env:NAME)
    args: list[str] = field(default_factory=list)
    # Registered (or last pointed elsewhere) by the operator: may reach loopback and private
    # addresses. Otherwise only those in MESH_ALLOW_PRIVATE_UPSTREAMS (shared.upstream_addresses).
    allow_private: bool = False


@dataclass(frozen=True, slots=True)
class KeyGrant:
    key_id: str
    user_id: str
    expires_at: float | None = None  # unix seconds
    policy: str = ""  # an id in Snapshot.policies


@dataclass(frozen=True, slots=True)
class Snapshot:
    org_id: str
    version: int
    connections: dict[str, ConnectionRoute] = field(default_factory=dict)
    api_keys: dict[str, KeyGrant] = field(default_factory=dict)
    policies: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    deleted: bool = False

    def to_json(self) -> str:
        doc: dict[str, Any] = {"schema": SCHEMA, **asdict(self)}
        return json.dumps(doc, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> "Snapshot":
        doc = json.loads(raw)
        if doc.get("schema") != SCHEMA:
            raise ValueError(f"unsupported snapshot schema {doc.get('schema')!r}")
        return cls(
            org_id=doc["org_id"],
            version=int(doc["version"]),
            deleted=bool(doc.get("deleted", False)),
            connections={cid: ConnectionRoute(**c) for cid, c in doc.get("connections", {}).items()},
            api_keys={h: KeyGrant(**k) for h, k in doc.get("api_keys", {}).items()},
            policies={p: list(layers) for p, layers in doc.get("policies", {}).items()},
        )
