"""One policy builder (``shared.policy.principal_documents``): what the permissions view shows
(``roles.effective_permissions``, behind ``mesh members permissions``) and what the management
server's actors may do are exactly what the data plane decides on the snapshot it installs, for
generated roles, key scopes and calls, including roles that vanished and documents that no
longer validate (all fail closed: nothing is allowed)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control_plane.models import ApiKey, Member, Role, db
from control_plane.services import api_keys, commit_and_publish, connections, org_changed, orgs, roles
from control_plane.services.actors import OPERATOR, KeyBinding, member_actor
from dataplane_addon.snapshot_store import SnapshotStore
from shared.apikeys import hash_key
from shared.policy import BUILTIN_ROLES, KINDS, MANAGE_PERMISSIONS, PolicyError, readable_scope, scope_layers

NAMES = ["echo", "add", "list_a", "list_b"]
NAME_PATTERNS = [*NAMES, "list_*", "*", "*_b"]
URIS = ["file:///docs/a", "file:///docs/b", "file:///etc/passwd", "file:///docs/../etc/passwd"]
URI_PATTERNS = ["file:///docs/a", "file:///docs/*", "file:///etc/*", "*"]


@pytest.fixture
def world(app):
    first = orgs.bootstrap_first_run()
    user = orgs.create_user("pat@example.com", "a long enough password")
    orgs.add_member(first.org, user, "member", actor=OPERATOR)
    conns = [connections.create_connection(first.org, name, f"http://127.0.0.1:9/{name}", actor=OPERATOR).id
             for name in ("crm", "mail")]
    role = roles.create_role(first.org, "generated", {}, actor=OPERATOR)
    key, row = api_keys.create_api_key(first.org, user, "generated", actor=OPERATOR)
    return first.org, user, conns, role.id, key, row.id


def documents(conns: list[str]):
    targets = st.sampled_from([*conns, "*", "conn_elsewhere"])

    def kind(patterns):
        return st.dictionaries(targets, st.lists(st.sampled_from(patterns), max_size=3), max_size=3)

    valid = st.fixed_dictionaries({}, optional={
        "tools": kind(NAME_PATTERNS), "prompts": kind(NAME_PATTERNS), "resources": kind(URI_PATTERNS),
        "manage": st.lists(st.sampled_from([*MANAGE_PERMISSIONS, "*"]), max_size=4)})
    # Stored documents that no longer validate (written before a rule, or by hand).
    invalid = st.sampled_from([{"tools": "everything"}, {"tools": {"*": ["x" * 300]}},
                               {"manage": ["root"]}, {"tools": {"*": [""]}}])
    return st.one_of(valid, valid, valid, invalid)


def test_the_permissions_view_equals_the_data_planes_decisions(world, published):
    org, user, conns, role_id, key, key_id = world
    docs = documents(conns)
    calls = st.lists(st.one_of(
        st.tuples(st.sampled_from(["tools", "prompts"]), st.sampled_from([*conns, "conn_other"]), st.sampled_from(NAMES)),
        st.tuples(st.just("resources"), st.sampled_from([*conns, "conn_other"]), st.sampled_from(URIS)),
    ), min_size=1, max_size=12)
    scopes = st.one_of(st.none(), docs, st.lists(docs, min_size=1, max_size=2), st.just([]))

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(role=st.sampled_from([*BUILTIN_ROLES, "custom", "vanished"]), role_doc=docs, scope=scopes, calls=calls)
    def check(role, role_doc, scope, calls):
        db.session.get(Role, role_id).permissions = role_doc
        db.session.query(Member).filter_by(org_id=org.id, user_id=user.id).update(
            {"role": {"custom": role_id, "vanished": "role_gone"}.get(role, role)})
        db.session.get(ApiKey, key_id).scope = scope
        org_changed(org.id)
        commit_and_publish(org.id)

        store = SnapshotStore()
        assert store.apply(published(org.id))
        enforced = store.principal(hash_key(key)).policy
        actor = member_actor(org, user.id, KeyBinding(key_id, org.id, tuple(readable_scope(scope))))
        try:
            scope_layers(scope)
            view = roles.effective_permissions(org, user, scope=scope, actor=OPERATOR)
        except PolicyError:
            view = None  # the view refuses to be asked about an invalid scope; the others deny
        for kind, connection, name in calls:
            decided = enforced.allows(kind, connection, name)
            assert actor.policy.allows(kind, connection, name) == decided, (kind, connection, name)
            if view is not None:
                assert view["can"](kind, connection, name) == decided, (kind, connection, name)
        managed = {p for p in MANAGE_PERMISSIONS if enforced.may_manage(p)}
        assert {p for p in MANAGE_PERMISSIONS if actor.policy.may_manage(p)} == managed
        if view is not None:
            assert set(view["manage"]) == managed

    check()


def test_a_principal_whose_permissions_cannot_be_decided_is_allowed_nothing_everywhere(world, published):
    """A vanished role or an unreadable stored scope: the key still authenticates to the data
    plane (as every reader builds the same policy) but is allowed nothing, and the view and the
    management server's actor say the same."""
    org, user, conns, role_id, key, key_id = world
    db.session.query(Member).filter_by(org_id=org.id, user_id=user.id).update({"role": "role_gone"})
    org_changed(org.id)
    commit_and_publish(org.id)
    store = SnapshotStore()
    store.apply(published(org.id))
    enforced = store.principal(hash_key(key)).policy
    view = roles.effective_permissions(org, user, actor=OPERATOR)
    actor = member_actor(org, user.id, KeyBinding(key_id, org.id))
    for kind in KINDS:
        name = "file:///docs/a" if kind == "resources" else "echo"
        assert not enforced.allows(kind, conns[0], name)
        assert not view["can"](kind, conns[0], name)
        assert not actor.policy.allows(kind, conns[0], name)
    assert view["manage"] == [] and not actor.policy.may_manage("members.read")

    orgs.update_member_role(org, user, "owner", actor=OPERATOR)
    db.session.get(ApiKey, key_id).scope = {"tools": "everything"}
    org_changed(org.id)
    commit_and_publish(org.id)
    store.apply(published(org.id))
    enforced = store.principal(hash_key(key)).policy
    actor = member_actor(org, user.id, KeyBinding(key_id, org.id, tuple(readable_scope({"tools": "everything"}))))
    assert not enforced.allows("tools", conns[0], "echo") and not actor.policy.allows("tools", conns[0], "echo")
    assert not enforced.may_manage("org.delete") and not actor.policy.may_manage("org.delete")
