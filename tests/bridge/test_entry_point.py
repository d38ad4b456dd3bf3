"""``python -m dataplane_addon.bridge`` takes the options it shares with the data plane under the
same names, declared once (``dataplane_addon/plane_options.py``), with ``--set name=value``; an
unknown name or an unusable value is a clear error; and it never imports mitmproxy, which it does
not run."""

from __future__ import annotations

import os
import subprocess
import sys

from dataplane_addon.bridge.__main__ import parse_args
from shared.envelope import encode_key, generate_key
from tests.support import ROOT


def run_bridge(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dataplane_addon.bridge", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={"PATH": os.environ["PATH"], **env})


def test_the_bridge_never_imports_mitmproxy():
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, dataplane_addon.bridge.__main__; "
                               "print(sorted({m.split('.')[0] for m in sys.modules}))"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True).stdout
    assert "'dataplane_addon'" in loaded and "'mitmproxy'" not in loaded


def test_set_reaches_the_bridge(tmp_path, monkeypatch):
    monkeypatch.delenv("MESH_DATAPLANE_KEY", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6390/3")
    key = generate_key()
    (tmp_path / "dataplane.key").write_text(encode_key(key) + "\n")
    config = parse_args(["--set", "mesh_bridge=127.0.0.1:4702", "--set", "mesh_redis_prefix=elsewhere",
                         "--set", f"mesh_dataplane_key_file={tmp_path / 'dataplane.key'}",
                         "--set", "mesh_allow_private_upstreams=10.1.0.0/16", "--set", "mesh_gateway_ports=4700,4701"])
    assert config.port == 4702
    assert config.redis_url == "redis://127.0.0.1:6390/3"  # from the environment, never a command line
    assert config.keys.prefix == "elsewhere"
    assert config.keyring.keys[config.keyring.active] == key
    assert config.rules.own_ports == {4700, 4701, 4702}
    assert [str(n) for n in config.rules.allowed_private] == ["10.1.0.0/16"]


def test_an_unknown_option_is_a_clear_error():
    result = run_bridge("--set", "mesh_no_such_option=1", MESH_BRIDGE_TOKEN="t" * 43)
    assert result.returncode == 1
    assert "python -m dataplane_addon.bridge: Unknown option(s): mesh_no_such_option" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_bridge_listens_on_loopback_only_and_says_so():
    result = run_bridge("--set", "mesh_bridge=0.0.0.0:4702", MESH_BRIDGE_TOKEN="t" * 43)
    assert result.returncode == 1
    assert "mesh_bridge: the bridge listens on 127.0.0.1 only, not 0.0.0.0" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unusable_key_file_is_a_clear_error_before_anything_starts(tmp_path):
    result = run_bridge("--set", f"mesh_dataplane_key_file={tmp_path / 'absent.key'}", MESH_BRIDGE_TOKEN="t" * 43)
    assert result.returncode == 1
    assert f"cannot read the data-plane key file {tmp_path / 'absent.key'}" in result.stderr
    assert "Traceback" not in result.stderr


def test_options_lists_the_shared_options_and_no_password():
    result = run_bridge("--options", REDIS_URL="redis://mesh:hunter2-redis-password@127.0.0.1:6379/0")
    assert result.returncode == 0, result.stderr
    for name in ("mesh_bridge", "mesh_redis_url", "mesh_redis_prefix", "mesh_dataplane_key_file",
                 "mesh_allow_private_upstreams", "mesh_gateway_ports"):
        assert f"\n{name} = " in "\n" + result.stdout
    assert "hunter2" not in result.stdout + result.stderr
