"""One benchmark run, start to finish: start the upstream, the bare lean mitmproxy, plain
``mitmdump`` and the full gateway; warm them up; then the interleaved closed-loop levels, the
fixed-rate run, the scale-out comparison, policy propagation and the chain's own cost; stop
everything (also on Ctrl-C or an error) and return the figures as one JSON-ready dict.

How the two cores are shared (``Placement``):
- closed loop, pinned: the proxy under test (the data plane, the bare master or mitmdump; only
  one is under load at a time) runs alone on core 0; the upstream, wrk, this harness and the
  gateway's idle helpers (``mesh up``, gunicorn) share core 1. A proxy is one single-threaded
  process, so core 0 is all it could use; pinned, it never competes with its own load, and the
  throughput figures measure the proxy rather than the scheduler.
- fixed rate and scale-out, free: every process may run on either core. At 200 calls/s nobody
  needs a whole core, and a woken process that may take whichever core is idle waits least for
  other work on the machine; scale-out is about a second process using the second core.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import redis

from bench import measure
from bench.chain_cost import measure_chain_cost
from bench.gateway import Gateway
from bench.processes import ROOT, Child, ProcessGroup, free_port, pin, rss_mb
from bench.profile import profile_under_load
from bench.propagation import measure_propagation
from control_plane.vault_keys import dataplane_keyring

DIRECT, LEAN, GATEWAY, MITMDUMP = "direct", "mitmproxy-lean", "gateway", "mitmdump"
REFERENCE_LEVEL = 8  # the throughput target is judged at concurrency 8


@dataclass
class Config:
    levels: tuple[int, ...] = (1, 8, 32)
    seconds: int = 2  # per closed-loop run
    rounds: int = 3
    rate: float = 200.0
    rate_seconds: float = 2.0
    rate_rounds: int = 3
    scale_levels: tuple[int, ...] = (8, 32)
    scale_seconds: int = 2
    scale_rounds: int = 2
    scale_processes: int = 2
    propagation_changes: int = 100
    # the policy evaluator at the sizes (1: 1,000 connections, 10,000 keys, 100 roles) and
    # ten times them; 0 skips it
    policy_scale: int = 10
    pin: bool = True
    mitmdump: bool = True
    profile: str = "on-miss"  # "on-miss", "always" or "never"
    profile_seconds: int = 3
    redis_url: str = os.environ.get("MESH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    limits: dict = field(default_factory=lambda: {
        "throughput_ratio_c8_min": 0.85, "added_p50_fixed_rate_ms_max": 1.0, "propagation_p99_ms_max": 200.0})


class Placement:
    """Which cores the proxies, everyone else and this harness may use (see the module doc)."""

    def __init__(self, pin_proxies: bool) -> None:
        available = sorted(os.sched_getaffinity(0))
        self.enabled = pin_proxies and len(available) >= 2
        self.proxy_cpus = {available[0]} if self.enabled else None
        self.other_cpus = set(available[1:]) if self.enabled else None
        self.all_cpus = set(available)
        self.proxies: list[int] = []
        self.others: list[int] = []
        self.pinned_now = False

    def describe(self) -> dict:
        if not self.enabled:
            return {"closed_loop": "unpinned (--no-pin)", "fixed_rate": "unpinned", "scale_out": "unpinned"}
        return {"closed_loop": f"proxy under test on core {sorted(self.proxy_cpus)}; upstream, wrk, harness and "
                               f"the gateway's helpers on {sorted(self.other_cpus)}",
                "fixed_rate": "unpinned", "scale_out": "unpinned"}

    @property
    def load_cpus(self) -> set[int] | None:
        """Where wrk runs right now."""
        return self.other_cpus if self.pinned_now else None

    def pin(self) -> None:
        if not self.enabled:
            return
        for pid in self.proxies:
            pin(pid, self.proxy_cpus)
        for pid in self.others:
            pin(pid, self.other_cpus)
        os.sched_setaffinity(0, self.other_cpus)
        self.pinned_now = True

    def free(self) -> None:
        for pid in self.proxies + self.others:
            pin(pid, None)
        os.sched_setaffinity(0, self.all_cpus)
        self.pinned_now = False


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], check=False, cwd=ROOT, capture_output=True,
                            text=True).stdout
    return {"cpu": model, "cores": os.cpu_count(), "load_average_before": os.getloadavg()[0],
            "python": platform.python_version(), "mitmproxy": version("mitmproxy"), "mcp": version("mcp"),
            "kernel": platform.release(), "commit": commit.strip()}


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def _sigterm_as_interrupt(*_args) -> None:
    raise KeyboardInterrupt


def _round(value):
    return None if value is None else round(value, 3)


class PhaseClock:
    """Seconds spent in each phase, so a slow run says where its time went."""

    def __init__(self, say) -> None:
        self.say = say
        self.seconds: dict[str, float] = {}
        self._name: str | None = None
        self._since = 0.0

    def next(self, name: str, text: str) -> None:
        self.stop()
        self.say(text)
        self._name, self._since = name, time.monotonic()

    def stop(self) -> None:
        if self._name:
            self.seconds[self._name] = round(time.monotonic() - self._since, 1)
        self._name = None


class BenchRun:
    def __init__(self, config: Config, group: ProcessGroup, work_dir: Path, say) -> None:
        self.config = config
        self.group = group
        self.work_dir = work_dir
        self.clock = PhaseClock(say)
        self.placement = Placement(config.pin)
        self.result: dict = {"machine": machine(),
                             "config": {k: v for k, v in vars(config).items() if k != "redis_url"}}
        self.gateway: Gateway | None = None
        self.upstream: Child | None = None
        self.targets: list[measure.Target] = []

    def target(self, name: str) -> measure.Target:
        return next(t for t in self.targets if t.name == name)

    # -- phases -------------------------------------------------------------------------------

    def start(self) -> None:
        self.clock.next("start", "starting the upstream, bare mitmproxy, mitmdump and the gateway ...")
        group, placement = self.group, self.placement
        upstream_port, lean_port, dump_port = free_port(), free_port(), free_port()
        self.upstream = group.python("upstream", "bench.upstream_server", str(upstream_port))
        lean = group.python("mitmproxy-lean", "bench.bare_proxy", "--port", str(lean_port),
                            "--upstream", f"http://127.0.0.1:{upstream_port}")
        dump = None
        if self.config.mitmdump:
            mitmdump = str(Path(sys.executable).with_name("mitmdump"))
            dump = group.start("mitmdump", [mitmdump, "-q", "--mode",
                                            f"reverse:http://127.0.0.1:{upstream_port}@127.0.0.1:{dump_port}"])
        self.upstream.wait_for_port(upstream_port)
        self.upstream_url = f"http://127.0.0.1:{upstream_port}/mcp"
        self.gateway = Gateway(group, self.work_dir, self.config.redis_url).start(self.upstream_url)
        lean.wait_for_port(lean_port)
        seeded = self.gateway.seeded
        self.targets = [
            measure.Target(DIRECT, upstream_port, "/mcp"),
            measure.Target(LEAN, lean_port, "/mcp", pids=(lean.pid,)),
            measure.Target(GATEWAY, self.gateway.port, f"/mcp/{seeded.connection_id}", seeded.api_key,
                           pids=(self.gateway.data_plane_pid,)),
        ]
        if dump is not None:
            dump.wait_for_port(dump_port)
            self.targets.append(measure.Target(MITMDUMP, dump_port, "/mcp", pids=(dump.pid,)))
        placement.proxies = [t.pids[0] for t in self.targets if t.pids]
        helpers = [pid for pid in self.gateway.all_pids() if pid != self.gateway.data_plane_pid]
        placement.others = [self.upstream.pid, *helpers]
        self.result["snapshot"] = {"orgs": seeded.orgs, "connections": seeded.connections,
                                   "api_keys": seeded.api_keys}
        self.result["cores"] = placement.describe()
        placement.pin()
        measure.warm_up(self.targets, placement.load_cpus)

    def closed_loop(self) -> None:
        c = self.config
        self.clock.next("closed_loop", f"closed loop: concurrency {c.levels}, {c.rounds} interleaved rounds x "
                                       f"{c.seconds} s ...")
        self.placement.pin()
        # mitmdump is a reference line, measured at the level the throughput target is judged at.
        plan = {level: [t for t in self.targets if t.name != MITMDUMP or level == REFERENCE_LEVEL]
                for level in c.levels}
        tallies = measure.closed_loop(plan, c.rounds, c.seconds, self.upstream.pid, self.placement.load_cpus)
        self.result["closed_loop"] = {str(level): {name: tally.figures(name != DIRECT) for name, tally in per.items()}
                                      for level, per in tallies.items()}
        self.result["memory_mb"] = {t.name: round(rss_mb(t.pids[0]), 1) for t in self.targets if t.pids}

    def fixed_rate(self) -> None:
        c = self.config
        self.clock.next("fixed_rate", f"fixed rate: {c.rate:g} calls/s, {c.rate_rounds} interleaved rounds x "
                                      f"{c.rate_seconds:g} s ...")
        self.placement.free()
        targets = [t for t in self.targets if t.name != MITMDUMP]
        tallies = measure.fixed_rate(targets, c.rate, c.rate_rounds, c.rate_seconds, self.upstream.pid)
        self.result["fixed_rate"] = {t.name: tallies[t.name].figures(bool(t.pids)) for t in targets}

    def scale_out(self) -> None:
        """The gateway's load on its one data plane process and on several sharing a port,
        interleaved, every process free to use every core."""
        c = self.config
        self.clock.next("scale_out", f"scale-out: 1 vs {c.scale_processes} data plane processes on one port "
                                     f"(SO_REUSEPORT) ...")
        self.placement.free()
        port, children = self.gateway.start_data_planes(c.scale_processes)
        single = self.target(GATEWAY)
        several = measure.Target(f"{GATEWAY} x{c.scale_processes}", port, single.path, single.api_key,
                                 pids=tuple(child.pid for child in children))
        try:
            measure.warm_up([several], None)
            tallies = measure.closed_loop({level: [single, several] for level in c.scale_levels}, c.scale_rounds,
                                          c.scale_seconds, self.upstream.pid, None)
        finally:
            for child in children:
                self.group.stop(child)
        doc = {}
        for level, per in tallies.items():
            one, many = per[single.name].figures(True), per[several.name].figures(True)
            doc[str(level)] = {"processes_1": one, f"processes_{c.scale_processes}": many,
                               "speedup": round(many["rps"] / one["rps"], 3) if one["rps"] else None}
        self.result["scale_out"] = doc

    def propagation(self) -> None:
        self.clock.next("propagation", f"policy propagation: {self.config.propagation_changes} changes ...")
        gateway = self.gateway
        measured = measure_propagation(gateway.settings, gateway.port, gateway.seeded, self.upstream_url,
                                       self.config.propagation_changes)
        self.result["propagation"] = {"changes": measured.changes, "failures": measured.failures,
                                      "by_kind": measured.by_kind,
                                      **{k: _round(v) for k, v in measured.latency.summary().items()}}

    def chain_cost(self) -> None:
        self.clock.next("chain_cost", "the chain's own cost per call (synthetic flows) ...")
        seeded = self.gateway.seeded
        self.result["chain_cost"] = measure_chain_cost(self.config.redis_url, self.gateway.prefix,
                                                       dataplane_keyring(self.gateway.settings),
                                                       seeded.connection_id, seeded.api_key)

    def policy_scale(self) -> None:
        if not self.config.policy_scale:
            return
        from bench.policy_scale import BASE, measure

        self.clock.next("policy_scale", "the policy evaluator and snapshot memory at 1x and 10x sizes ...")
        m = self.config.policy_scale
        # 1x; keys and connections x10 with the same roles (a decision must not grow with them);
        # everything x10
        scales = ((1, 1), (m, 1), (m, m)) if m > 1 else ((1, 1),)
        self.result["policy_scale"] = [
            measure(BASE["connections"] * s, BASE["api_keys"] * s, BASE["roles"] * r) for s, r in scales]

    def profile(self) -> None:
        """py-spy on the gateway and, for comparison, on the lean master, each at concurrency 8,
        pinned as in the closed loop."""
        self.result["targets"] = verdicts(self.result, self.config.limits)
        missed = not all(t["met"] for t in self.result["targets"].values())
        if not (self.config.profile == "always" or (self.config.profile == "on-miss" and missed)):
            return
        self.clock.next("profile", f"profiling the gateway and the lean master with py-spy "
                                   f"({self.config.profile_seconds} s each) ...")
        self.placement.pin()
        self.result["profile"] = {
            name: profile_under_load(self.target(name).pids[0], self.target(name), self.config.profile_seconds, 8,
                                     self.placement.load_cpus)
            for name in (GATEWAY, LEAN)
        }

    def stop(self) -> None:
        self.clock.next("stop", "stopping everything ...")
        if self.gateway is not None:
            self.gateway.stop()
        os.sched_setaffinity(0, self.placement.all_cpus)
        self.clock.stop()
        self.result["phase_seconds"] = self.clock.seconds


def run(config: Config, say=print) -> dict:
    if not redis_answers(config.redis_url):
        raise SystemExit(f"no Redis answers at {config.redis_url} (set MESH_BENCH_REDIS_URL)")
    previous_handler = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="mesh-bench-") as tmp, ProcessGroup(Path(tmp)) as group:
            harness = BenchRun(config, group, Path(tmp), say)
            try:
                harness.start()
                harness.closed_loop()
                harness.fixed_rate()
                harness.scale_out()
                harness.propagation()
                harness.chain_cost()
                harness.policy_scale()
                harness.profile()
            finally:
                harness.stop()
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    result = harness.result
    result["machine"]["load_average_after"] = os.getloadavg()[0]
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    return result


def verdicts(result: dict, limits: dict) -> dict:
    """The issue's three targets. Throughput is judged twice, and must pass both: as measured,
    and per CPU-second of the proxy (calls per second one fully used core would carry). On a
    machine shared with other work, the measured ratio also reflects how much of its core each
    proxy happened to get; the per-CPU-second ratio does not."""
    c8 = result["closed_loop"].get(str(REFERENCE_LEVEL), {})
    gateway, lean = c8.get(GATEWAY), c8.get(LEAN)
    ratio = gateway["rps"] / lean["rps"] if gateway and lean and lean["rps"] else None
    per_cpu = (lean["cpu_s_per_1000"] / gateway["cpu_s_per_1000"]
               if gateway and lean and gateway.get("cpu_s_per_1000") and lean.get("cpu_s_per_1000") else None)
    rate = result["fixed_rate"]
    added = (rate[GATEWAY]["p50_ms"] - rate[LEAN]["p50_ms"]
             if rate[GATEWAY]["p50_ms"] is not None and rate[LEAN]["p50_ms"] is not None else None)
    added_cpu = (rate[GATEWAY]["cpu_s_per_1000"] - rate[LEAN]["cpu_s_per_1000"]
                 if rate[GATEWAY].get("cpu_s_per_1000") and rate[LEAN].get("cpu_s_per_1000") else None)
    propagation = result["propagation"]
    p99 = propagation["p99_ms"]
    floor = limits["throughput_ratio_c8_min"]
    return {
        "throughput_c8_vs_lean": {
            "value": _round(ratio), "per_cpu_second": _round(per_cpu),
            "limit": f">= {floor}, measured and per CPU-second",
            "met": ratio is not None and per_cpu is not None and min(ratio, per_cpu) >= floor},
        "added_p50_fixed_rate_ms": {
            "value": _round(added), "added_cpu_ms_per_call": _round(added_cpu),
            "limit": f"< {limits['added_p50_fixed_rate_ms_max']}",
            "met": added is not None and added < limits["added_p50_fixed_rate_ms_max"]},
        "propagation_p99_ms": {
            "value": p99, "limit": f"< {limits['propagation_p99_ms_max']}, every change enforced",
            "met": p99 is not None and p99 < limits["propagation_p99_ms_max"] and propagation["failures"] == 0},
    }
