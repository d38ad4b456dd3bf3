"""`mesh up` hands the data plane and the bridge their settings as options (``--set name=value``)
through one table (``settings.PLANE_OPTIONS``): each reaches the option its plane declared, an
unset setting leaves the option's one default in place, and no secret is on a command line."""

from __future__ import annotations

import pytest

from control_plane.runner import GatewayRunner
from control_plane.settings import BRIDGE, DATA_PLANE, PLANE_OPTIONS, Settings
from dataplane_addon.__main__ import build_master, configure
from dataplane_addon.bridge.__main__ import build_options
from dataplane_addon.bridge.__main__ import parse_args as parse_bridge_args
from dataplane_addon.request_body import RequestBodyGuard
from dataplane_addon.upstream_timeout import UpstreamTimeout
from shared.envelope import encode_key, generate_key

pytestmark = pytest.mark.anyio

REDIS_PASSWORD = "redis-password-of-the-runner-test"
SET = {
    "PORT": "4100", "HOST": "127.0.0.1", "MESH_REDIS_PREFIX": "runner-test",
    "REDIS_URL": f"redis://mesh:{REDIS_PASSWORD}@127.0.0.1:6379/0",
    "MESH_MAX_REQUEST_BODY": "1k", "MESH_UPSTREAM_TIMEOUT": "2.5", "MESH_BODY_READ_TIMEOUT": "7",
    "MESH_ALLOW_PRIVATE_UPSTREAMS": "10.0.0.0/8", "MESH_METRICS_LISTEN": "127.0.0.1:4199",
}


@pytest.fixture(autouse=True)
def no_key_in_the_environment(monkeypatch):
    monkeypatch.delenv("MESH_DATAPLANE_KEY", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)


def runner_for(tmp_path, env: dict) -> GatewayRunner:
    settings = Settings.from_env(tmp_path, env=env)
    settings.dataplane_key_file.write_text(encode_key(generate_key()) + "\n")  # as `mesh up` makes it
    return GatewayRunner(settings)


def options_given(argv: list[str]) -> dict[str, str]:
    assert argv[1:2] == ["-m"] and all(flag == "--set" for flag in argv[3::2]), argv
    return dict(spec.partition("=")[::2] for spec in argv[4::2])


async def test_every_option_in_the_table_is_declared_by_each_plane_it_is_given_to():
    declared = {DATA_PLANE: set(build_master().options.keys()), BRIDGE: set(build_options().dump_dicts())}
    for option, _attribute, planes in PLANE_OPTIONS:
        for plane in planes:
            assert option in declared[plane], f"the {plane} declares no option {option}"


async def test_the_data_plane_gets_each_setting_as_the_option_its_addon_declared(tmp_path):
    runner = runner_for(tmp_path, SET)
    settings = runner.settings
    argv = runner.plane_argv(DATA_PLANE)
    assert argv[:3] == [argv[0], "-m", "dataplane_addon"]
    assert not any(REDIS_PASSWORD in arg or "redis_url" in arg for arg in argv)
    master = build_master()
    configure(master, argv[3:])
    for option, attribute, planes in PLANE_OPTIONS:
        if DATA_PLANE in planes:
            assert str(getattr(master.options, option)) == str(getattr(settings, attribute)), option
    chain = next(addon for addon in master.addons.chain if hasattr(addon, "members"))
    assert chain.member(RequestBodyGuard).max_body == 1024 and chain.member(UpstreamTimeout).seconds == 2.5
    assert settings.session_key_file.exists()  # made before the data plane is pointed at it


def test_the_bridge_gets_the_settings_it_shares_under_the_same_options(tmp_path):
    runner = runner_for(tmp_path, SET)
    settings = runner.settings
    argv = runner.plane_argv(BRIDGE)
    assert argv[:3] == [argv[0], "-m", "dataplane_addon.bridge"]
    assert not any(REDIS_PASSWORD in arg for arg in argv)
    config = parse_bridge_args(argv[3:])
    assert config.port == settings.bridge_port == 4102
    assert config.keys.prefix == "runner-test"
    assert config.rules == settings.address_rules()  # the same upstream rules as the data plane's
    assert config.keyring is not None


async def test_a_setting_left_unset_leaves_the_options_one_default(tmp_path):
    runner = runner_for(tmp_path, {"PORT": "4100"})
    given = options_given(runner.plane_argv(DATA_PLANE))
    for option in ("mesh_max_request_body", "mesh_upstream_timeout", "mesh_body_read_timeout",
                   "mesh_allow_private_upstreams", "mesh_metrics_listen"):
        assert option not in given
    master = build_master()
    configure(master, runner.plane_argv(DATA_PLANE)[3:])
    for option in ("mesh_max_request_body", "mesh_upstream_timeout", "mesh_body_read_timeout"):
        assert getattr(master.options, option) == master.options.default(option)


def test_with_the_key_in_the_environment_no_key_file_is_given(tmp_path):
    runner = runner_for(tmp_path, {"PORT": "4100", "MESH_DATAPLANE_KEY": encode_key(generate_key())})
    for plane in (DATA_PLANE, BRIDGE):
        argv = runner.plane_argv(plane)
        assert "mesh_dataplane_key_file" not in options_given(argv)
        assert not any(runner.settings.dataplane_key in arg for arg in argv)
