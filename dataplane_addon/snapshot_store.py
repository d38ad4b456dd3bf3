"""The data plane's memory of every org's snapshot, and the addon that keeps it current.

``SnapshotStore`` holds indexes built once per snapshot, so a request costs two dict look-ups:
key hash -> principal and connection id -> upstream. A snapshot replaces its org's entries in one
synchronous step (no await in between), so a request never sees half of one. Older or equal
versions are ignored, so message order does not matter.

``SnapshotFollower`` loads every snapshot from Redis at start, then follows change messages. If
Redis goes away it keeps the store as it is (serving from memory) and reconnects with backoff;
on reconnecting it reloads everything, so changes made meanwhile are not missed. Absence from
Redis never removes anything: only a tombstone snapshot does.

Nothing from Redis is used before its MAC verifies under the data-plane key
(``shared.snapshot_mac``): a snapshot that is unsigned, altered, signed under another key, copied
from another org's field, or unreadable is refused whole, and the org keeps the snapshot it had.
Each refused value is logged once (an error naming the org, never the content), counted
(``rejected``, shown by the data plane's ``/health`` and ``/metrics``) and kept per org with its
reason (``refusals``, reported to the control plane by ``snapshot_report``) until the org's
stored snapshot verifies again. A change message only
makes the follower fetch and check the org's snapshot; a malformed one is dropped. Without a
data-plane key the follower refuses everything, and says so when it starts.

Connections whose transport is "stdio" or "sse" are reached through the bridge
(``dataplane_addon/bridge``): their ``Upstream`` is the bridge's address and path for them, with
the shared bridge token as their only header (the bridge itself uses the connection's headers).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from dataplane_addon.bridge.address import (
    TOKEN_HEADER,
    BridgeAddress,
    connection_path,
    parse_bridge_address,
)
from dataplane_addon.plane_options import DEFAULT_BRIDGE, declare
from shared.bus import BusKeys, ChangeMessage
from shared.dataplane_report import Refusal
from shared.envelope import EnvelopeError, Keyring, SealedRecord, parse_record
from shared.policy import Policy, PolicyError
from shared.snapshot import Snapshot
from shared.vocabulary import BRIDGED_TRANSPORTS, BROKEN, Status
from shared.snapshot_mac import UNREADABLE, SnapshotRejected, open_snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Principal:
    org_id: str
    key_id: str
    user_id: str
    expires_at: float | None
    policy: Policy


@dataclass(frozen=True, slots=True)
class Upstream:
    connection_id: str
    org_id: str
    name: str
    scheme: str
    host: str
    port: int
    path: str
    query: str
    # (field, record sealed under the data-plane key): parsed once here, opened only to inject.
    credentials: tuple[tuple[str, SealedRecord], ...] = ()
    status: str = Status.ACTIVE  # BROKEN: its credentials cannot be used; calls get 503
    private_ok: bool = False  # registered by the operator: may be on a loopback or private address
    internal: bool = False  # the gateway's own bridge (stdio and sse connections), not a URL anyone chose
    # Headers the gateway itself adds (the bridge's token), not the connection's credentials.
    gateway_headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)


SERVED_STATUSES = (Status.ACTIVE, BROKEN)


def upstream_from(connection_id: str, org_id: str, route, bridge: BridgeAddress | None = None) -> Upstream:
    if route.transport in BRIDGED_TRANSPORTS:
        bridge = bridge or parse_bridge_address(DEFAULT_BRIDGE, token="")
        return Upstream(connection_id=connection_id, org_id=org_id, name=route.name, scheme="http", host=bridge.host,
                        port=bridge.port, path=connection_path(connection_id), query="", internal=True,
                        gateway_headers=((TOKEN_HEADER, bridge.token),))  # the bridge opens the credentials
    parts = urlsplit(route.url)
    status = route.status
    try:
        credentials = tuple((field, parse_record(text)) for field, text in sorted(route.credentials.items()))
    except (EnvelopeError, AttributeError) as error:
        reason = error if isinstance(error, EnvelopeError) else "its credentials are not a mapping"
        log.error("connection %s is broken: %s", connection_id, reason)
        credentials, status = (), BROKEN
    return Upstream(
        connection_id=connection_id,
        org_id=org_id,
        name=route.name,
        scheme=parts.scheme,
        host=parts.hostname or "",
        port=parts.port or (443 if parts.scheme == "https" else 80),
        path=parts.path or "/",
        query=parts.query,
        credentials=credentials,
        status=status,
        private_ok=route.allow_private,
    )


@dataclass(frozen=True, slots=True)
class Prepared:
    """A snapshot turned into the store's indexes, ready to be swapped in."""

    org_id: str
    version: int
    principals: dict[str, Principal]
    upstreams: dict[str, Upstream]
    routes: dict[str, object]
    policies: dict[str, Policy]


class SnapshotStore:
    """Installing is two steps: ``prepare`` (parse and compile; slow for a big org, so the
    follower runs it off the event loop) and ``install`` (swap dict entries; quick, on the loop).
    Compiled policies and upstreams are reused across versions when unchanged, so a change to
    one key of a 10,000-key org recompiles nothing else."""

    def __init__(self) -> None:
        self.bridge: BridgeAddress | None = None  # where stdio and sse connections go
        self.versions: dict[str, int] = {}
        self._org_keys: dict[str, tuple[str, ...]] = {}
        self._org_connections: dict[str, tuple[str, ...]] = {}
        self._principals: dict[str, Principal] = {}
        self._upstreams: dict[str, Upstream] = {}
        self._compiled: dict[str, Prepared] = {}  # per org, for reuse by the next version

    def prepare(self, snapshot: Snapshot) -> Prepared | None:
        """The indexes for ``snapshot``; None if it is not newer than what is held."""
        org = snapshot.org_id
        if snapshot.version <= self.versions.get(org, 0):
            return None
        previous = self._compiled.get(org)
        policies: dict[str, Policy] = {}
        for policy_id, layers in ({} if snapshot.deleted else snapshot.policies).items():
            reused = previous.policies.get(policy_id) if previous else None
            if reused is not None and reused.source == layers:
                policies[policy_id] = reused
                continue
            try:
                policies[policy_id] = Policy(layers)
            except PolicyError as exc:
                log.error("snapshot %s v%d: policy %s is invalid (%s); its keys are refused",
                          org, snapshot.version, policy_id, exc)
        # A key whose policy is missing or invalid is left out: it gets 401, never a guess.
        principals = {
            h: Principal(org_id=org, key_id=g.key_id, user_id=g.user_id, expires_at=g.expires_at,
                         policy=policies[g.policy])
            for h, g in ({} if snapshot.deleted else snapshot.api_keys).items()
            if g.policy in policies
        }
        routes = {} if snapshot.deleted else {cid: r for cid, r in snapshot.connections.items() if r.status in SERVED_STATUSES}
        upstreams = {
            cid: previous.upstreams[cid] if previous and previous.routes.get(cid) == route
            else upstream_from(cid, org, route, self.bridge)
            for cid, route in routes.items()
        }
        return Prepared(org, snapshot.version, principals, upstreams, routes, policies)

    def install(self, prepared: Prepared) -> bool:
        """Swap an org's entries for ``prepared``'s, in one step (no await in here)."""
        org = prepared.org_id
        if prepared.version <= self.versions.get(org, 0):
            return False
        for h in self._org_keys.get(org, ()):
            self._principals.pop(h, None)
        for cid in self._org_connections.get(org, ()):
            self._upstreams.pop(cid, None)
        self._principals.update(prepared.principals)
        self._upstreams.update(prepared.upstreams)
        self._org_keys[org] = tuple(prepared.principals)
        self._org_connections[org] = tuple(prepared.upstreams)
        self._compiled[org] = prepared
        self.versions[org] = prepared.version
        return True

    def apply(self, snapshot: Snapshot) -> bool:
        """Install ``snapshot`` if it is newer than what is held for its org."""
        prepared = self.prepare(snapshot)
        return prepared is not None and self.install(prepared)

    def principal(self, key_hash: str) -> Principal | None:
        return self._principals.get(key_hash)

    def upstream(self, connection_id: str) -> Upstream | None:
        return self._upstreams.get(connection_id)

    def stats(self) -> dict[str, int]:
        return {"orgs": len(self.versions), "connections": len(self._upstreams), "api_keys": len(self._principals)}


class SnapshotFollower:
    """Addon: fills a ``SnapshotStore`` from Redis and keeps it current.

    ``keyring`` returns the data-plane key (None: none configured), read at each snapshot, so the
    data plane's ``CredentialInjector`` stays the one owner of that option."""

    def __init__(self, store: SnapshotStore, keyring: Callable[[], Keyring | None]) -> None:
        self.store = store
        self.keyring = keyring
        self.connected = False
        self.rejected: Counter[str] = Counter()  # refused snapshots by reason (shared.snapshot_mac.REASONS)
        self._refused: dict[str, bytes] = {}  # org id -> digest of the stored value last refused
        self.refusals: dict[str, Refusal] = {}  # org id -> why its stored snapshot is refused
        self.changed = asyncio.Event()  # set when an org's installed version or refusal changes
        self._dropped_messages = 0
        self._task: asyncio.Task | None = None

    def load(self, loader) -> None:
        declare(loader, "mesh_redis_url", "mesh_redis_prefix", "mesh_bridge")  # the bridge takes them too

    def configure(self, updated) -> None:
        if "mesh_bridge" in updated:
            from mitmproxy import ctx
            from mitmproxy.exceptions import OptionsError

            try:
                self.store.bridge = parse_bridge_address(ctx.options.mesh_bridge)
            except ValueError as exc:
                raise OptionsError(f"mesh_bridge: {exc}") from None
            if not self.store.bridge.token:
                log.warning("MESH_BRIDGE_TOKEN is not set: the bridge will refuse stdio and sse connections")

    def running(self) -> None:
        from mitmproxy import ctx

        keys = BusKeys(ctx.options.mesh_redis_prefix)
        self._task = asyncio.get_running_loop().create_task(self.follow(ctx.options.mesh_redis_url, keys))

    def done(self) -> None:
        if self._task:
            self._task.cancel()

    async def load_all(self, client: aioredis.Redis, keys: BusKeys) -> int:
        applied = 0
        for field_name, raw in (await client.hgetall(keys.snapshots)).items():
            # A field that is not UTF-8 names no org; its value fails the MAC like any forgery.
            applied += await self._apply_raw(field_name.decode(errors="replace"), raw)
        return applied

    def _prepare_raw(self, org_id: str, raw: bytes | None) -> Prepared | SnapshotRejected | None:
        if raw is None:
            return None
        try:
            return self.store.prepare(open_snapshot(org_id, raw, self.keyring()))
        except SnapshotRejected as rejection:
            return rejection
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # authentic, yet not usable
            return SnapshotRejected(UNREADABLE, f"it is authentic but cannot be used ({type(exc).__name__})")

    async def _apply_raw(self, org_id: str, raw: bytes | None) -> bool:
        # Checking, parsing and compiling a big org takes tens of milliseconds: not on the event loop.
        prepared = await asyncio.to_thread(self._prepare_raw, org_id, raw)
        if isinstance(prepared, SnapshotRejected):
            self._refuse(org_id, raw, prepared)
            return False
        if raw is not None and self.refusals.pop(org_id, None) is not None:
            self._refused.pop(org_id, None)  # what Redis holds for the org verifies again
            self.changed.set()
        installed = prepared is not None and self.store.install(prepared)
        if installed:
            self.changed.set()
        return installed

    def _refuse(self, org_id: str, raw: bytes, rejection: SnapshotRejected) -> None:
        """Nothing of the snapshot is used: the org keeps what it had. Reported once per stored
        value, so a reconnect or a flood of change messages does not repeat it."""
        digest = hashlib.sha256(raw).digest()
        if self._refused.get(org_id) == digest:
            return
        self._refused[org_id] = digest
        self.rejected[rejection.reason] += 1
        self.refusals[org_id] = Refusal(rejection.reason, str(rejection), time.time())
        self.changed.set()
        held = self.store.versions.get(org_id)
        log.error("refused the snapshot of org %r in Redis: %s; %s", org_id[:100], rejection,
                  f"still serving its version {held}" if held else "the org stays unknown here")

    async def follow(self, url: str, keys: BusKeys) -> None:
        if self.keyring() is None:
            log.error("no data-plane key (MESH_DATAPLANE_KEY or the key file): every snapshot in Redis will be "
                      "refused, as none can be authenticated")
        backoff = 0.1
        while True:
            client = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10)
            pubsub = client.pubsub()
            try:
                # Subscribe before loading, so no change falls between the two.
                await pubsub.subscribe(keys.changes)
                await self.load_all(client, keys)
                self.connected, backoff = True, 0.1
                log.info("following snapshots in Redis (%s)", self.store.stats())
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
                    if message is None:
                        await client.ping()  # a silent connection may be a dead one
                        continue
                    try:
                        change = ChangeMessage.from_json(message["data"])
                    except (ValueError, KeyError, TypeError, OverflowError):
                        # Not the control plane's (its messages always parse): said once, then dropped.
                        if not self._dropped_messages:
                            log.warning("dropped a malformed change message on %s", keys.changes)
                        self._dropped_messages += 1
                        continue
                    if change.version > self.store.versions.get(change.org_id, 0):
                        await self._apply_raw(change.org_id, await client.hget(keys.snapshots, change.org_id))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, ValueError, KeyError) as exc:
                if self.connected:
                    log.warning("lost Redis (%s); serving from memory and reconnecting", type(exc).__name__)
                self.connected = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                try:
                    await pubsub.aclose()
                    await client.aclose()
                except (RedisError, OSError):
                    pass
