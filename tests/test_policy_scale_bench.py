"""The policy-scale benchmark runs and reports every figure (small sizes; no timing asserted)."""

from bench.policy_scale import measure, table


def test_policy_scale_reports_memory_install_verification_and_decision_costs():
    row = measure(connections=20, api_keys=200, roles=5, decisions=2_000)
    for figure in ("memory_mb", "install_ms", "change_install_ms", "token_verification_ns", "policy_decision_ns"):
        assert row[figure] > 0, figure
    assert 0 < row["allowed_share"] < 1
    assert "decide ns" in table([row])
