"""``python -m dataplane_addon`` takes its options as ``mitmdump`` does: ``--set name=value``
reaches the addon that declared the option, an unknown name or a bad value is a clear error, and
the defaults are the ones declared once, in the addons (the README's Configuration table says
the same)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest

from dataplane_addon.__main__ import build_master, configure
from dataplane_addon.inject import CredentialInjector
from dataplane_addon.request_body import RequestBodyGuard
from dataplane_addon.upstream_address import UpstreamAddressGuard
from dataplane_addon.snapshot_store import SnapshotFollower
from dataplane_addon.upstream_timeout import UpstreamTimeout
from shared.envelope import encode_key, generate_key
from tests.support import ROOT, free_port, port_open, wait_for

pytestmark = pytest.mark.anyio


def chain_member(master, kind):
    return next(addon for addon in master.addons.chain if hasattr(addon, "members")).member(kind)


async def test_set_reaches_the_addon_that_declared_the_option():
    master = build_master()
    configure(master, ["--set", "mesh_max_request_body=1k", "--set", "mesh_upstream_timeout=2.5",
                       "--set", "mesh_body_read_timeout=7", "--set", "mesh_control_plane=127.0.0.1:4999",
                       "--set", "mesh_allow_private_upstreams=10.0.0.0/8", "-p", "4567"])
    guard = chain_member(master, RequestBodyGuard)
    assert (guard.max_body, guard.read_timeout) == (1024, 7.0)
    assert chain_member(master, UpstreamTimeout).seconds == 2.5
    assert master.options.mode == ["reverse:http://127.0.0.1:4999"]  # in front of the control plane
    assert (master.options.listen_host, master.options.listen_port) == ("127.0.0.1", 4567)
    rules = chain_member(master, UpstreamAddressGuard).rules
    assert {4567, 4999} <= rules.own_ports  # the listen port and the control plane: never an upstream
    assert [str(n) for n in rules.allowed_private] == ["10.0.0.0/8"]


async def test_options_left_unset_take_effect_with_their_defaults(monkeypatch):
    key = generate_key()
    monkeypatch.setenv("MESH_DATAPLANE_KEY", encode_key(key))
    monkeypatch.setenv("MESH_BRIDGE_TOKEN", "bridge-token-of-the-entry-point-test")
    master = build_master()
    configure(master, [])  # no mesh_dataplane_key_file, no mesh_bridge: the defaults apply
    keyring = chain_member(master, CredentialInjector).keyring
    assert keyring is not None and keyring.keys[keyring.active] == key
    bridge = chain_member(master, SnapshotFollower).store.bridge
    assert (f"{bridge.host}:{bridge.port}", bridge.token) == (master.options.default("mesh_bridge"),
                                                              "bridge-token-of-the-entry-point-test")


async def test_mitmproxys_own_options_keep_their_names_and_the_entry_points_defaults_can_be_changed():
    master = build_master()
    configure(master, [])
    assert master.options.listen_host == "127.0.0.1"  # not mitmproxy's every interface
    assert master.options.stream_large_bodies is None  # streamed bodies would skip inspection
    configure(master, ["--set", "tcp_timeout=60", "--listen-host", "127.0.0.2"])
    assert (master.options.tcp_timeout, master.options.listen_host) == (60, "127.0.0.2")


# The README's Configuration table documents the defaults of the settings that reach the data plane
# as options; they must be the options' own (declared once, in the addons).
DOCUMENTED = {"MESH_MAX_REQUEST_BODY": "mesh_max_request_body", "MESH_UPSTREAM_TIMEOUT": "mesh_upstream_timeout",
              "MESH_BODY_READ_TIMEOUT": "mesh_body_read_timeout", "MESH_REDIS_PREFIX": "mesh_redis_prefix"}


async def test_the_readme_documents_the_defaults_the_addons_declare():
    master = build_master()
    readme = (ROOT / "README.md").read_text()
    for variable, option in DOCUMENTED.items():
        row = re.search(rf"^\| `{variable}` \| `([^`]*)` \|", readme, re.MULTILINE)
        assert row, f"README's Configuration table has no default for {variable}"
        assert row.group(1) == str(master.options.default(option)), variable


def run_data_plane(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dataplane_addon", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env)


def test_an_unknown_option_is_a_clear_error():
    result = run_data_plane("--set", "mesh_no_such_option=1", "--set", "listen_port=1")
    assert result.returncode == 1
    assert "python -m dataplane_addon: Unknown option(s): mesh_no_such_option" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_mode_is_the_entry_points_own():
    result = run_data_plane("--set", "mode=regular")
    assert result.returncode == 1
    assert "mode: python -m dataplane_addon is a reverse proxy in front of mesh_control_plane" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_value_an_addon_refuses_is_a_clear_error():
    result = run_data_plane("--set", "mesh_upstream_timeout=soon")
    assert result.returncode == 1
    assert "mesh_upstream_timeout must be a number of seconds, not 'soon'" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unusable_key_in_the_environment_is_a_clear_error():
    result = run_data_plane(env={"PATH": os.environ["PATH"], "MESH_DATAPLANE_KEY": "not-a-key"})
    assert result.returncode == 1
    assert "python -m dataplane_addon: the data-plane key (MESH_DATAPLANE_KEY) must be 32 bytes" in result.stderr
    assert "not-a-key" not in result.stderr and "Traceback" not in result.stderr


def test_options_lists_each_option_with_its_help_and_no_password():
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://mesh:hunter2-redis-password@127.0.0.1:6379/0"}
    result = run_data_plane("--options", "--set", "mesh_max_request_body=2m", env=env)
    assert result.returncode == 0, result.stderr
    assert "mesh_max_request_body = 2m\n    Largest request body accepted" in result.stdout
    assert "mesh_redis_url = redis://…@127.0.0.1:6379/0\n" in result.stdout
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.e2e
def test_plain_mitmdump_takes_the_same_options(tmp_path, redis_url, bus_prefix):
    key_file = tmp_path / "dataplane.key"
    key_file.write_text(encode_key(generate_key()) + "\n")
    port = free_port()
    mitmdump = [str(Path(sys.executable).with_name("mitmdump")), "-q",
                "--mode", f"reverse:http://127.0.0.1:{free_port()}@{port}", "--set", "connection_strategy=lazy", "-s", "dataplane_addon/mitmdump_script.py",
                "--set", f"mesh_dataplane_key_file={key_file}", "--set", f"mesh_redis_prefix={bus_prefix}"]
    env = {**os.environ, "REDIS_URL": redis_url}
    refused = subprocess.run([*mitmdump, "--set", "mesh_upstream_timeout=soon"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    assert "mesh_upstream_timeout must be a number of seconds, not 'soon'" in refused.stdout + refused.stderr
    proc = subprocess.Popen([*mitmdump, "--set", "mesh_upstream_timeout=5", "--set", "mesh_body_read_timeout=2.5"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, what="mitmdump with the gateway's addons")
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert httpx2.get(f"http://127.0.0.1:{port}/health", timeout=5).json() == {"status": "ok"}
    finally:
        proc.terminate()
        proc.wait(10)
