"""Every mutating operation leaves exactly one admin-audit row, written in the change's own
transaction, naming actor, action, target, and the target before and after, without secrets.
A refused operation leaves none."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from control_plane.models import AdminAudit, db
from control_plane.services import api_keys, connections, orgs, roles
from control_plane.services.actors import OPERATOR, member_actor
from control_plane.services.errors import ServiceError


def rows() -> list[AdminAudit]:
    return list(db.session.scalars(sa.select(AdminAudit).order_by(AdminAudit.created_at, AdminAudit.id)))


@pytest.fixture
def setup(app):
    first = orgs.bootstrap_first_run()
    return first.org, orgs.find_user("admin@localhost")


def test_each_mutation_writes_one_row_with_before_and_after(setup):
    org, admin = setup
    steps = [
        ("connection.create", lambda: connections.create_connection(org, "crm", "http://127.0.0.1:9/mcp",
                                                                    {"X-Api-Key": "sk-secret-123456"}, actor=OPERATOR)),
        ("user.create", lambda: orgs.create_user("zoe@example.com", "a long enough password")),
        ("member.add", lambda: orgs.add_member(org, orgs.find_user("zoe@example.com"), "member", actor=OPERATOR)),
        ("role.create", lambda: roles.create_role(org, "readers", {"tools": {"*": ["read_*"]}}, actor=OPERATOR)),
        ("member.update_role", lambda: orgs.update_member_role(org, orgs.find_user("zoe@example.com"), "readers", actor=OPERATOR)),
        ("role.update", lambda: roles.update_role(org, "readers", permissions={"tools": {"*": ["read_mail"]}}, actor=OPERATOR)),
        ("api_key.create", lambda: api_keys.create_api_key(org, admin, "ci", actor=OPERATOR)),
        ("member.invite", lambda: orgs.invite(org, "yan@example.com", "member", actor=OPERATOR)),
        ("organization.update", lambda: orgs.update_org(org, name="Default Org", actor=OPERATOR)),
        ("member.remove", lambda: orgs.remove_member(org, orgs.find_user("zoe@example.com"), actor=OPERATOR)),
        ("role.delete", lambda: roles.delete_role(org, "readers", actor=OPERATOR)),
    ]
    for action, step in steps:
        before = len(rows())
        step()
        added = rows()[before:]
        assert [r.action for r in added] == [action]
        assert added[0].actor == "operator"
    dumped = json.dumps([[r.before, r.after] for r in rows()], default=str)
    assert "sk-secret-123456" not in dumped, "secrets must never reach the audit trail"
    renamed = next(r for r in rows() if r.action == "organization.update")
    assert renamed.before["name"] == "Default" and renamed.after["name"] == "Default Org"
    removed = next(r for r in rows() if r.action == "member.remove")
    assert removed.before is not None and removed.after is None


def test_a_members_actions_are_recorded_as_theirs(setup):
    org, admin = setup
    kim = orgs.create_user("kim@example.com", "a long enough password")
    orgs.add_member(org, kim, "admin", actor=OPERATOR)
    as_kim = member_actor(org, kim.id)
    role = roles.create_role(org, "ops", {"tools": {"*": ["*"]}}, actor=as_kim)
    entry = rows()[-1]
    assert (entry.actor, entry.action, entry.target_type, entry.target_id) == (kim.id, "role.create", "roles", role.id)


def test_a_refused_operation_leaves_no_row(setup):
    org, admin = setup
    bob = orgs.create_user("bob@example.com", "a long enough password")
    orgs.add_member(org, bob, "member", actor=OPERATOR)
    before = len(rows())
    for refused in (
        lambda: roles.create_role(org, "x", {"tools": {}}, actor=member_actor(org, bob.id)),
        lambda: orgs.add_member(org, bob, "member", actor=OPERATOR),  # already a member
        lambda: connections.create_connection(org, "bad", "http://169.254.169.254/", actor=OPERATOR),
        lambda: orgs.remove_member(org, admin, actor=OPERATOR),  # the last owner
    ):
        with pytest.raises(ServiceError):
            refused()
        db.session.rollback()
    assert len(rows()) == before


def test_deleting_an_org_removes_everything_in_it_and_keeps_the_record(setup, published):
    org, admin = setup
    connections.create_connection(org, "crm", "http://127.0.0.1:9/mcp", actor=OPERATOR)
    org_id = org.id
    orgs.delete_org(org, actor=OPERATOR)
    assert db.session.execute(sa.text("SELECT count(*) FROM connections")).scalar() == 0
    assert rows()[-1].action == "organization.delete" and rows()[-1].org_id == org_id
    assert published(org_id).deleted
