"""What a run's figures look like to a person: the printed table, the JSON file (for comparing
commits) and a small PNG chart. Only formats; every number comes from ``bench.run``."""

from __future__ import annotations

import json
from pathlib import Path

from bench.run import DIRECT, GATEWAY, LEAN

LABELS = {
    "direct": "upstream directly",
    "mitmproxy-lean": "mitmproxy, lean master, no addons",
    "gateway": "gateway (data plane, full chain)",
    "mitmdump": "mitmdump -q --mode reverse (reference)",
}


def _f(value, spec: str = ".2f", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _target_rows(per_target: dict) -> list[str]:
    rows = [f"  {'target':<40} {'req/s':>8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'CPU s/1k':>9} "
            f"{'proxy':>6} {'upstr':>6} {'client':>6} {'machine':>7} {'fail':>5}"]
    for name, fig in per_target.items():
        rows.append(f"  {LABELS.get(name, name):<40} {fig['rps']:>8.0f} {_f(fig['p50_ms']):>7} {_f(fig['p90_ms']):>7} "
                    f"{_f(fig['p99_ms']):>7} {_f(fig.get('cpu_s_per_1000'), '.3f'):>9} "
                    f"{_f(fig.get('cpu_util'), '.0%'):>6} {_f(fig.get('upstream_cpu_util'), '.0%'):>6} "
                    f"{_f(fig.get('client_cpu_util'), '.0%'):>6} "
                    f"{_f(fig.get('machine_cores_busy'), '.2f'):>7} {fig['failures']:>5}")
    return rows


def _comparison(per_target: dict) -> str:
    gw, lean, direct = per_target[GATEWAY], per_target[LEAN], per_target[DIRECT]

    def added(base):
        return _f(gw["p50_ms"] - base["p50_ms"] if gw["p50_ms"] is not None and base["p50_ms"] is not None else None,
                  "+.2f")

    def ratio(base):
        return _f(gw["rps"] / base["rps"] if base["rps"] else None, ".0%")

    cost = ""
    if gw.get("cpu_s_per_1000") and lean.get("cpu_s_per_1000"):
        cost = (f", per CPU-second {lean['cpu_s_per_1000'] / gw['cpu_s_per_1000']:.0%} "
                f"(+{gw['cpu_s_per_1000'] - lean['cpu_s_per_1000']:.3f} ms CPU per call)")
    return (f"  gateway vs lean mitmproxy: throughput {ratio(lean)}{cost}, added p50 {added(lean)} ms\n"
            f"  gateway vs direct: throughput {ratio(direct)}, added p50 {added(direct)} ms")


def table(result: dict) -> str:
    cfg = result["config"]
    lines = [f"MCP Mesh benchmark — {result['machine']['cpu']}, {result['machine']['cores']} cores, "
             f"commit {result['machine']['commit']}, load avg {result['machine']['load_average_before']:.2f} before",
             f"snapshot: {result['snapshot']['orgs']} orgs, {result['snapshot']['connections']} connections, "
             f"{result['snapshot']['api_keys']} API keys",
             f"cores: closed loop: {result['cores']['closed_loop']}; fixed rate and scale-out: unpinned",
             "CPU s/1k = the proxy process's CPU seconds per 1,000 calls; proxy, upstr, client = share of one core "
             "used by the proxy, the upstream, the load generator; machine = cores busy, everyone's work included",
             ""]
    for level, per_target in result["closed_loop"].items():
        lines.append(f"closed loop, concurrency {level} (wrk, {cfg['rounds']} interleaved rounds x {cfg['seconds']} s, "
                     f"pinned)")
        lines += _target_rows(per_target) + [_comparison(per_target), ""]
    lines.append(f"fixed rate {cfg['rate']:g} calls/s (open loop, {cfg['rate_rounds']} interleaved rounds x "
                 f"{cfg['rate_seconds']:g} s)")
    lines += _target_rows(result["fixed_rate"]) + [_comparison(result["fixed_rate"]), ""]
    lines.append("scale-out: gateway load on 1 data plane process vs several sharing the port (SO_REUSEPORT), "
                 "all processes unpinned")
    for level, doc in result["scale_out"].items():
        (_, one), (many_name, many) = [(k, v) for k, v in doc.items() if k.startswith("processes_")]
        lines.append(f"  concurrency {level:>3}: 1 process {one['rps']:.0f} req/s (p50 {_f(one['p50_ms'])} ms), "
                     f"{many_name.split('_')[1]} processes {many['rps']:.0f} req/s (p50 {_f(many['p50_ms'])} ms): "
                     f"x{_f(doc['speedup'])}; data plane CPU {_f(one.get('cpu_util'), '.0%')} vs "
                     f"{_f(many.get('cpu_util'), '.0%')} of a core, "
                     f"upstream {_f(many.get('upstream_cpu_util'), '.0%')}, machine "
                     f"{_f(one.get('machine_cores_busy'))} vs {_f(many.get('machine_cores_busy'))} cores busy")
    lines.append("")
    memory = ", ".join(f"{name} {mb:.0f} MB" for name, mb in result["memory_mb"].items())
    lines.append(f"RSS after load: {memory}")
    prop = result["propagation"]
    kinds = ", ".join(f"{n} {k}s" for k, n in prop["by_kind"].items())
    lines.append(f"policy propagation (service call -> enforced at the data plane), {prop['changes']} changes "
                 f"({kinds}): p50 {_f(prop['p50_ms'], '.1f')} ms, p90 {_f(prop['p90_ms'], '.1f')} ms, "
                 f"p99 {_f(prop['p99_ms'], '.1f')} ms, not enforced within 5 s: {prop['failures']}")
    chain = result["chain_cost"]
    tv = chain["token_verification"]
    lines.append(f"token verification per call: {tv['sha256_and_lookup_ns'] / 1000:.2f} µs (SHA-256 of the key, "
                 f"then one look-up among {chain['store']['api_keys']} keys; SHA-256 alone "
                 f"{tv['sha256_ns'] / 1000:.2f} µs); policy decision per call: "
                 f"{chain['policy_decision_ns'] / 1000:.2f} µs (python -m bench.policy_scale: at 1x and 10x sizes)")
    addons = ", ".join(f"{name} {us:.1f}" for name, us in chain["per_addon_us"].items())
    lines.append(f"addon chain per call, hooks called directly (µs): {addons}; sum "
                 f"{sum(chain['per_addon_us'].values()):.1f} µs")
    lines.append(f"addon chain per call through mitmproxy's hook dispatch: {chain['chain_us']:.0f} µs "
                 f"(lean master {chain['dispatch_lean_us']:.0f} µs, with chain {chain['dispatch_gateway_us']:.0f} µs); "
                 f"the same addons as separate mitmproxy addons (how the chain ran before AddonChain): "
                 f"{chain['separate_addons_chain_us']:.0f} µs")
    if result.get("policy_scale"):
        from bench.policy_scale import table

        lines.append("")
        lines.append("policy evaluator and snapshot memory (one org; decide = one tools/call decision):")
        lines.extend("  " + line for line in table(result["policy_scale"]).splitlines())
    lines.append("")
    lines.append("targets:")
    for name, t in result["targets"].items():
        extra = ""
        if "per_cpu_second" in t:
            extra = f", per CPU-second {_f(t['per_cpu_second'], '.3f')}"
        if "added_cpu_ms_per_call" in t:
            extra = f"; the gateway's added CPU per call {_f(t['added_cpu_ms_per_call'], '.3f')} ms"
        lines.append(f"  {name:<24} {_f(t['value'], '.3f')}{extra} (target {t['limit']}): "
                     f"{'met' if t['met'] else 'MISSED'}")
    for name, profile in (result.get("profile") or {}).items():
        lines.append("")
        if "error" in profile:
            lines.append(f"profile of {name}: {profile['error']}")
            continue
        lines.append(f"profile of {LABELS.get(name, name)} at concurrency {profile['concurrency']} (py-spy, "
                     f"{profile['samples']} samples of active time):")
        lines.append("  " + ", ".join(f"{area} {share:.0%}" for area, share in profile["by_area"].items()))
        if profile["by_addon_module"]:
            modules = ", ".join(f"{m.split('/')[-1]} {share:.1%}" for m, share in profile["by_addon_module"].items())
            lines.append(f"  our addons by module (inclusive): {modules}")
        lines.append("  top self time: " + ", ".join(f"{row['frame']} {row['share']:.0%}"
                                                      for row in profile["top_self"][:4]))
    phases = ", ".join(f"{name} {seconds:g}" for name, seconds in result["phase_seconds"].items())
    lines.append(f"\nwall time {result['wall_seconds']} s ({phases}); "
                 f"load avg {result['machine']['load_average_after']:.2f} after")
    return "\n".join(lines)


def write_json(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")


def write_chart(result: dict, path: Path) -> bool:
    """False when matplotlib is missing (it comes with the ``bench`` extra)."""
    try:
        import matplotlib
    except ImportError:
        return False

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    levels = list(result["closed_loop"])
    names = [n for n in LABELS if any(n in result["closed_loop"][lv] for lv in levels)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        measured = [(j, result["closed_loop"][lv][name]["rps"]) for j, lv in enumerate(levels)
                    if name in result["closed_loop"][lv]]
        left.bar([j + i * width for j, _ in measured], [rps for _, rps in measured], width, color=f"C{i}",
                 label=LABELS[name])
    left.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(levels))], [f"c={lv}" for lv in levels])
    left.set_ylabel("calls/s")
    left.set_title("closed-loop throughput")
    left.legend(fontsize=7)
    rate = result["fixed_rate"]
    for i, name in enumerate(names):
        if name in rate:
            right.bar(i - 0.2, rate[name]["p50_ms"] or 0, 0.4, color=f"C{i}")
            right.bar(i + 0.2, rate[name]["p99_ms"] or 0, 0.4, color=f"C{i}", alpha=0.45, hatch="//")
    shown = [n for n in names if n in rate]
    right.set_xticks([names.index(n) for n in shown], [n.replace("mitmproxy-", "mitm ") for n in shown], fontsize=8)
    right.set_yscale("log")
    shortest = min(rate[n]["p50_ms"] for n in shown if rate[n]["p50_ms"])
    right.set_ylim(bottom=shortest / 2)
    right.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    right.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    right.set_ylabel("ms, log scale (solid p50, hatched p99)")
    right.set_title(f"latency at {result['config']['rate']:g} calls/s, open loop")
    fig.suptitle(f"MCP Mesh bench, commit {result['machine']['commit']}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
