"""The benchmark harness end to end with tiny durations: it starts every target, measures each
phase and writes the JSON with every figure the README's table quotes. Figures are not judged
here (timing assertions do not belong in tests); only that they exist and are plausible."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import unavailable

from tests.support import ROOT

pytestmark = pytest.mark.e2e

TINY = ["--levels", "8", "--seconds", "1", "--rounds", "1", "--rate", "100", "--rate-seconds", "0.5",
        "--rate-rounds", "1", "--scale-levels", "8", "--scale-seconds", "1", "--scale-rounds", "1",
        "--propagation-changes", "6", "--profile", "never", "--no-mitmdump", "--policy-scale", "1"]


@pytest.fixture(scope="module")
def result(tmp_path_factory, redis_url):
    if shutil.which("wrk") is None:
        unavailable("wrk (`make bench` installs it)")
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run([sys.executable, "-m", "bench", *TINY, "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=90, env={**os.environ, "MESH_BENCH_REDIS_URL": redis_url})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "latest.json").read_text()), done.stdout


def test_every_target_answered_every_call(result):
    doc, _ = result
    level = doc["closed_loop"]["8"]
    assert set(level) == {"direct", "mitmproxy-lean", "gateway"}
    for name, figures in [*level.items(), *doc["fixed_rate"].items()]:
        assert figures["requests"] > 0 and figures["failures"] == 0, name
        assert 0 < figures["p50_ms"] <= figures["p90_ms"] <= figures["p99_ms"], name


def test_proxies_report_their_cpu_and_memory(result):
    doc, _ = result
    for name in ("mitmproxy-lean", "gateway"):
        assert doc["closed_loop"]["8"][name]["cpu_s_per_1000"] > 0
        assert doc["memory_mb"][name] > 10
    assert "cpu_s_per_1000" not in doc["closed_loop"]["8"]["direct"]


def test_scale_out_runs_two_data_planes_on_one_port(result):
    doc, _ = result
    scale = doc["scale_out"]["8"]
    assert scale["processes_1"]["requests"] > 0 and scale["processes_2"]["requests"] > 0
    assert scale["processes_2"]["failures"] == 0 and scale["speedup"] > 0


def test_policy_changes_are_all_enforced(result):
    doc, _ = result
    propagation = doc["propagation"]
    assert propagation["changes"] == 6 and propagation["failures"] == 0
    assert propagation["by_kind"] == {"connection": 2, "key": 2, "revocation": 2}
    assert 0 < propagation["p50_ms"] <= propagation["p99_ms"]


def test_chain_cost_and_token_verification_are_measured(result):
    doc, _ = result
    chain = doc["chain_cost"]
    # Measured over the snapshots as they stand after propagation: two connections more, and
    # both keys it created revoked again.
    assert chain["store"]["connections"] == doc["snapshot"]["connections"] + 2
    assert chain["store"]["api_keys"] == doc["snapshot"]["api_keys"]
    assert chain["token_verification"]["sha256_and_lookup_ns"] > 0
    assert {"Authenticator", "ConnectionResolver", "JsonRpcParser", "ToolAuthorizer",
            "CredentialInjector"} <= set(chain["per_addon_us"])
    assert chain["policy_decision_ns"] > 0
    assert chain["dispatch_gateway_us"] > 0 and chain["dispatch_separate_addons_us"] > 0


def test_verdicts_and_table_are_printed(result):
    doc, stdout = result
    assert set(doc["targets"]) == {"throughput_c8_vs_lean", "added_p50_fixed_rate_ms", "propagation_p99_ms"}
    assert all(isinstance(t["met"], bool) for t in doc["targets"].values())
    assert "closed loop, concurrency 8" in stdout and "policy propagation" in stdout and "targets:" in stdout


def test_the_policy_evaluator_and_snapshot_memory_are_reported(result):
    doc, stdout = result
    row, = doc["policy_scale"]
    assert (row["connections"], row["api_keys"], row["roles"]) == (1000, 10000, 100)
    assert row["policy_decision_ns"] > 0 and row["memory_mb"] > 0
    assert "policy evaluator and snapshot memory" in stdout
