"""stdio and legacy-SSE connections in the control plane, on each database: what is stored, what
the snapshot carries to the bridge, who may add them, and what listings never show."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from control_plane.cli import main
import sqlalchemy as sa

from control_plane.models import Connection, ConnectionSecret, db
from control_plane.services import bridged_connections as bridged
from control_plane.services import orgs
from control_plane.services.actors import OPERATOR, member_actor
from control_plane.services.errors import Forbidden, InvalidInput
from control_plane.services.secrets import parse_env

SECRET = "sk-live-0123456789abcdef"


@pytest.fixture
def first(app):
    return orgs.bootstrap_first_run()


@pytest.fixture
def mesh(app, settings, first):
    runner = CliRunner()
    env = {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
           "MESH_REDIS_PREFIX": settings.redis_prefix}

    def run(*args: str, ok: bool = True):
        result = runner.invoke(main, ["--data-dir", str(settings.data_dir), *args], env=env)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return run


def test_a_stdio_connection_stores_its_command_and_reaches_the_snapshot(app, first, published):
    conn = bridged.create_stdio_connection(first.org, "everything", "npx",
                                           ["-y", "@modelcontextprotocol/server-everything"], {"env:API_KEY": SECRET}, actor=OPERATOR)
    db.session.expire_all()
    stored = db.session.get(Connection, conn.id)
    assert (stored.transport, stored.command, stored.args, stored.url) == (
        "stdio", "npx", ["-y", "@modelcontextprotocol/server-everything"], "")
    secret_row = db.session.scalar(sa.select(ConnectionSecret).where(ConnectionSecret.connection_id == conn.id))
    assert secret_row.field == "env:API_KEY" and SECRET not in secret_row.envelope  # in the vault, sealed
    route = published(first.org.id).connections[conn.id]
    assert (route.transport, route.command, route.args, sorted(route.credentials)) == (
        "stdio", "npx", ["-y", "@modelcontextprotocol/server-everything"], ["env:API_KEY"])
    assert SECRET not in json.dumps(route.credentials)  # delivered sealed for the data plane


def test_an_sse_connection_is_a_checked_url_with_headers(app, first, published):
    conn = bridged.create_sse_connection(first.org, "legacy", "http://127.0.0.1:8931/sse", {"header:X-Key": SECRET}, actor=OPERATOR)
    route = published(first.org.id).connections[conn.id]
    assert (route.transport, route.url, sorted(route.credentials)) == ("sse", "http://127.0.0.1:8931/sse", ["header:X-Key"])
    assert SECRET not in json.dumps(route.credentials)
    with pytest.raises(InvalidInput):
        bridged.create_sse_connection(first.org, "metadata", "http://169.254.169.254/sse", actor=OPERATOR)


def test_only_the_operator_may_add_a_command_that_runs_on_the_gateway_host(app, first):
    admin = orgs.create_user("ada@example.com", "a long enough password")
    orgs.add_member(first.org, admin, "admin", actor=OPERATOR)
    as_admin = member_actor(first.org, admin.id)
    with pytest.raises(Forbidden) as refused:
        bridged.create_stdio_connection(first.org, "shell", "sh", ["-c", "id"], actor=as_admin)
    assert "operator" in str(refused.value)
    assert bridged.create_sse_connection(first.org, "legacy", "http://8.8.8.8:8931/sse", actor=as_admin).id
    with pytest.raises(InvalidInput, match="loopback or private"):  # the operator's own network is the operator's
        bridged.create_sse_connection(first.org, "local", "http://127.0.0.1:8931/sse", actor=as_admin)


@pytest.mark.parametrize("command, args, env", [
    ("", [], {}), ("x" * 2000, [], {}), ("npx", ["a\0b"], {}), ("npx", [], {"1BAD": "v"}),
    ("npx", [], {"OK": "nul\0"}), ("npx", [str(i) for i in range(101)], {}),
])
def test_stdio_commands_that_cannot_be_run_are_refused(app, first, command, args, env):
    with pytest.raises(InvalidInput):
        bridged.create_stdio_connection(first.org, "bad", command, args, {f"env:{k}": v for k, v in env.items()}, actor=OPERATOR)


def test_errors_about_env_name_the_variable_never_the_value(app, first):
    with pytest.raises(InvalidInput) as refused:
        parse_env(f"not a name={SECRET}")
    assert SECRET not in str(refused.value)
    assert parse_env(f"API_KEY={SECRET}=x") == ("API_KEY", f"{SECRET}=x")


def test_command_lines_split_like_sh_without_running_one():
    assert bridged.parse_command_line("uvx mcp-server-fetch --user-agent 'Mesh Bot/1' $HOME") == (
        "uvx", ["mcp-server-fetch", "--user-agent", "Mesh Bot/1", "$HOME"])
    for bad in ("", "   ", "npx 'unclosed"):
        with pytest.raises(InvalidInput):
            bridged.parse_command_line(bad)


def test_cli_adds_a_stdio_connection_and_lists_it_with_masked_env(mesh):
    added = json.loads(mesh("connections", "add", "--name", "everything", "--stdio",
                            "npx -y @modelcontextprotocol/server-everything", "--env", f"API_KEY={SECRET}",
                            "--json").output)
    assert (added["transport"], added["command"], added["args"]) == (
        "stdio", "npx", ["-y", "@modelcontextprotocol/server-everything"])
    assert "env:API_KEY" in added["credentials"] and SECRET not in json.dumps(added)
    listed = mesh("connections", "list").output
    assert "stdio" in listed and "npx -y @modelcontextprotocol/server-everything" in listed
    assert SECRET not in listed and SECRET not in mesh("connections", "list", "--json").output


def test_cli_adds_an_sse_connection(mesh):
    added = json.loads(mesh("connections", "add", "--name", "legacy", "--sse-url", "http://127.0.0.1:8931/sse",
                            "--header", f"X-Key: {SECRET}", "--json").output)
    assert (added["transport"], added["url"]) == ("sse", "http://127.0.0.1:8931/sse")
    assert SECRET not in json.dumps(added)


@pytest.mark.parametrize("args, complaint", [
    ((), "exactly one of"),
    (("--url", "http://a/mcp", "--stdio", "npx x"), "exactly one of"),
    (("--url", "http://a/mcp", "--env", "A=b"), "environment values (--env) are for stdio"),
    (("--stdio", "npx x", "--header", "X-Key: v"), "not headers"),
])
def test_cli_says_which_target_flags_go_together(mesh, args, complaint):
    result = mesh("connections", "add", "--name", "x", *args, ok=False)
    assert result.exit_code != 0 and complaint in result.output and "Traceback" not in result.output
