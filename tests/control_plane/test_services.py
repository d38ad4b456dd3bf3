"""The service layer against a real database and the real Redis: every change that alters an
org's snapshot is committed, versioned and published."""

from __future__ import annotations

import inspect
import json

import pytest
import sqlalchemy as sa

from control_plane.models import db
from control_plane.services import api_keys, bridged_connections, connections, orgs, roles, secrets
from control_plane.services.actors import OPERATOR
from control_plane.services.errors import Conflict, InvalidInput
from shared.apikeys import hash_key
from shared.bus import BusKeys, ChangeMessage


@pytest.fixture
def first(app):
    return orgs.bootstrap_first_run()


def test_first_run_creates_an_admin_an_org_and_a_working_key_once(app, first, published):
    assert first.email == "admin@localhost" and first.password
    snapshot = published(first.org.id)
    assert hash_key(first.api_key) in snapshot.api_keys
    assert orgs.bootstrap_first_run() is None


def test_adding_a_connection_publishes_a_newer_snapshot_and_announces_it(app, first, redis_client, bus_prefix,
                                                                          published):
    before = published(first.org.id).version
    pubsub = redis_client.pubsub()
    pubsub.subscribe(BusKeys(bus_prefix).changes)
    pubsub.get_message(timeout=1)  # the subscribe confirmation
    conn = connections.create_connection(first.org, "echo", "http://127.0.0.1:9/mcp", {"X-Api-Key": "k"}, actor=OPERATOR)
    assert conn.id.startswith("conn_")
    snapshot = published(first.org.id)
    assert snapshot.version > before
    assert snapshot.connections[conn.id].url == "http://127.0.0.1:9/mcp"
    message = pubsub.get_message(timeout=2)
    assert ChangeMessage.from_json(message["data"]) == ChangeMessage(first.org.id, snapshot.version)
    pubsub.close()


def test_api_keys_are_stored_only_as_hashes(app, first):
    key, row = api_keys.create_api_key(first.org, orgs.find_user("admin@localhost"), "ci", actor=OPERATOR)
    assert key.startswith(row.prefix + "_")
    for table in ("api_keys", "users", "organizations", "members", "connections"):
        for values in db.session.execute(sa.text(f"SELECT * FROM {table}")):
            dumped = json.dumps([str(v) for v in values])
            assert key not in dumped and first.api_key not in dumped


def test_revoked_keys_and_departed_members_drop_out_of_the_snapshot(app, first, published):
    bob = orgs.create_user("bob@example.com", "correct horse battery staple")
    orgs.add_member(first.org, bob, actor=OPERATOR)
    bob_key, _ = api_keys.create_api_key(first.org, bob, "bob", actor=OPERATOR)
    spare, spare_row = api_keys.create_api_key(first.org, orgs.find_user("admin@localhost"), "spare", actor=OPERATOR)
    keys_now = published(first.org.id).api_keys
    assert hash_key(bob_key) in keys_now and hash_key(spare) in keys_now

    api_keys.revoke_api_key(first.org, spare_row.id, actor=OPERATOR)
    orgs.remove_member(first.org, bob, actor=OPERATOR)
    keys_after = published(first.org.id).api_keys
    assert hash_key(spare) not in keys_after and hash_key(bob_key) not in keys_after
    assert hash_key(first.api_key) in keys_after


def test_passwords_are_argon2_hashes(app, first):
    stored = orgs.find_user("admin@localhost").password_hash
    assert stored.startswith("$argon2") and first.password not in stored


@pytest.mark.parametrize("url", [
    "ftp://example.com/mcp", "http:///nohost", "http://user:pw@example.com/mcp", "http://169.254.169.254/latest",
    "http://0.0.0.0:80/mcp", "not a url",
])
def test_connection_urls_that_cannot_be_upstreams_are_refused(app, first, url):
    with pytest.raises(InvalidInput):
        connections.create_connection(first.org, "bad", url, actor=OPERATOR)


def test_duplicate_org_slugs_are_refused(app, first):
    with pytest.raises(Conflict):
        orgs.create_org("Default", orgs.find_user("admin@localhost"), actor=OPERATOR)


def test_every_service_that_acts_for_someone_needs_the_actor_named():
    """No service defaults to the operator: an interface that forgets to say who acts gets a
    TypeError, never every right. Besides the actor itself (``orgs_of(actor)``), it is named."""
    checked = []
    for module in (api_keys, bridged_connections, connections, orgs, roles, secrets):
        for name, function in inspect.getmembers(module, inspect.isfunction):
            parameters = inspect.signature(function).parameters
            actor = parameters.get("actor")
            if function.__module__ == module.__name__ and actor is not None:
                assert actor.default is inspect.Parameter.empty, f"{module.__name__}.{name} defaults its actor"
                if not name.startswith("_") and next(iter(parameters)) != "actor":
                    assert actor.kind is inspect.Parameter.KEYWORD_ONLY, f"{module.__name__}.{name}"
                checked.append(name)
    assert {"create_connection", "delete_org", "create_role", "set_secrets", "effective_permissions"} <= set(checked)
