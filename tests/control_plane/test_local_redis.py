"""The Redis `mesh up` runs itself: its password file, the URL every process builds from the data
dir, and a real redis-server started with the configuration on its stdin."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import redis

from control_plane import local_redis
from control_plane.settings import Settings
from tests.support import wait_for


def test_the_password_is_generated_once_readable_by_the_owner_only_and_reused(tmp_path):
    assert local_redis.read_password(tmp_path) is None
    first = local_redis.ensure_password(tmp_path)
    assert len(first) == 64 and (tmp_path / "redis.password").stat().st_mode & 0o777 == 0o600
    assert local_redis.ensure_password(tmp_path) == first == local_redis.read_password(tmp_path)


def test_an_empty_password_file_is_refused_not_used(tmp_path):
    (tmp_path / "redis.password").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        local_redis.ensure_password(tmp_path)


def test_without_redis_url_every_process_reaches_the_data_dirs_redis_with_its_password(tmp_path):
    local_redis.ensure_password(tmp_path)
    settings = Settings.from_env(tmp_path, env={})
    assert not settings.redis_url_configured
    parsed = redis.connection.parse_url(settings.redis_url)
    assert parsed["path"] == str(tmp_path / "redis.sock")
    assert parsed["password"] == local_redis.read_password(tmp_path)
    assert local_redis.read_password(tmp_path) not in repr(settings)
    configured = Settings.from_env(tmp_path, env={"REDIS_URL": "rediss://mesh:pw@redis.example:6380/2"})
    assert configured.redis_url_configured and configured.redis_url == "rediss://mesh:pw@redis.example:6380/2"
    assert "pw@" not in repr(configured)


def test_a_data_dir_too_deep_for_a_unix_socket_is_refused_with_advice():
    with pytest.raises(ValueError, match="use a shorter --data-dir, or set REDIS_URL"):
        local_redis.check_socket_path(Path("/tmp") / ("d" * 120))
    local_redis.check_socket_path(Path("/tmp/short"))


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_redis_server_reads_its_password_from_stdin_and_listens_on_the_socket_only():
    # A path and a password with characters the configuration parser and URLs treat specially.
    with tempfile.TemporaryDirectory(prefix="mesh redis \"q\" %#? ") as directory:
        data_dir = Path(directory)
        password = 'pa ss"wo\\rd@:/#x'
        server = subprocess.Popen([shutil.which("redis-server"), "-"], stdin=subprocess.PIPE,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            server.stdin.write(local_redis.server_config(data_dir, password).encode())
            server.stdin.close()
            wait_for(lambda: local_redis.socket_path(data_dir).exists(), timeout=10, what="the socket")
            assert password not in Path(f"/proc/{server.pid}/cmdline").read_text()
            client = redis.Redis.from_url(local_redis.url(data_dir, password))
            assert client.ping() and client.config_get("port") == {"port": "0"}
            assert client.config_get("unixsocketperm") == {"unixsocketperm": "700"}
            client.close()
            with pytest.raises(redis.AuthenticationError):
                redis.Redis.from_url(local_redis.url(data_dir, "wrong")).ping()
        finally:
            server.terminate()
            server.wait(10)
