"""The `mesh` command-line tool, on each database: the same service layer as everything else."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from control_plane.cli import main
from control_plane.services import orgs
from shared.apikeys import hash_key
from shared.bus import BusKeys
from tests.support import MESH, free_port


@pytest.fixture
def mesh(app, settings):
    runner = CliRunner()
    env = {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
           "MESH_REDIS_PREFIX": settings.redis_prefix}

    def run(*args: str, ok: bool = True, input: str | None = None):
        result = runner.invoke(main, ["--data-dir", str(settings.data_dir), *args], env=env, input=input)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    orgs.bootstrap_first_run()
    return run


def test_connections_add_prints_the_id_and_list_shows_it(mesh):
    added = mesh("connections", "add", "--name", "docs", "--url", "http://127.0.0.1:8000/mcp")
    connection_id = added.output.strip()
    assert connection_id.startswith("conn_")
    listed = json.loads(mesh("connections", "list", "--json").output)
    assert [c["id"] for c in listed] == [connection_id]
    assert listed[0]["url"] == "http://127.0.0.1:8000/mcp" and listed[0]["status"] == "active"


def test_header_values_are_never_printed_back(mesh):
    added = json.loads(mesh("connections", "add", "--name", "api", "--url", "https://example.com/mcp",
                            "--header", "X-Api-Key: sk-live-1234567890abcdef", "--json").output)
    assert "sk-live-1234567890abcdef" not in json.dumps(added)
    assert "sk-live-1234567890abcdef" not in mesh("connections", "list", "--json").output


def test_keys_create_prints_a_key_that_is_published_as_a_hash(mesh, redis_client, bus_prefix, published):
    created = json.loads(mesh("keys", "create", "--name", "laptop", "--json").output)
    assert created["key"].startswith(created["prefix"] + "_")
    snapshot = published(created["org_id"])
    assert snapshot.api_keys[hash_key(created["key"])].key_id == created["id"]
    assert created["key"] not in redis_client.hget(BusKeys(bus_prefix).snapshots, created["org_id"]).decode()


def test_bad_input_is_a_clear_error_not_a_traceback(mesh):
    result = mesh("connections", "add", "--name", "x", "--url", "http://169.254.169.254/", ok=False)
    assert result.exit_code != 0 and "not allowed" in result.output and "Traceback" not in result.output
    result = mesh("connections", "add", "--name", "x", "--url", "http://a/mcp", "--header", "no-colon", ok=False)
    assert result.exit_code != 0 and "Name: value" in result.output
    result = mesh("keys", "create", "--name", "x", "--org", "nope", ok=False)
    assert result.exit_code != 0 and "no organization" in result.output


def test_commands_refuse_an_unmigrated_database(tmp_path):
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "connections", "list"],
                                env={"DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"})
    assert result.exit_code != 0 and "mesh migrate" in result.output


# -- every management tool has its CLI twin (issue #11, item 12) -------------------------------

TWINS = {
    "ORGANIZATION_CREATE": "orgs create", "ORGANIZATION_LIST": "orgs list", "ORGANIZATION_GET": "orgs get",
    "ORGANIZATION_UPDATE": "orgs update", "ORGANIZATION_DELETE": "orgs delete",
    "ORGANIZATION_MEMBER_ADD": "members invite", "ORGANIZATION_MEMBER_REMOVE": "members remove",
    "ORGANIZATION_MEMBER_LIST": "members list", "ORGANIZATION_MEMBER_UPDATE_ROLE": "members set-role",
    "COLLECTION_CONNECTIONS_CREATE": "connections add", "COLLECTION_CONNECTIONS_LIST": "connections list",
    "COLLECTION_CONNECTIONS_GET": "connections get", "COLLECTION_CONNECTIONS_UPDATE": "connections update",
    "COLLECTION_CONNECTIONS_DELETE": "connections delete", "CONNECTION_TEST": "connections test",
    "CONNECTION_CONFIGURE": "connections set-secret",
    "ROLE_CREATE": "roles create", "ROLE_LIST": "roles list", "ROLE_UPDATE": "roles update",
    "ROLE_DELETE": "roles delete",
    "API_KEY_CREATE": "keys create", "API_KEY_LIST": "keys list", "API_KEY_REVOKE": "keys revoke",
    "GATEWAY_STATUS": "status",
}


def test_every_management_tool_has_a_cli_twin():
    from control_plane.management.tools import TOOLS

    assert set(TWINS) == set(TOOLS), "a new tool needs its `mesh` command (and a line here)"
    for tool, command in TWINS.items():
        group, *name = command.split()
        assert group in main.commands, f"{tool}: no `mesh {command}`"
        if name:
            assert name[0] in main.commands[group].commands, f"{tool}: no `mesh {command}`"


def test_connections_get_update_delete_by_name(mesh):
    connection_id = mesh("connections", "add", "--name", "docs", "--url", "http://127.0.0.1:8000/mcp").output.strip()
    shown = json.loads(mesh("connections", "get", "docs", "--json").output)
    assert (shown["id"], shown["url"], shown["health"]) == (connection_id, "http://127.0.0.1:8000/mcp", None)
    updated = json.loads(mesh("connections", "update", "docs", "--name", "manuals", "--status", "inactive",
                              "--json").output)
    assert (updated["name"], updated["status"], updated["credentials_dropped"]) == ("manuals", "inactive", [])
    line = mesh("connections", "list").output
    assert connection_id in line and "inactive" in line and "manuals" in line
    assert mesh("connections", "delete", "manuals").output.strip() == f"deleted {connection_id}"
    assert json.loads(mesh("connections", "list", "--json").output) == []
    result = mesh("connections", "get", "manuals", ok=False)
    assert result.exit_code != 0 and "no connection 'manuals'" in result.output


def test_a_connection_is_found_by_its_name_in_any_letter_case_as_names_are_unique_so(mesh):
    connection_id = mesh("connections", "add", "--name", "MyAPI", "--url", "http://127.0.0.1:8000/mcp").output.strip()
    assert json.loads(mesh("connections", "get", "myapi", "--json").output)["id"] == connection_id
    assert json.loads(mesh("connections", "get", connection_id, "--json").output)["name"] == "MyAPI"
    result = mesh("connections", "add", "--name", "myapi", "--url", "http://127.0.0.1:8001/mcp", ok=False)
    assert result.exit_code != 0 and "already has a connection named 'myapi'" in result.output


def test_connections_test_reports_a_failure_with_exit_status_1(mesh):
    mesh("connections", "add", "--name", "down", "--url", f"http://127.0.0.1:{free_port()}/mcp")
    result = mesh("connections", "test", "down", ok=False)
    assert result.exit_code == 1 and result.output.startswith("failed: connection refused")
    assert "Traceback" not in result.output
    assert json.loads(mesh("connections", "get", "down", "--json").output)["test_status"] == "failed"


def test_users_list_shows_every_account(mesh):
    mesh("users", "create", "--email", "kim@example.com", "--password-stdin", input="a long enough password\n")
    listed = json.loads(mesh("users", "list", "--json").output)
    assert [u["email"] for u in listed] == ["admin@localhost", "kim@example.com"]
    assert "password" not in json.dumps(listed)
    assert "kim@example.com" in mesh("users", "list").output


def test_members_list_shows_role_names_not_ids(mesh):
    role_id = mesh("roles", "create", "--name", "readers", "--permissions",
                   '{"tools": {"*": ["read_*"]}}').output.strip()
    mesh("users", "create", "--email", "kim@example.com", "--password-stdin", input="a long enough password\n")
    mesh("members", "add", "--email", "kim@example.com", "--role", "readers")
    text = mesh("members", "list").output
    assert "kim@example.com" in text and "readers" in text and role_id not in text
    kim = next(m for m in json.loads(mesh("members", "list", "--json").output) if m["email"] == "kim@example.com")
    assert (kim["role"], kim["role_id"]) == ("readers", role_id)


def test_keys_list_shows_last_use_expiry_and_expired_keys(mesh, app):
    from control_plane.models import ApiKey, db, utcnow

    created = json.loads(mesh("keys", "create", "--name", "laptop", "--expires-in-days", "30", "--json").output)
    line = next(line for line in mesh("keys", "list").output.splitlines() if created["id"] in line)
    assert "active" in line and "last used never" in line and f"expires {created['expires_at'][:10]}" in line
    db.session.rollback()  # a fresh transaction: MariaDB (repeatable read) would show an old snapshot
    db.session.get(ApiKey, created["id"]).expires_at = utcnow() - timedelta(hours=1)
    db.session.commit()
    line = next(line for line in mesh("keys", "list").output.splitlines() if created["id"] in line)
    assert "expired" in line
    listed = next(k for k in json.loads(mesh("keys", "list", "--json").output) if k["id"] == created["id"])
    assert listed["status"] == "expired" and listed["last_used_at"] is None


def test_orgs_get_update_and_delete_with_its_slug(mesh):
    org_id = mesh("orgs", "create", "--name", "Acme").output.strip()
    assert json.loads(mesh("orgs", "get", "--org", "acme", "--json").output)["id"] == org_id
    updated = json.loads(mesh("orgs", "update", "--org", "acme", "--slug", "acme-eu", "--json").output)
    assert updated["slug"] == "acme-eu"
    refused = mesh("orgs", "delete", "--org", "acme-eu", "--confirm-slug", "acme", ok=False)
    assert refused.exit_code != 0 and "'acme-eu'" in refused.output
    mesh("orgs", "delete", "--org", "acme-eu", "--confirm-slug", "acme-eu")
    assert org_id not in mesh("orgs", "list").output


def test_a_stdio_connection_takes_no_url(mesh):
    mesh("connections", "add", "--name", "local", "--stdio", "python3 -m some_server")
    result = mesh("connections", "update", "local", "--url", "http://127.0.0.1:9/mcp", ok=False)
    assert result.exit_code != 0 and "a stdio connection has no URL" in result.output
    assert json.loads(mesh("connections", "get", "local", "--json").output)["url"] == ""


# -- issue #11, item 15 --------------------------------------------------------------------------

@pytest.fixture
def plain_http_port():
    """A server that speaks plain HTTP, for a connection that expects TLS there."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_connections_test_names_why_an_upstream_cannot_be_reached(mesh, plain_http_port):
    cases = {"refused": (f"http://127.0.0.1:{free_port()}/mcp", "failed: connection refused"),
             "unknown": ("http://no-such-host.invalid/mcp", "failed: name not resolved"),
             "tls": (f"https://127.0.0.1:{plain_http_port}/mcp", "failed: TLS: ")}
    for name, (url, says) in cases.items():
        mesh("connections", "add", "--name", name, "--url", url)
        result = mesh("connections", "test", name, ok=False)
        assert result.exit_code == 1 and result.output.startswith(says), (name, result.output)
        assert "Group" not in result.output and "Traceback" not in result.output


def test_connection_names_are_unique_in_an_org_whatever_their_case(mesh):
    mesh("connections", "add", "--name", "docs", "--url", "http://127.0.0.1:8000/mcp")
    for name in ("docs", "Docs ", "DOCS"):
        refused = mesh("connections", "add", "--name", name, "--stdio", "python3 -m server", ok=False)
        assert refused.exit_code != 0 and "already has a connection named" in refused.output
    mesh("connections", "add", "--name", "wiki", "--sse-url", "http://127.0.0.1:8001/sse")
    refused = mesh("connections", "update", "wiki", "--name", "Docs", ok=False)
    assert refused.exit_code != 0 and "already has a connection named 'Docs'" in refused.output
    mesh("connections", "update", "wiki", "--name", "Wiki")  # its own name in another case is its own
    other = mesh("orgs", "create", "--name", "Other").output.strip()
    mesh("connections", "add", "--name", "docs", "--url", "http://127.0.0.1:8000/mcp", "--org", other)


def test_users_create_holds_passwords_to_the_rule_invitations_do(mesh):
    refused = mesh("users", "create", "--email", "kim@example.com", "--password-stdin", input="short\n", ok=False)
    assert refused.exit_code != 0 and "at least 12 characters" in refused.output
    assert "kim@example.com" not in mesh("users", "list").output
    mesh("users", "create", "--email", "kim@example.com", "--password-stdin", input="a long enough password\n")


# -- issue #11, item 14: through the installed `mesh`, as a user runs it ------------------------

def run_mesh(*args: str, cwd, env: dict) -> subprocess.CompletedProcess:
    basics = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    return subprocess.run([MESH, *args], cwd=cwd, env={**basics, **env}, capture_output=True, text=True, timeout=60)


def test_mesh_outside_the_gateways_folder_says_what_it_tried_and_what_to_do(tmp_path):
    result = run_mesh("connections", "list", cwd=tmp_path, env={})
    said = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in said
    assert f"sqlite:///{tmp_path / 'data' / 'mesh.db'}" in said and f"data dir {tmp_path / 'data'}" in said
    assert "--data-dir" in said and "mesh up" in said
    assert not (tmp_path / "data").exists(), "looking must not create a database"


def test_an_unreachable_database_is_named_without_its_password(tmp_path):
    url = f"postgresql://mesh:hunter2-secret@127.0.0.1:{free_port()}/mesh"
    result = run_mesh("keys", "list", cwd=tmp_path, env={"DATABASE_URL": url})
    said = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in said
    assert "cannot open the database postgresql" in said and "127.0.0.1" in said and "hunter2" not in said
