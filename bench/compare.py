"""``python -m bench.compare OLD.json NEW.json``: two runs side by side (e.g. ``bench/baseline.json``
against ``bench/results/latest.json``), figure by figure, with the change in percent.

Throughput and latency move with whatever else the machine is doing; the CPU seconds per 1,000
calls and the chain's cost on synthetic flows are the figures to compare between commits.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(doc: dict) -> dict[str, float]:
    """Every comparable figure of one run, under a readable name."""
    found: dict[str, float] = {}
    for level, per_target in doc["closed_loop"].items():
        for target, fig in per_target.items():
            for key in ("rps", "p50_ms", "p99_ms", "cpu_s_per_1000"):
                if fig.get(key) is not None:
                    found[f"c={level} {target} {key}"] = fig[key]
    for target, fig in doc["fixed_rate"].items():
        for key in ("p50_ms", "p99_ms", "cpu_s_per_1000"):
            if fig.get(key) is not None:
                found[f"fixed rate {target} {key}"] = fig[key]
    for level, scale in doc["scale_out"].items():
        found[f"scale-out c={level} speedup"] = scale["speedup"]
    for key in ("p50_ms", "p99_ms"):
        found[f"propagation {key}"] = doc["propagation"][key]
    chain = doc["chain_cost"]
    found["chain through dispatch us"] = chain["chain_us"]
    found["token verification ns"] = chain["token_verification"]["sha256_and_lookup_ns"]
    for name, value in doc["memory_mb"].items():
        found[f"RSS {name} MB"] = value
    return found


def compare(old: dict, new: dict) -> str:
    before, after = rows(old), rows(new)
    lines = [f"{'figure':<44} {old['machine']['commit']:>10} {new['machine']['commit']:>10} {'change':>8}"]
    for name in before.keys() | after.keys():
        a, b = before.get(name), after.get(name)
        change = f"{(b - a) / a:+.0%}" if a and b is not None else ""
        lines.append(f"{name:<44} {'' if a is None else f'{a:.3f}':>10} {'' if b is None else f'{b:.3f}':>10} "
                     f"{change:>8}")
    return "\n".join([lines[0], *sorted(lines[1:])])


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m bench.compare OLD.json NEW.json", file=sys.stderr)
        return 2
    old, new = (json.loads(Path(p).read_text()) for p in argv)
    print(compare(old, new))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
