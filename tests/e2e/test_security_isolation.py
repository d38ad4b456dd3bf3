"""Isolation between the gateway's parts, end to end through the real `mesh up` (issue #10, items
10–12): the bridge answers nothing without its token; stdio servers run in an empty directory of
their own, without the bridge's secrets, and as another user (``MESH_STDIO_USER``) that cannot
read the data dir; the data plane and the bridge get only the settings they need; Redis with a
password: ``mesh up``'s own, and an ACL user of the machine's Redis in ``REDIS_URL``."""

from __future__ import annotations

import base64
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx2
import pytest
import redis

from shared.envelope import generate_key
from tests.support import (
    MESH,
    ROOT,
    STDIO_SERVER,
    Gateway,
    Upstream,
    all_pids,
    call_tool_status,
    delete_prefix,
    mcp_client,
    proc_cmdline,
    proc_environ,
    unique_prefix,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

SECRET = "conn-env-" + secrets.token_hex(8)  # a stdio connection's own env value
# What a stdio child may find in its environment: the SDK's default list, and what the shell
# and Python add themselves (PWD, SHLVL; Python's C-locale coercion sets LC_CTYPE).
CHILD_BASICS = {"HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER"}
CHILD_ARTIFACTS = {"PWD", "SHLVL", "_", "LC_CTYPE"}
BRIDGE_SECRETS = {"MESH_BRIDGE_TOKEN", "MESH_DATAPLANE_KEY", "REDIS_URL", "DATABASE_URL", "ENCRYPTION_KEY",
                  "ENCRYPTION_KEY_PREVIOUS", "MESH_DATA_DIR"}
DATA_DIR_SECRETS = ("mesh.key", "dataplane.key", "session.key", "mesh.db", "bridge.token", "redis.password")


async def surroundings(gateway: Gateway, connection_id: str, key: str, paths: list[str] = ()) -> dict:
    async with mcp_client(gateway.mcp_url(connection_id), key) as client:
        result = await client.call_tool("surroundings", {"paths": list(paths)})
        assert not result.is_error, result.content
        return json.loads(result.content[0].text)


def bridged_and_ready(gateway: Gateway, connection_id: str, key: str, other_than_pid: int | None = None) -> dict:
    def ready():
        state = gateway.bridge_health().get(connection_id)
        return state if state and state["state"] == "ready" and state["pid"] != other_than_pid else None

    state = wait_for(ready, timeout=30, interval=0.1, what=f"bridged connection {connection_id} to be ready")
    wait_for(lambda: call_tool_status(gateway.mcp_url(connection_id), key, "no-such-tool")[0] != 404, timeout=5,
             what="the data plane to know the connection")
    return state


def with_credentials(url: str, username: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{username}:{password}@{host}"))


def cmdlines_holding(text: str) -> list[str]:
    return [proc_cmdline(pid).replace("\0", " ") for pid in all_pids() if text in proc_cmdline(pid)]


# -- the bridge's token ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_key(gateway):
    return gateway.create_key("isolation-tests")


@pytest.fixture(scope="module")
def stdio_conn(gateway, api_key):
    cid = gateway.add_stdio_connection("iso-stdio", STDIO_SERVER, f"MESH_TEST_SECRET={SECRET}")
    bridged_and_ready(gateway, cid, api_key)
    return cid


def test_the_bridge_answers_nothing_without_its_token(gateway, stdio_conn):
    base = f"http://127.0.0.1:{gateway.bridge_port}"
    for method, path in (("GET", "/health"), ("POST", "/health"), ("GET", "/no-such-path"),
                         ("POST", f"/bridge/{stdio_conn}/mcp")):
        for headers in ({}, {"X-Mesh-Bridge-Token": "not-the-token"}):
            answer = httpx2.request(method, base + path, headers=headers, timeout=5)
            assert answer.status_code == 401, (method, path, answer.status_code)
            assert stdio_conn not in answer.text and "iso-stdio" not in answer.text
    health = httpx2.get(base + "/health", headers={"X-Mesh-Bridge-Token": gateway.bridge_token()}, timeout=5)
    assert health.status_code == 200 and stdio_conn in health.json()["connections"]
    assert (gateway.data_dir / "bridge.token").stat().st_mode & 0o777 == 0o600


def test_another_orgs_connection_pointed_at_the_bridge_learns_nothing_of_this_org(gateway, stdio_conn):
    org_b = gateway.mesh("orgs", "create", "--name", "Org B of the isolation tests")["id"]
    key_b = gateway.mesh("keys", "create", "--name", "org-b", "--org", org_b)["key"]
    pid = gateway.bridge_health()[stdio_conn]["pid"]
    org_a = next(o["id"] for o in gateway.mesh("orgs", "list") if o["slug"] == "default")
    leaks = (stdio_conn, "iso-stdio", f'"pid": {pid}', org_a)
    for n, path in enumerate(("/health", f"/bridge/{stdio_conn}/mcp")):
        bridge_url = f"http://127.0.0.1:{gateway.bridge_port}{path}"
        # Registering it is refused (the gateway's own port), even to the operator ...
        refused = subprocess.run([MESH, "connections", "add", "--org", org_b, "--name", "sneaky", "--url", bridge_url,
                                  "--json"], env=gateway.env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "the gateway's own port" in refused.stderr
        # ... and a connection that leads there all the same (a name that resolves elsewhere now)
        # is refused by the data plane, and would be by the bridge (no token).
        sneaky = gateway.mesh("connections", "add", "--org", org_b, "--name", f"sneaky-{n}",
                              "--url", "http://8.8.8.8:9/mcp")["id"]
        gateway.move_connection(sneaky, bridge_url)
        wait_for(lambda sneaky=sneaky: call_tool_status(gateway.mcp_url(sneaky), key_b, "x")[0] != 404, timeout=5,
                 what="org B's connection to be routable")
        for method in ("tools/list", "tools/call"):
            body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": {"name": "env", "arguments": {}}}
            answer = httpx2.post(gateway.mcp_url(sneaky), json=body, timeout=10, headers={
                "Authorization": f"Bearer {key_b}", "Accept": "application/json, text/event-stream"})
            assert answer.status_code != 200, (path, method, answer.text)
            assert not [leak for leak in leaks if leak in answer.text], (path, method, answer.text)


# -- stdio children ----------------------------------------------------------------------------------


async def test_a_stdio_child_works_in_an_empty_directory_of_its_own_without_the_bridges_secrets(
        gateway, stdio_conn, api_key):
    bridge_env = proc_environ(gateway.plane_pid("bridge"))
    assert {"MESH_BRIDGE_TOKEN", "REDIS_URL"} <= set(bridge_env), "the bridge holds secrets the child must not get"
    first = await surroundings(gateway, stdio_conn, api_key)
    cwd = Path(first["cwd"])
    assert first["cwd_entries"] == [] and first["cwd_mode"] == 0o700 and first["cwd_owner"] == os.getuid()
    assert cwd != ROOT and gateway.data_dir not in cwd.parents and cwd.parent.name.startswith("mesh-bridge-")
    names = set(first["env_names"])
    assert names <= CHILD_BASICS | CHILD_ARTIFACTS | {"MESH_TEST_SECRET"}, names
    assert not names & BRIDGE_SECRETS
    async with mcp_client(gateway.mcp_url(stdio_conn), api_key) as client:
        for name in ("MESH_BRIDGE_TOKEN", "REDIS_URL"):
            assert (await client.call_tool("env", {"name": name})).content[0].text == ""
        assert (await client.call_tool("env", {"name": "MESH_TEST_SECRET"})).content[0].text == SECRET

    # A restarted child gets a fresh directory; the old one goes with the old child.
    old_pid = gateway.bridge_health()[stdio_conn]["pid"]
    os.kill(old_pid, 9)
    bridged_and_ready(gateway, stdio_conn, api_key, other_than_pid=old_pid)
    second = await surroundings(gateway, stdio_conn, api_key)
    assert second["cwd"] != first["cwd"] and second["cwd_entries"] == []
    wait_for(lambda: not cwd.exists(), timeout=5, what="the stopped child's working directory to be removed")


@dataclass
class PythonForAnotherUser:
    """A Python that another user can run, with the project's packages (the SDK) importable."""

    python: str
    env: dict[str, str] = field(default_factory=dict)

    def stdio_server(self) -> str:
        return shlex.join([self.python, str(ROOT / "tests" / "upstreams" / "stdio_server.py")])

    def env_entries(self) -> list[str]:
        return [f"{k}={v}" for k, v in self.env.items()]


def _runs_as(user: pwd.struct_passwd, python: str, env: dict[str, str]) -> bool:
    probe = [shutil.which("setpriv"), f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
             python, "-c", "import mcp.server.mcpserver"]
    return subprocess.run(probe, env={"PATH": os.environ["PATH"], **env}, cwd="/", capture_output=True,
                          timeout=60).returncode == 0


@pytest.fixture(scope="module")
def nobody():
    if os.geteuid() != 0:
        pytest.skip("running stdio servers as another user needs a gateway running as root (CI runs as root)")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    return pwd.getpwnam("nobody")


@pytest.fixture(scope="module")
def python_for_nobody(nobody):
    """This interpreter if ``nobody`` can run it; else (it lives under root's 0700 home, as with
    pyenv) a hard-linked copy of its runtime in a directory everyone may enter, with the venv's
    packages on PYTHONPATH."""
    if _runs_as(nobody, sys.executable, {}):
        yield PythonForAnotherUser(sys.executable)
        return
    home = Path(tempfile.mkdtemp(prefix="mesh-test-python-"))
    try:
        home.chmod(0o755)
        base = Path(sys.base_prefix)
        binary = Path(sys.executable).resolve()

        def link_or_copy(src, dst):
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)

        (home / "bin").mkdir()
        link_or_copy(binary, home / "bin" / binary.name)
        shutil.copytree(base / "lib", home / "lib", copy_function=link_or_copy,
                        ignore=shutil.ignore_patterns("site-packages", "test"))
        runtime = PythonForAnotherUser(str(home / "bin" / binary.name), {
            "PYTHONHOME": str(home), "LD_LIBRARY_PATH": str(home / "lib"),
            "PYTHONPATH": sysconfig.get_paths()["purelib"]})
        assert _runs_as(nobody, runtime.python, runtime.env), "nobody cannot run the copied Python runtime"
        yield runtime
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def open_parent():
    """A directory every user may enter, so that only the data dir's own permissions keep a
    child out of it (pytest's temporary directories are 0700 all the way down)."""
    path = Path(tempfile.mkdtemp(prefix="mesh-test-open-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_stdio_children_run_as_mesh_stdio_user_and_cannot_read_the_data_dir(
        open_parent, nobody, python_for_nobody):
    readable_to_all = open_parent / "readable-by-everyone"
    readable_to_all.write_text("control: the child can read what it may")
    readable_to_all.chmod(0o644)
    gateway = Gateway(open_parent, redis_url=None, env={"MESH_STDIO_USER": "nobody"}).start()
    try:
        key = gateway.create_key("as-nobody")
        cid = gateway.add_stdio_connection("as-nobody", python_for_nobody.stdio_server(),
                                           f"MESH_TEST_SECRET={SECRET}", *python_for_nobody.env_entries())
        state = bridged_and_ready(gateway, cid, key)
        data_dir = gateway.data_dir
        guarded = [str(data_dir / name) for name in DATA_DIR_SECRETS]
        assert all(Path(p).exists() for p in guarded), "every file the child must not read is there"
        planes = [f"/proc/{gateway.plane_pid(p)}/environ" for p in ("bridge", "data plane")]
        seen = await surroundings(gateway, cid, key, [*guarded, str(data_dir), *planes, str(readable_to_all)])

        assert (seen["uid"], seen["gid"]) == (nobody.pw_uid, nobody.pw_gid)
        assert set(seen["groups"]) <= {nobody.pw_gid}, "no supplementary group of the gateway"
        assert seen["cwd_entries"] == [] and seen["cwd_mode"] == 0o700 and seen["cwd_owner"] == nobody.pw_uid
        assert data_dir not in Path(seen["cwd"]).parents
        assert seen["readable"].pop(str(readable_to_all)) is True
        assert not [path for path, ok in seen["readable"].items() if ok], seen["readable"]
        names = set(seen["env_names"])
        assert not names & BRIDGE_SECRETS
        assert names <= CHILD_BASICS | CHILD_ARTIFACTS | {"MESH_TEST_SECRET", *python_for_nobody.env}, names
        async with mcp_client(gateway.mcp_url(cid), key) as client:
            assert (await client.call_tool("env", {"name": "HOME"})).content[0].text == nobody.pw_dir
            assert (await client.call_tool("env", {"name": "USER"})).content[0].text == "nobody"
            assert int((await client.call_tool("whoami", {})).content[0].text) == state["pid"]
    finally:
        assert gateway.stop() == 0
    assert not Path(seen["cwd"]).exists()


def test_a_stdio_user_that_does_not_exist_stops_mesh_up_with_a_clear_message(tmp_path, redis_url):
    gateway = Gateway(tmp_path, redis_url, env={"MESH_STDIO_USER": "no-such-user-of-mesh-tests"})
    up = subprocess.Popen([MESH, "up"], env=gateway.env, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = up.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        up.send_signal(signal.SIGINT)  # mesh up stops its children (each in a session of its own)
        output, _ = up.communicate(timeout=30)
        pytest.fail(f"mesh up kept running with an unusable MESH_STDIO_USER:\n{output}")
    finally:
        delete_prefix(redis_url, gateway.prefix)
    assert up.returncode != 0
    assert "MESH_STDIO_USER=no-such-user-of-mesh-tests: no such user" in output
    assert "Traceback" not in output and "MCP Mesh is up" not in output


def test_a_bridge_that_is_not_root_refuses_to_run_stdio_servers_as_another_user(nobody, python_for_nobody):
    env = {"PATH": os.environ["PATH"], **python_for_nobody.env, "MESH_BRIDGE_TOKEN": "t" * 43,
           "MESH_STDIO_USER": "root", "REDIS_URL": "redis://127.0.0.1:1/0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]])}
    result = subprocess.run([shutil.which("setpriv"), f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}",
                             "--clear-groups", python_for_nobody.python, "-m", "dataplane_addon.bridge",
                             "--set", "mesh_bridge=127.0.0.1:1"], env=env, cwd="/", capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert (f"MESH_STDIO_USER=root: the bridge runs as uid {nobody.pw_uid}, not root, so it cannot start stdio "
            "servers as root") in result.stderr
    assert "Traceback" not in result.stderr


# -- what each process receives ----------------------------------------------------------------------


PLANE_ENV = {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
             "PYTHONPATH", "REDIS_URL", "MESH_BRIDGE_TOKEN", "MESH_DATAPLANE_KEY"}


def test_the_data_plane_and_the_bridge_get_only_the_settings_they_need(tmp_path, redis_url):
    master = base64.b64encode(generate_key()).decode()
    operator_secret = "operator-only-" + secrets.token_hex(8)
    data_dir = tmp_path / "gateway-data"
    gateway = Gateway(tmp_path, redis_url, env={
        "ENCRYPTION_KEY": master, "DATABASE_URL": f"sqlite:///{data_dir / 'mesh.db'}",
        "MESH_TEST_OPERATOR_SECRET": operator_secret, "MESH_STDIO_USER": pwd.getpwuid(os.getuid()).pw_name,
    }).start()
    try:
        allowed_files = {"data plane": {"dataplane.key", "session.key"}, "bridge": {"dataplane.key"}}
        for plane, files in allowed_files.items():
            pid = gateway.plane_pid(plane)
            env = proc_environ(pid)
            expected = PLANE_ENV | ({"MESH_STDIO_USER"} if plane == "bridge" else {"MESH_METRICS_TOKEN"})
            assert set(env) <= expected, f"the {plane} got {sorted(set(env) - expected)}"
            assert env["REDIS_URL"] == redis_url and env["MESH_BRIDGE_TOKEN"] == gateway.bridge_token()
            raw = Path(f"/proc/{pid}/environ").read_bytes()
            for never in (master, operator_secret, str(data_dir / "mesh.db")):
                assert never.encode() not in raw, f"the {plane}'s environment holds {never[:12]}…"
            argv = proc_cmdline(pid).split("\0")
            assert not any(a.startswith("mesh_redis_url") or redis_url in a for a in argv)
            given = [a.partition("=")[2] or a for a in argv]  # options come as --set name=value
            under_data_dir = {Path(a).name for a in given if a.startswith(str(data_dir))}
            assert under_data_dir == files, f"the {plane} was given {under_data_dir} of the data dir"
        assert "MESH_STDIO_USER" in proc_environ(gateway.plane_pid("bridge"))
    finally:
        assert gateway.stop() == 0


# -- Redis with a password -----------------------------------------------------------------------------


async def test_mesh_up_without_redis_url_runs_its_own_redis_behind_a_password(tmp_path, redis_url):
    upstream = Upstream(tmp_path).start()
    gateway = Gateway(tmp_path, redis_url=None)
    socket_path = gateway.data_dir / "redis.sock"
    try:
        gateway.start()
        password = (gateway.data_dir / "redis.password").read_text().strip()
        assert len(password) >= 32 and (gateway.data_dir / "redis.password").stat().st_mode & 0o777 == 0o600
        assert stat.S_ISSOCK(socket_path.stat().st_mode) and socket_path.stat().st_mode & 0o777 == 0o700

        with socket.socket(socket.AF_UNIX) as raw:  # what Redis answers, before any client library's reading
            raw.connect(str(socket_path))
            raw.sendall(b"*1\r\n$4\r\nPING\r\n")
            assert raw.recv(200).startswith(b"-NOAUTH ")
        anonymous = redis.Redis(unix_socket_path=str(socket_path))
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        anonymous.close()
        own = redis.Redis(unix_socket_path=str(socket_path), password=password)
        assert own.config_get("port") == {"port": "0"}, "no TCP port: it cannot meet the Redis on 6379"

        conn = gateway.add_connection("echo", upstream.url)
        key = gateway.create_key("own-redis")
        assert not [out for out in gateway.cli_output if "could not publish" in out], gateway.cli_output
        wait_for(lambda: call_tool_status(gateway.mcp_url(conn), key, "echo", {"text": "x"})[0] == 200, timeout=5,
                 what="the connection to route")
        async with mcp_client(gateway.mcp_url(conn), key) as client:
            assert (await client.call_tool("echo", {"text": "behind a password"})).content[0].text == \
                "behind a password"
        assert own.hlen(f"{gateway.prefix}:snapshots") >= 1
        own.close()
        machine = redis.Redis.from_url(redis_url)
        assert not list(machine.scan_iter(f"{gateway.prefix}:*")), "the machine's Redis was used"
        machine.close()

        assert cmdlines_holding(password) == []
        for text in (gateway.log(), json.dumps(gateway.health()), "\n".join(gateway.cli_output)):
            assert password not in text
        assert gateway.stop() == 0
        assert not socket_path.exists() and not cmdlines_holding(str(socket_path)), "its redis-server was left"

        # The next run reuses the password, and what was published is published again.
        again = Gateway(tmp_path, redis_url=None).start()
        try:
            assert (gateway.data_dir / "redis.password").read_text().strip() == password
            wait_for(lambda: call_tool_status(again.mcp_url(conn), key, "echo", {"text": "y"})[0] == 200, timeout=10,
                     what="the connection to work after a restart")
        finally:
            assert again.stop() == 0
    finally:
        gateway.stop()
        upstream.stop()
        assert not cmdlines_holding(str(socket_path))


@pytest.fixture
def acl_user(redis_url):
    """A user of the machine's Redis limited to one key prefix and its channels, as the README
    tells operators to create one; deleted afterwards with every key under the prefix."""
    prefix = unique_prefix()
    username, password = f"{prefix}-gateway", secrets.token_hex(16)
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command("ACL", "SETUSER", username, "reset", "on", f">{password}", f"~{prefix}:*",
                          f"&{prefix}:*", "-@all", "+@read", "+@write", "+@pubsub", "+@scripting", "+@connection",
                          "-@dangerous")
    try:
        yield prefix, username, password, with_credentials(redis_url, username, password)
    finally:
        admin.execute_command("ACL", "DELUSER", username)
        delete_prefix(redis_url, prefix)
        admin.close()


async def test_a_gateway_on_an_acl_user_of_redis_works_end_to_end(tmp_path, redis_url, acl_user):
    prefix, username, password, url = acl_user
    upstream = Upstream(tmp_path).start()
    gateway = Gateway(tmp_path, redis_url=url, prefix=prefix).start()
    try:
        key = gateway.create_key("acl")
        http_conn = gateway.add_connection("echo", upstream.url)
        stdio = gateway.add_stdio_connection("acl-stdio", STDIO_SERVER)
        bridged_and_ready(gateway, stdio, key)
        for conn, arguments in ((http_conn, {"text": "acl http"}), (stdio, {"text": "acl stdio"})):
            wait_for(lambda conn=conn: call_tool_status(gateway.mcp_url(conn), key, "echo", arguments)[0] == 200,
                     timeout=5, what="the connection to route")
            async with mcp_client(gateway.mcp_url(conn), key) as client:
                assert (await client.call_tool("echo", arguments)).content[0].text == arguments["text"]
        # The data plane notes the key's use in Redis; the control plane reads it back.
        wait_for(lambda: next(k for k in gateway.mesh("keys", "list") if k["name"] == "acl")["last_used_at"],
                 timeout=15, interval=0.5, what="the key's last use to reach the listing")
        # The data plane and the bridge report what they installed; `mesh status` reads it back.
        wait_for(lambda: sorted(i["kind"] for i in gateway.mesh("status")["instances"]) == ["bridge", "dataplane"],
                 timeout=15, interval=0.5, what="the data plane's and the bridge's reports")

        admin = redis.Redis.from_url(redis_url)
        try:
            denied = [entry for entry in admin.acl_log(count=1000) if entry.get("username") == username]
            assert denied == [], f"the gateway needed more than the documented ACL: {denied}"
            assert password.encode() not in json.dumps(
                {k.decode(): v.decode() for k, v in admin.hgetall(f"{prefix}:snapshots").items()}).encode()
        finally:
            admin.close()
        limited = redis.Redis.from_url(url)
        with pytest.raises(redis.exceptions.NoPermissionError):
            limited.get("not-the-gateways-key")
        limited.close()
        assert cmdlines_holding(password) == []
        for text in (gateway.log(), json.dumps(gateway.health()), "\n".join(gateway.cli_output)):
            assert password not in text
    finally:
        assert gateway.stop() == 0
        upstream.stop()
