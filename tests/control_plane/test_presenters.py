"""One presenter per object: the management tools and the ``mesh`` command show the same fields,
and a listing loads what it shows in a fixed number of queries, however many rows it has."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from pydantic import ValidationError

from control_plane.cli import main
from control_plane.management import tools
from control_plane.models import db, utcnow
from control_plane.services import api_keys, connections, orgs, roles
from control_plane.services import bridged_connections as bridged
from control_plane.services.actors import OPERATOR


@contextmanager
def counted_queries():
    statements: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", note)
    try:
        yield statements
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", note)


def admin(first):
    return orgs.find_user(first.email)


def owner_caller(first) -> tools.Caller:
    _, row = api_keys.create_api_key(first.org, admin(first), "tools", actor=OPERATOR)
    return tools.Caller(user_id=admin(first).id, key_id=row.id, key_org_id=first.org.id, scope=None)


def listing_queries(caller: tools.Caller) -> tuple[int, dict]:
    db.session.expire_all()
    with counted_queries() as statements:
        page = tools.connection_list(caller, tools.ConnectionList())
    return len(statements), page


def add_connection(org, n: int) -> None:
    connections.create_connection(org, f"api-{n}", f"https://api{n}.example/mcp",
                                  {"X-Api-Key": f"key-{n}-abcdefghijklmnopqrstuvwxyz"},
                                  secrets={"bearer": f"token-{n}-0123456789abcdefghij3456"}, actor=OPERATOR)


def test_the_connection_listing_costs_the_same_queries_for_one_connection_or_many(app):
    first = orgs.bootstrap_first_run()
    caller = owner_caller(first)
    add_connection(first.org, 0)
    one, page = listing_queries(caller)
    assert page["items"][0]["credentials"] == {"bearer": "…3456", "header:X-Api-Key": "…wxyz"}
    for n in range(1, 7):
        add_connection(first.org, n)
    many, page = listing_queries(caller)
    assert len(page["items"]) == 7
    assert all(set(item["credentials"]) == {"bearer", "header:X-Api-Key"} for item in page["items"])
    assert many == one


def test_the_cli_and_the_tools_show_a_connection_with_the_same_fields(app, settings):
    first = orgs.bootstrap_first_run()
    add_connection(first.org, 0)
    from_tool = tools.connection_list(owner_caller(first), tools.ConnectionList())["items"][0]
    env = {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
           "MESH_REDIS_PREFIX": settings.redis_prefix}
    result = CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "connections", "list", "--json"], env=env)
    assert result.exit_code == 0, result.output
    from_cli = json.loads(result.output)[0]
    assert from_cli == {**from_tool, "updated_at": from_cli["updated_at"]}  # the tool's call may have touched it
    assert tools.ConnectionOut.model_validate(from_cli)  # the schema MCP clients see fits what the CLI prints


def test_members_show_role_names_and_keys_their_state(app):
    first = orgs.bootstrap_first_run()
    caller = owner_caller(first)
    role = roles.create_role(first.org, "readers", {"tools": {"*": ["read_*"]}}, actor=OPERATOR)
    kim = orgs.create_user("kim@example.com", "a long enough password")
    orgs.add_member(first.org, kim, role.id, actor=OPERATOR)
    members = {m["email"]: m for m in tools.member_list(caller, tools.InOrg())["items"]}
    assert (members["kim@example.com"]["role"], members["kim@example.com"]["role_id"]) == ("readers", role.id)
    assert members["admin@localhost"]["role"] == "owner"

    _, expired = api_keys.create_api_key(first.org, admin(first), "old", expires_at=utcnow() + timedelta(seconds=1), actor=OPERATOR)
    _, revoked = api_keys.create_api_key(first.org, admin(first), "gone", actor=OPERATOR)
    api_keys.revoke_api_key(first.org, revoked.id, actor=OPERATOR)
    expired.expires_at = utcnow() - timedelta(minutes=1)
    db.session.commit()
    states = {k["name"]: k["status"] for k in tools.api_key_list(caller, tools.InOrg())["items"]}
    assert states == {"bootstrap": "active", "tools": "active", "old": "expired", "gone": "revoked"}


def test_the_tools_filter_connections_by_one_of_the_three_transports(app):
    first = orgs.bootstrap_first_run()
    caller = owner_caller(first)
    add_connection(first.org, 0)
    bridged.create_stdio_connection(first.org, "local", "python3", ["-m", "some_server"], actor=OPERATOR)
    bridged.create_sse_connection(first.org, "legacy", "http://127.0.0.1:8931/sse", actor=OPERATOR)
    for transport in ("http", "sse", "stdio"):
        page = tools.connection_list(caller, tools.ConnectionList(transport=transport))
        assert [c["transport"] for c in page["items"]] == [transport]
    with pytest.raises(ValidationError):
        tools.ConnectionList(transport="ftp")
    with pytest.raises(ValidationError):
        tools.ConnectionUpdate(connection_id="conn_x", status="paused")
