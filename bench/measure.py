"""The load phases, interleaved: every round visits every target at every level, in an order that
rotates from round to round, so a burst of noise from elsewhere on the machine lands on all
targets alike instead of on whichever happened to run during it.

Around each run it reads the CPU seconds of the target's own processes, of the upstream and of the
load generator, and the busy time of the whole machine, so every figure comes with who was busy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from bench.closed_loop import run_wrk
from bench.fixed_rate import run_fixed_rate
from bench.latency import Histogram
from bench.processes import cpu_seconds, machine_busy_seconds


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    path: str
    api_key: str | None = None
    pids: tuple[int, ...] = ()  # the processes whose CPU is this target's own cost (none: direct)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


@dataclass
class Tally:
    """Everything measured for one target at one level, summed over rounds."""

    requests: int = 0
    seconds: float = 0.0
    failures: int = 0
    own_cpu: float = 0.0
    upstream_cpu: float = 0.0
    machine_cpu: float = 0.0  # every process on the machine, ours or not
    client_cpu: float = 0.0  # the load generator's
    latency: Histogram = field(default_factory=Histogram)

    def add(self, requests: int, seconds: float, failures: int, latency: Histogram, client_cpu: float,
            own_cpu: float, upstream_cpu: float, machine_cpu: float) -> None:
        self.requests += requests
        self.seconds += seconds
        self.failures += failures
        self.own_cpu += own_cpu
        self.upstream_cpu += upstream_cpu
        self.machine_cpu += machine_cpu
        self.client_cpu += client_cpu
        self.latency.merge(latency)

    def figures(self, has_own_processes: bool) -> dict:
        rate = self.requests / self.seconds if self.seconds else 0.0
        doc = {"requests": self.requests, "seconds": round(self.seconds, 3), "failures": self.failures,
               "rps": round(rate, 1), **{k: _ms(v) for k, v in self.latency.summary().items()},
               "upstream_cpu_util": round(self.upstream_cpu / self.seconds, 3) if self.seconds else None,
               "machine_cores_busy": round(self.machine_cpu / self.seconds, 2) if self.seconds else None,
               "client_cpu_util": round(self.client_cpu / self.seconds, 3) if self.seconds else None}
        if has_own_processes and self.requests:
            doc["cpu_s_per_1000"] = round(self.own_cpu / self.requests * 1000, 4)
            doc["cpu_util"] = round(self.own_cpu / self.seconds, 3)
        return doc


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def cpu_of(pids: Iterable[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass  # gone: the run will fail loudly on its own
    return total


def rotated(targets: list[Target], shift: int) -> list[Target]:
    shift %= len(targets)
    return targets[shift:] + targets[:shift]


def interleave(plan: dict, rounds: int, upstream_pid: int,
               run_one: Callable[[Target, object], tuple[int, float, int, Histogram, float]]) -> dict:
    """``plan`` maps each level to the targets measured at it; ``run_one(target, level) ->
    (requests, seconds, failures, latency, client CPU seconds)`` runs once per round, level and
    target. Returns
    ``{level: {target name: Tally}}``."""
    tallies = {level: {t.name: Tally() for t in targets} for level, targets in plan.items()}
    step = 0
    for _round in range(rounds):
        for level, targets in plan.items():
            for target in rotated(targets, step):
                own_before, up_before = cpu_of(target.pids), cpu_of([upstream_pid])
                machine_before = machine_busy_seconds()
                requests, seconds, failures, latency, client_cpu = run_one(target, level)
                machine = machine_busy_seconds() - machine_before
                own = cpu_of(target.pids) - own_before
                upstream = cpu_of([upstream_pid]) - up_before
                tallies[level][target.name].add(requests, seconds, failures, latency, client_cpu, own, upstream,
                                                machine)
            step += 1
    return tallies


def closed_loop(plan: dict[int, list[Target]], rounds: int, seconds: int, upstream_pid: int,
                load_cpus: set[int] | None) -> dict:
    def one(target: Target, concurrency: int):
        result = run_wrk(target.url, concurrency, seconds, target.api_key, load_cpus)
        return result.requests, result.seconds, result.failures, result.latency, result.client_cpu

    return interleave(plan, rounds, upstream_pid, one)


def fixed_rate(targets: list[Target], rate: float, rounds: int, seconds: float, upstream_pid: int) -> dict:
    def one(target: Target, _rate):
        result = run_fixed_rate(target.port, target.path, target.api_key, rate, seconds)
        failures = result.failures + (result.sent - result.answered)
        return result.answered, result.seconds, failures, result.latency, result.client_cpu

    return interleave({rate: targets}, rounds, upstream_pid, one)[rate]


def warm_up(targets: list[Target], load_cpus: set[int] | None) -> None:
    """A short run per target first: connections, imports and caches settle outside the figures."""
    for target in targets:
        result = run_wrk(target.url, 8, 1, target.api_key, load_cpus)
        if not result.requests or result.failures:
            raise RuntimeError(f"{target.name} does not answer the echo call: {result.failures} failures "
                               f"of {result.requests} at {target.url}")
