"""Latency histograms in whole microseconds: what wrk reports, what the fixed-rate client records,
merged across interleaved rounds before any percentile is taken (percentiles of rounds cannot be
averaged). Counts may be fractional: a quantile from wrk stands for a share of a round's calls."""

from __future__ import annotations

from collections import Counter


class Histogram:
    def __init__(self, counts: dict[int, int] | None = None) -> None:
        self.counts: Counter[int] = Counter(counts or {})  # µs -> number of calls

    def add(self, micros: int, count: float = 1) -> None:
        self.counts[micros] += count

    def merge(self, other: "Histogram") -> "Histogram":
        self.counts.update(other.counts)
        return self

    @property
    def total(self) -> float:
        return sum(self.counts.values())

    def percentile(self, p: float) -> float | None:
        """The smallest value with at least ``p`` percent of samples at or below it, in ms."""
        total = self.total
        if not total:
            return None
        rank = total * p / 100
        seen = 0
        for micros in sorted(self.counts):
            seen += self.counts[micros]
            if seen >= rank - 1e-9:
                return micros / 1000
        return max(self.counts) / 1000

    def summary(self) -> dict[str, float | None]:
        return {"p50_ms": self.percentile(50), "p90_ms": self.percentile(90), "p99_ms": self.percentile(99)}
