"""The official MCP conformance suite (`@modelcontextprotocol/conformance`, npm) against the echo
upstream directly and through `mesh up`, once per protocol generation: a check the upstream
passes must pass through the gateway too, and so must a scenario.

The suite runs its server scenarios as a client of the URL it is given: the 2025-11-25 scenarios
(``--spec-version``) and everything the 2026-07-28 revision requires (``--requirements``), each
run taking about ten seconds. It runs offline from ``.cache/npm`` (``scripts/install-test-upstreams``
fills it; the pinned version below is the one cached there), on Node 22 from npm's ``node`` package
(the suite needs Node >= 22). It has no option for headers: ``conformance_api_key.mjs``, preloaded
into its Node process, gives its requests to the gateway the API key, as a configured client has
it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import unavailable
from tests.support import ROOT, call_tool_status, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

SUITE = ["-p", "node@22", "-p", "@modelcontextprotocol/conformance@0.2.0-alpha.12"]  # as install-test-upstreams
NPM_CACHE = ROOT / ".cache" / "npm"
API_KEY_PRELOAD = Path(__file__).with_name("conformance_api_key.mjs")
RUNS = {"2025-11-25": ["--spec-version", "2025-11-25"], "2026-07-28": ["--requirements", "2026-07-28"]}
# What the gateway answers otherwise than the upstream on purpose, with the reason. Each must still
# differ, so an entry that stops being true fails here and is removed.
BY_DESIGN = {
    ("2026-07-28", "tasks-dispatch-and-envelope", "sep-2663-legacy-task-param-ignored"):
        "a request asking for a task (params.task) is refused until a task's results are bound to the API "
        "key that started it (shared.policy.TASKS_REFUSED)",
}
# Issue #11, item 10 (SEP-2575): removed and unknown methods are 404 with -32601 in 2026-07-28.
METHOD_NOT_FOUND_CHECKS = ["sep-2575-http-server-method-not-found-404"] + [
    f"sep-2575-http-server-method-not-found-404-{method}"
    for method in ("initialize", "ping", "logging-setlevel", "resources-subscribe", "resources-unsubscribe")]
SCENARIO_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d\d-\d\dT")

Check = tuple[str, str, int]  # scenario, check id, which of the checks with that id (some repeat)


def npx(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300):
    return subprocess.run(["npx", "-y", *SUITE, "--", "conformance", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env={**os.environ, "npm_config_cache": str(NPM_CACHE),
                                                         "npm_config_offline": "true", **(env or {})})


@pytest.fixture(scope="session")
def conformance():
    if shutil.which("npx") is None:
        unavailable("npx (Node.js), which runs the conformance suite")
    if npx("list", timeout=120).returncode != 0:
        subprocess.run([str(ROOT / "scripts" / "install-test-upstreams")], timeout=600, check=False)
        if npx("list", timeout=120).returncode != 0:
            unavailable("@modelcontextprotocol/conformance in .cache/npm (scripts/install-test-upstreams)")


@pytest.fixture(scope="module")
def connection_id(gateway, upstream):
    return gateway.add_connection("echo", upstream.url)


@pytest.fixture(scope="module")
def key(gateway, connection_id):
    key = gateway.create_key("conformance")
    wait_for(lambda: call_tool_status(gateway.mcp_url(connection_id), key, "echo", {"text": "x"})[0] == 200,
             timeout=10, what="the data plane to know the key")
    return key


def run_suite(url: str, version: str, out: Path, key: str | None = None) -> dict[Check, dict]:
    """Every check of one run of the suite against ``url``."""
    env = {}
    if key is not None:
        env = {"NODE_OPTIONS": f"--import={API_KEY_PRELOAD}", "MESH_CONFORMANCE_URL": url,
               "MESH_CONFORMANCE_KEY": key}
    out.mkdir(parents=True)
    done = npx("server", "--url", url, *RUNS[version], "-o", str(out), env=env, cwd=out)
    checks: dict[Check, dict] = {}
    for path in sorted(out.glob("*/checks.json")):
        scenario = SCENARIO_DIR.match(path.parent.name)["scenario"]
        seen: Counter = Counter()
        for check in json.loads(path.read_text()):
            checks[(scenario, check["id"], seen[check["id"]])] = check
            seen[check["id"]] += 1
    assert checks, f"the conformance suite ran no scenario (exit {done.returncode}):\n{done.stderr[-3000:]}"
    return checks


def lost(direct: dict[Check, dict], through: dict[Check, dict]) -> set[Check]:
    """The checks that pass against the upstream and not through the gateway."""
    return {check for check, result in direct.items()
            if result["status"] == "SUCCESS" and through.get(check, {}).get("status") != "SUCCESS"}


def passing_scenarios(checks: dict[Check, dict]) -> set[str]:
    scenarios = {scenario for scenario, _, _ in checks}
    failed = {scenario for (scenario, _, _), result in checks.items() if result["status"] == "FAILURE"}
    return scenarios - failed


@pytest.fixture(scope="module")
def runs(conformance, gateway, upstream, connection_id, key, tmp_path_factory):
    """The suite's results per generation: (direct, through the gateway), each run once per module."""
    cache: dict[str, tuple[dict, dict]] = {}

    def get(version: str, again: bool = False) -> tuple[dict, dict]:
        if version not in cache or again:
            out = tmp_path_factory.mktemp(f"conformance-{version}")
            cache[version] = (run_suite(upstream.url, version, out / "direct"),
                              run_suite(gateway.mcp_url(connection_id), version, out / "gateway", key))
        return cache[version]

    return get


@pytest.mark.parametrize("version", RUNS)
def test_no_check_the_upstream_passes_fails_through_the_gateway(runs, version):
    direct, through = runs(version)
    by_design = {(scenario, check) for v, scenario, check in BY_DESIGN if v == version}
    unexpected = {c for c in lost(direct, through) if c[:2] not in by_design}
    if unexpected:
        # A few checks are timing-bound (streams read for a second or two) and this machine may be
        # busy: a difference counts when a second run of both shows it again.
        direct, through = runs(version, again=True)
        unexpected &= {c for c in lost(direct, through) if c[:2] not in by_design}
    assert not unexpected, "passed against the upstream, not through the gateway:\n" + "\n".join(
        f"{c}: {through.get(c, {}).get('status', 'not run')} {through.get(c, {}).get('errorMessage', '')}"
        for c in sorted(unexpected))
    assert passing_scenarios(direct) - passing_scenarios(through) == set()
    differing = {c[:2] for c in lost(direct, through)}
    assert by_design <= differing, f"no longer differs, remove it from BY_DESIGN: {by_design - differing}"
    assert sum(r["status"] == "SUCCESS" for r in direct.values()) >= 30, "the suite did not run against the upstream"


def test_removed_and_unknown_methods_are_404_method_not_found_through_the_gateway(runs):
    direct, through = runs("2026-07-28")
    for checks in (direct, through):
        results = {check: checks.get(("server-stateless", check, 0), {}).get("status")
                   for check in METHOD_NOT_FOUND_CHECKS}
        assert set(results.values()) == {"SUCCESS"}, results
