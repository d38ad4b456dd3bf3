"""The `mesh` command-line tool, on each database: the same service layer as everything else."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from control_plane.cli import main
from control_plane.services import orgs
from shared.apikeys import hash_key
from shared.bus import BusKeys


@pytest.fixture
def mesh(app, settings):
    runner = CliRunner()
    env = {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
           "MESH_REDIS_PREFIX": settings.redis_prefix}

    def run(*args: str, ok: bool = True):
        result = runner.invoke(main, ["--data-dir", str(settings.data_dir), *args], env=env)
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
