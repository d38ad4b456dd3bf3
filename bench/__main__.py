"""``python -m bench``: run the benchmark, print the table, write ``bench/results/bench-<time>.json``
(plus ``latest.json``) and ``bench/results/bench.png``.

The defaults are the documented run (under 3 minutes on 2 cores); the smaller settings exist
for the smoke test, not for figures anyone should quote.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.closed_loop import wrk_available
from bench.report import table, write_chart, write_json
from bench.run import Config, run

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None) -> tuple[Config, Path]:
    defaults = Config()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default=",".join(map(str, defaults.levels)), help="closed-loop concurrency levels")
    parser.add_argument("--seconds", type=int, default=defaults.seconds, help="per closed-loop run (whole seconds)")
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="interleaved rounds")
    parser.add_argument("--rate", type=float, default=defaults.rate, help="calls/s of the fixed-rate run")
    parser.add_argument("--rate-seconds", type=float, default=defaults.rate_seconds)
    parser.add_argument("--rate-rounds", type=int, default=defaults.rate_rounds)
    parser.add_argument("--scale-levels", default=",".join(map(str, defaults.scale_levels)))
    parser.add_argument("--scale-seconds", type=int, default=defaults.scale_seconds)
    parser.add_argument("--scale-rounds", type=int, default=defaults.scale_rounds)
    parser.add_argument("--propagation-changes", type=int, default=defaults.propagation_changes)
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="let the scheduler place every process")
    parser.add_argument("--no-mitmdump", dest="mitmdump", action="store_false", help="skip the mitmdump reference")
    parser.add_argument("--profile", choices=("on-miss", "always", "never"), default=defaults.profile)
    parser.add_argument("--policy-scale", type=int, default=defaults.policy_scale,
                        help="largest multiple of the issue's snapshot sizes for the policy evaluator (0: skip)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON and the PNG")
    args = parser.parse_args(argv)
    config = Config(levels=tuple(int(x) for x in args.levels.split(",")), seconds=args.seconds, rounds=args.rounds,
                    rate=args.rate, rate_seconds=args.rate_seconds, rate_rounds=args.rate_rounds,
                    scale_levels=tuple(int(x) for x in args.scale_levels.split(",")),
                    scale_seconds=args.scale_seconds, scale_rounds=args.scale_rounds,
                    propagation_changes=args.propagation_changes, pin=args.pin, mitmdump=args.mitmdump,
                    profile=args.profile, policy_scale=args.policy_scale)
    if 8 not in config.levels:
        parser.error("--levels must include 8: the throughput target is judged there")
    return config, args.out


def main(argv=None) -> int:
    config, out = parse_args(argv)
    if not wrk_available():
        print("wrk is not installed: `make bench` installs it (apt-get install wrk)", file=sys.stderr)
        return 2
    try:
        result = run(config, say=lambda text: print(text, file=sys.stderr, flush=True))
    except KeyboardInterrupt:
        print("interrupted; every process the benchmark started has been stopped", file=sys.stderr)
        return 130
    stamp = time.strftime("%Y%m%d-%H%M%S")
    write_json(result, out / f"bench-{stamp}.json")
    write_json(result, out / "latest.json")
    charted = write_chart(result, out / "bench.png")
    print(table(result))
    print(f"\nwrote {out / f'bench-{stamp}.json'}, {out / 'latest.json'} and "
          + (str(out / "bench.png") if charted else "no chart (matplotlib is missing: make bench installs it)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
