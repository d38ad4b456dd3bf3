"""Permission documents are checked against the org they are for, in the services every interface
calls (CLI, management tools, web): a misspelt section or a connection the org does not have is
refused with a message naming it, instead of being stored as a grant that silently never applies
(or applies to something else)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from control_plane.cli import main
from control_plane.models import Role, db
from control_plane.services import api_keys, connections, orgs, roles
from control_plane.services.actors import OPERATOR
from control_plane.services.errors import InvalidInput


@pytest.fixture
def world(app):
    first = orgs.bootstrap_first_run()
    conn = connections.create_connection(first.org, "crm", "http://127.0.0.1:9/mcp", actor=OPERATOR)
    stranger = orgs.create_user("eve@example.com", "a long enough password")
    elsewhere = orgs.create_org("Elsewhere", stranger, actor=OPERATOR)
    foreign = connections.create_connection(elsewhere, "theirs", "http://127.0.0.1:9/mcp", actor=OPERATOR)
    roles.create_role(first.org, "fine", {"tools": {"*": ["echo"]}}, actor=OPERATOR)  # for update_role
    return first.org, orgs.find_user("admin@localhost"), conn.id, foreign.id


WRITERS = {
    "create_role": lambda org, user, doc: roles.create_role(org, "typo", doc, actor=OPERATOR),
    "update_role": lambda org, user, doc: roles.update_role(org, "fine", permissions=doc, actor=OPERATOR),
    "create_api_key": lambda org, user, doc: api_keys.create_api_key(org, user, "typo", scope=doc, actor=OPERATOR),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_misspelt_section_is_refused_naming_it(world, writer):
    org, user, conn, _ = world
    for doc in ({"tool": {"*": ["echo"]}}, {"tool": ["echo"]}, {"tools": {"*": ["echo"]}, "tool": ["x"]}):
        with pytest.raises(InvalidInput, match="'tool'|: tool;") as refused:
            WRITERS[writer](org, user, doc)
        assert "tools, prompts, resources" in str(refused.value)
    assert db.session.query(Role).filter_by(name="typo").count() == 0
    assert roles.find_role(org, "fine").permissions["tools"] == {"*": ["echo"]}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_connection_the_org_does_not_have_is_refused_naming_it(world, writer):
    org, user, conn, foreign = world
    messages = []
    for missing in ("conn_nowhere0000000", foreign):
        with pytest.raises(InvalidInput) as refused:
            WRITERS[writer](org, user, {"tools": {conn: ["echo"]}, "resources": {missing: ["file:///x"]}})
        assert f"resources: {missing!r}" in str(refused.value) and conn not in str(refused.value)
        messages.append(str(refused.value).replace(missing, "ID"))
    assert messages[0] == messages[1]  # another org's connection reads exactly like one that does not exist


def test_documents_naming_the_orgs_own_connections_or_all_are_accepted(world):
    org, user, conn, _ = world
    role = roles.create_role(org, "ok", {"tools": {conn: ["echo"], "*": ["add"]}, "manage": ["members.read"]},
                             actor=OPERATOR)
    assert role.permissions["tools"] == {conn: ["echo"], "*": ["add"]}
    _, key = api_keys.create_api_key(org, user, "ok", scope={conn: ["echo"]}, actor=OPERATOR)  # the shorthand
    assert key.scope == [{"tools": {conn: ["echo"]}, "prompts": {}, "resources": {}, "manage": []}]


def test_the_mesh_command_refuses_a_misspelt_scope_and_an_unknown_connection(world, settings):
    env = {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
           "MESH_REDIS_PREFIX": settings.redis_prefix}

    def mesh(*args):
        return CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), *args], env=env)

    typo = mesh("keys", "create", "--name", "k", "--scope", json.dumps({"tool": {"*": ["echo"]}}))
    assert typo.exit_code != 0 and "unknown keys 'tool'" in typo.output and "Traceback" not in typo.output
    role = mesh("roles", "create", "--name", "r", "--permissions", json.dumps({"tools": {"conn_gone": ["echo"]}}))
    assert role.exit_code != 0 and "tools: 'conn_gone'" in role.output and "Traceback" not in role.output
    assert mesh("roles", "list", "--json").exit_code == 0 and "\"r\"" not in mesh("roles", "list", "--json").output
