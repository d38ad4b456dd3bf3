"""The Flask app turns the services' typed errors into answers: a member lacking a permission
gets 403 naming it, an object of another org 404, exactly as the services decided."""

from __future__ import annotations

import pytest

from control_plane.services import orgs, roles
from control_plane.services.actors import OPERATOR, member_actor


@pytest.fixture
def client(app):
    first = orgs.bootstrap_first_run()
    bob = orgs.create_user("bob@example.com", "a long enough password")
    orgs.add_member(first.org, bob, "member", actor=OPERATOR)
    stranger = orgs.create_user("eve@example.com", "a long enough password")
    elsewhere = orgs.create_org("Elsewhere", stranger, actor=OPERATOR)

    actors = {"member": member_actor(first.org, bob.id), "stranger": member_actor(elsewhere, stranger.id)}

    # A thin view, as every view is: it calls a service as the member it acts for.
    @app.post("/test/roles/<who>")
    def create_role_as(who):
        return roles.create_role(first.org, "readers", {"tools": {"*": ["read_*"]}}, actor=actors[who]).id

    return app.test_client()


def test_forbidden_from_a_service_answers_403_naming_the_permission(client):
    answer = client.post("/test/roles/member")
    assert answer.status_code == 403
    assert answer.json == {"error": "Forbidden", "message": answer.json["message"]}
    assert "roles.manage" in answer.json["message"]


def test_another_orgs_member_gets_404_as_if_nothing_were_there(client):
    answer = client.post("/test/roles/stranger")
    assert answer.status_code == 404 and answer.json["error"] == "NotFound"
