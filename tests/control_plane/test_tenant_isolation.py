"""Every service operation (what the CLI, the UI and the management MCP server all call), tried by
a member of another org, is refused as if the org did not exist, and changes nothing. Members
lacking a permission get an error naming it, and nobody can hand out more than they hold."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from control_plane.models import db
from control_plane.services import api_keys, connections, orgs, roles
from control_plane.services.actors import OPERATOR, member_actor
from control_plane.services.errors import Conflict, Forbidden, NotFound

TABLES = ("users", "organizations", "members", "roles", "connections", "api_keys", "invitations")


def everything() -> str:
    return json.dumps({t: sorted(map(str, db.session.execute(sa.text(f"SELECT * FROM {t}")).all())) for t in TABLES})


@pytest.fixture
def world(app):
    first = orgs.bootstrap_first_run()
    alice = orgs.find_user("admin@localhost")
    mallory = orgs.create_user("mallory@evil.example", "a long enough password")
    evil = orgs.create_org("Evil Corp", mallory, actor=OPERATOR)
    target = connections.create_connection(first.org, "crm", "http://127.0.0.1:9/mcp", actor=OPERATOR)
    role = roles.create_role(first.org, "readers", {"tools": {"*": ["read_*"]}}, actor=OPERATOR)
    key, key_row = api_keys.create_api_key(first.org, alice, "alice", actor=OPERATOR)
    return {"org": first.org, "alice": alice, "connection": target, "role": role, "key_row": key_row,
            "intruder": member_actor(evil, mallory.id)}


OPERATIONS = {
    "add_member": lambda w, a: orgs.add_member(w["org"], orgs.find_user("mallory@evil.example"), "owner", actor=a),
    "update_member_role": lambda w, a: orgs.update_member_role(w["org"], w["alice"], "member", actor=a),
    "remove_member": lambda w, a: orgs.remove_member(w["org"], w["alice"], actor=a),
    "list_members": lambda w, a: orgs.list_members(w["org"], actor=a),
    "invite": lambda w, a: orgs.invite(w["org"], "spy@evil.example", "owner", actor=a),
    "create_role": lambda w, a: roles.create_role(w["org"], "backdoor", {"tools": {"*": ["*"]}}, actor=a),
    "update_role": lambda w, a: roles.update_role(w["org"], "readers", permissions={"tools": {"*": ["*"]}}, actor=a),
    "delete_role": lambda w, a: roles.delete_role(w["org"], "readers", actor=a),
    "list_roles": lambda w, a: roles.list_roles(w["org"], actor=a),
    "effective_permissions": lambda w, a: roles.effective_permissions(w["org"], w["alice"], actor=a),
    "create_api_key": lambda w, a: api_keys.create_api_key(w["org"], w["alice"], "stolen", actor=a),
    "revoke_api_key": lambda w, a: api_keys.revoke_api_key(w["org"], w["key_row"].id, actor=a),
    "list_api_keys": lambda w, a: api_keys.list_api_keys(w["org"], actor=a),
    "create_connection": lambda w, a: connections.create_connection(w["org"], "exfil", "http://evil.example/mcp", actor=a),
    "list_connections": lambda w, a: connections.list_connections(w["org"], actor=a),
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_another_orgs_member_is_refused_everything_and_changes_nothing(world, operation):
    before = everything()
    with pytest.raises(NotFound):
        OPERATIONS[operation](world, world["intruder"])
    db.session.rollback()
    assert everything() == before


def test_a_member_lacking_a_permission_is_told_which(world):
    bob = orgs.create_user("bob@example.com", "a long enough password")
    orgs.add_member(world["org"], bob, "member", actor=OPERATOR)
    as_bob = member_actor(world["org"], bob.id)
    before = everything()
    with pytest.raises(Forbidden, match="roles.manage"):
        roles.create_role(world["org"], "mine", {"tools": {"*": ["*"]}}, actor=as_bob)
    with pytest.raises(Forbidden, match="connections.write"):
        connections.create_connection(world["org"], "x", "http://127.0.0.1:9/mcp", actor=as_bob)
    with pytest.raises(Forbidden, match="members.manage"):
        orgs.remove_member(world["org"], world["alice"], actor=as_bob)
    with pytest.raises(Forbidden):
        api_keys.create_api_key(world["org"], world["alice"], "impersonate", actor=as_bob)
    assert everything() == before
    # What a member may do: read connections, make and revoke their own keys, leave.
    assert [c.id for c in connections.list_connections(world["org"], actor=as_bob)] == [world["connection"].id]
    _, own = api_keys.create_api_key(world["org"], bob, "mine", actor=as_bob)
    assert [k.id for k in api_keys.list_api_keys(world["org"], actor=as_bob)] == [own.id]
    with pytest.raises(NotFound):
        api_keys.revoke_api_key(world["org"], world["key_row"].id, actor=as_bob)
    orgs.remove_member(world["org"], bob, actor=as_bob)


def test_admins_cannot_grant_more_than_they_hold(world):
    carol = orgs.create_user("carol@example.com", "a long enough password")
    orgs.add_member(world["org"], carol, "admin", actor=OPERATOR)
    as_carol = member_actor(world["org"], carol.id)
    with pytest.raises(Forbidden):
        orgs.update_member_role(world["org"], carol, "owner", actor=as_carol)
    with pytest.raises(Forbidden, match="org.delete"):
        roles.create_role(world["org"], "deleter", {"manage": ["org.delete"]}, actor=as_carol)
    with pytest.raises(Forbidden):
        orgs.remove_member(world["org"], world["alice"], actor=as_carol)  # alice is an owner
    roles.create_role(world["org"], "support", {"tools": {"*": ["search"]}, "manage": ["members.read"]}, actor=as_carol)


def test_the_last_owner_cannot_leave_or_be_demoted(world):
    with pytest.raises(Conflict):
        orgs.remove_member(world["org"], world["alice"], actor=OPERATOR)
    with pytest.raises(Conflict):
        orgs.update_member_role(world["org"], world["alice"], "admin", actor=OPERATOR)


def test_a_role_in_use_cannot_be_deleted(world):
    dave = orgs.create_user("dave@example.com", "a long enough password")
    orgs.add_member(world["org"], dave, "readers", actor=OPERATOR)
    with pytest.raises(Conflict, match="held by 1"):
        roles.delete_role(world["org"], "readers", actor=OPERATOR)


def test_invitations_are_single_use_and_grant_the_invited_role(world, settings, caplog):
    caplog.set_level("DEBUG")
    token = orgs.invite(world["org"], "new@example.com", "readers", actor=OPERATOR)
    emails = [path.read_text() for path in (settings.data_dir / "outbox").iterdir()]  # the email, in the outbox
    assert len(emails) == 1 and "To: new@example.com" in emails[0] and token in emails[0]
    assert "new@example.com" in caplog.text and token not in caplog.text
    member = orgs.accept_invitation(token, "a long enough password")
    assert member.role == world["role"].id
    with pytest.raises(NotFound):
        orgs.accept_invitation(token, "a long enough password")


def test_effective_permissions_come_from_the_shared_evaluator(world):
    erin = orgs.create_user("erin@example.com", "a long enough password")
    orgs.add_member(world["org"], erin, "readers", actor=OPERATOR)
    effective = roles.effective_permissions(world["org"], erin, actor=OPERATOR)
    assert effective["can"]("tools", world["connection"].id, "read_mail")
    assert not effective["can"]("tools", world["connection"].id, "send_mail")
    narrowed = roles.effective_permissions(world["org"], erin, scope={"tools": {"*": ["read_calendar"]}}, actor=OPERATOR)
    assert narrowed["can"]("tools", "conn_any", "read_calendar") and not narrowed["can"]("tools", "conn_any", "read_mail")
