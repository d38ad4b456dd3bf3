"""What a stdio child is given, checked on a real child (the SDK-built stdio server) without the
rest of the gateway: its environment never carries the bridge's, it works in an empty directory
of its own that goes with it; and which ``MESH_STDIO_USER`` values the bridge accepts."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import sys

import anyio
import pytest

from dataplane_addon.bridge.child_isolation import ChildIsolation, StdioUserError, resolve_stdio_user
from dataplane_addon.bridge.supervisor import UpstreamSupervisor
from dataplane_addon.bridge.upstream_session import UpstreamSpec
from tests.support import ROOT

STDIO_SERVER = str(ROOT / "tests" / "upstreams" / "stdio_server.py")
BRIDGE_SECRETS = {"MESH_BRIDGE_TOKEN": "bridge-token-value", "MESH_DATAPLANE_KEY": "dataplane-key-value",
                  "REDIS_URL": "redis://:pw@127.0.0.1:6379/0", "DATABASE_URL": "sqlite:///x.db"}


@pytest.mark.anyio
async def test_a_child_gets_the_sdk_defaults_and_its_own_env_in_an_empty_directory_that_goes_with_it(
        tmp_path, monkeypatch):
    for name, value in BRIDGE_SECRETS.items():
        monkeypatch.setenv(name, value)
    spec = UpstreamSpec("stdio", "py", command=sys.executable, args=(STDIO_SERVER,), env=(("OWN", "own-value"),))
    supervisor = UpstreamSupervisor("conn_py", spec, ChildIsolation.prepare(tmp_path, None))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(supervisor.run)
        session = await supervisor.session()
        seen = json.loads((await session.call_tool("surroundings", {"paths": []})).content[0].text)
        own = (await session.call_tool("env", {"name": "OWN"})).content[0].text
        tasks.cancel_scope.cancel()
    assert own == "own-value"
    assert set(seen["env_names"]) <= {"HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "OWN",
                                      "PWD", "SHLVL", "_", "LC_CTYPE"}, seen["env_names"]
    assert seen["cwd_entries"] == [] and seen["cwd_mode"] == 0o700
    assert os.path.dirname(seen["cwd"]) == str(tmp_path)
    assert not os.path.exists(seen["cwd"]), "the working directory outlived its child"
    assert oct(tmp_path.stat().st_mode & 0o777) == oct(0o700)


def test_the_working_directory_is_fresh_each_time_and_removed_with_what_was_left_in_it(tmp_path):
    isolation = ChildIsolation.prepare(tmp_path, None)
    with isolation.working_directory() as first:
        assert list(first.iterdir()) == [] and first.stat().st_mode & 0o777 == 0o700
        (first / "nested").mkdir()
        (first / "nested" / "left-behind").write_text("x")
        (first / "nested").chmod(0o500)  # even a directory its owner may not write to
        with isolation.working_directory() as second:
            assert second != first
    assert not first.exists() and not second.exists()


def test_mesh_stdio_user_unset_or_naming_the_bridges_own_user_changes_nothing():
    me = pwd.getpwuid(os.geteuid())
    for spec in (None, "", "  ", me.pw_name, str(me.pw_uid)):
        assert resolve_stdio_user(spec) is None, spec


def test_mesh_stdio_user_must_exist():
    with pytest.raises(StdioUserError, match="MESH_STDIO_USER=no-such-user-here: no such user"):
        resolve_stdio_user("no-such-user-here", euid=0)
    with pytest.raises(StdioUserError, match="no such user"):
        resolve_stdio_user("4294967294000", euid=0)


def test_a_bridge_that_is_not_root_refuses_another_user_rather_than_running_children_as_itself():
    nobody = pwd.getpwnam("nobody")
    with pytest.raises(StdioUserError) as refused:
        resolve_stdio_user("root", euid=nobody.pw_uid)
    assert f"runs as uid {nobody.pw_uid}, not root" in str(refused.value)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
def test_another_user_is_switched_to_with_its_own_group_no_supplementary_groups_and_no_new_privileges():
    nobody = pwd.getpwnam("nobody")
    for spec in ("nobody", str(nobody.pw_uid)):
        user = resolve_stdio_user(spec, euid=0)
        assert (user.uid, user.gid, user.name) == (nobody.pw_uid, nobody.pw_gid, "nobody")
        prefix = user.command_prefix()
        assert prefix[1:] == [f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
                              "--no-new-privs", "--"]
    isolation = ChildIsolation(ROOT, user)
    # The user's identity, then the connection's own env, which wins.
    assert isolation.environment({"HOME": "/srv/mine", "X": "1"}) == {
        "HOME": "/srv/mine", "USER": "nobody", "LOGNAME": "nobody", "SHELL": nobody.pw_shell, "X": "1"}
