"""Regressions of the security review (issue #10) in the service layer, on each database:

- 7: a key narrowed by a scope cannot make a key, an org or a role that escapes its scope;
- 8: a connection moved to another origin loses its secrets, and a secret sealed for one origin
  never opens for another;
- 9: over the network people join only by invitation, answered alike for every address, and
  invitation tokens stay out of the logs;
- masks: at most the last 4 characters of a secret, and URL query values masked wherever a
  connection's URL is shown.

Actors are built as the management server builds them: a member acting through an API key
(``KeyBinding``), so what the CLI, the tools and the UI get is what is tested here.
"""

from __future__ import annotations

import json
import logging
import stat
from datetime import timedelta

import pytest
import sqlalchemy as sa

from control_plane.compiler import compile_snapshot
from control_plane.models import AdminAudit, ApiKey, Connection, ConnectionSecret, Member, Organization, db, utcnow
from control_plane.services import api_keys, connections, orgs, roles
from control_plane.services.actors import OPERATOR, KeyBinding, member_actor
from control_plane.services.errors import Forbidden, InvalidInput, NotFound
from control_plane.services.secrets import clear_headers
from shared.credentials import url_origin
from shared.policy import Policy, scope_layers
from tests.secret_scan import find_secret

OWNER_TOKEN = "sk-live-owner-bearer-0123456789-a1b2"
OWNER_HEADER = "hdr-owner-api-key-9f8e7d6c5b4a-x7y8"
QUERY_SECRET = "sk-live-in-the-query-string-5e6f"
ECHO_ONLY = {"tools": {"*": ["echo"]}}


@pytest.fixture
def first(app):
    return orgs.bootstrap_first_run()


@pytest.fixture
def admin(first):
    return orgs.find_user("admin@localhost")


def through(row: ApiKey):
    """The actor for whoever holds the key ``row``, in the key's own org (as the management
    server builds it from the key)."""
    org = db.session.get(Organization, row.org_id)
    key = KeyBinding(row.id, row.org_id, tuple(scope_layers(row.scope)), row.expires_at)
    return member_actor(org, row.user_id, key)


def key_policy(org_id: str, row: ApiKey) -> Policy:
    """The policy the data plane will decide this key's calls by."""
    snapshot = compile_snapshot(db.session, org_id)
    grant = next(g for g in snapshot.api_keys.values() if g.key_id == row.id)
    return Policy(snapshot.policies[grant.policy])


def count(model) -> int:
    db.session.rollback()  # a fresh transaction: MariaDB (repeatable read) would show an old snapshot
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


# -- 7: a scoped key escapes its scope ------------------------------------------------------------

def test_a_key_made_through_a_scoped_key_never_exceeds_that_scope(first, admin):
    _, narrow = api_keys.create_api_key(first.org, admin, "echo-only", scope=ECHO_ONLY, actor=OPERATOR)
    actor = through(narrow)

    _, child = api_keys.create_api_key(first.org, admin, "child", actor=actor)  # no scope asked for
    policy = key_policy(first.org.id, child)
    assert policy.allows("tools", "conn_any", "echo")
    assert not policy.allows("tools", "conn_any", "add"), "the new key must not get the member's full rights"
    assert not policy.may_manage("connections.write")

    _, wider = api_keys.create_api_key(first.org, admin, "asks-for-more", scope={"tools": {"*": ["*"]}}, actor=actor)
    policy = key_policy(first.org.id, wider)
    assert policy.allows("tools", "conn_any", "echo") and not policy.allows("tools", "conn_any", "add")

    _, narrower = api_keys.create_api_key(first.org, admin, "even-less", scope={"tools": {"*": ["add"]}}, actor=actor)
    assert not key_policy(first.org.id, narrower).allows("tools", "conn_any", "echo")
    assert not key_policy(first.org.id, narrower).allows("tools", "conn_any", "add")

    # A key made through the child is narrowed by both layers in turn.
    _, grandchild = api_keys.create_api_key(first.org, admin, "grandchild", actor=through(narrower))
    assert len(scope_layers(grandchild.scope)) == 2
    assert not key_policy(first.org.id, grandchild).allows("tools", "conn_any", "echo")


def test_a_key_made_through_an_expiring_key_expires_with_it(first, admin):
    soon = utcnow() + timedelta(days=1)
    _, creator = api_keys.create_api_key(first.org, admin, "expiring", expires_at=soon, actor=OPERATOR)
    _, forever = api_keys.create_api_key(first.org, admin, "forever", actor=through(creator))
    _, later = api_keys.create_api_key(first.org, admin, "later", expires_at=soon + timedelta(days=30),
                                       actor=through(creator))
    _, earlier = api_keys.create_api_key(first.org, admin, "earlier", expires_at=soon - timedelta(hours=1),
                                         actor=through(creator))
    assert forever.expires_at == soon and later.expires_at == soon
    assert earlier.expires_at == soon - timedelta(hours=1)


def test_a_scoped_key_cannot_create_an_organization(first, admin):
    _, narrow = api_keys.create_api_key(first.org, admin, "echo-only", scope=ECHO_ONLY, actor=OPERATOR)
    actor = through(narrow)
    before = count(Organization)
    with pytest.raises(Forbidden, match="scope"):
        orgs.create_org("Escape Hatch", admin, actor=actor)
    assert count(Organization) == before
    # An unscoped key still may; so may the operator (the CLI).
    _, plain = api_keys.create_api_key(first.org, admin, "plain", actor=OPERATOR)
    assert orgs.create_org("Mine", admin, actor=through(plain)).slug == "mine"
    assert orgs.create_org("Operator's", admin, actor=OPERATOR).slug == "operator-s"


def test_a_scoped_key_reaches_no_org_but_its_own(first, admin):
    other = orgs.create_org("Other", admin, actor=OPERATOR)  # the admin owns it too
    _, narrow = api_keys.create_api_key(first.org, admin, "echo-only",
                                        scope={**ECHO_ONLY, "manage": ["connections.write", "connections.read"]}, actor=OPERATOR)
    key = KeyBinding(narrow.id, first.org.id, tuple(scope_layers(narrow.scope)))
    with pytest.raises(NotFound):
        member_actor(other, admin.id, key)
    assert [o.id for o in orgs.orgs_of(through(narrow))] == [first.org.id]
    # An unscoped key acts as its user in every org the user belongs to.
    _, plain = api_keys.create_api_key(first.org, admin, "plain", actor=OPERATOR)
    assert member_actor(other, admin.id, KeyBinding(plain.id, first.org.id)).org_id == other.id


def test_a_scoped_key_cannot_hand_out_tools_its_scope_withholds(first, admin):
    scope = {**ECHO_ONLY, "manage": ["roles.manage", "members.manage", "members.read", "connections.read"]}
    _, narrow = api_keys.create_api_key(first.org, admin, "role-admin", scope=scope, actor=OPERATOR)
    actor = through(narrow)
    with pytest.raises(Forbidden, match="'add'"):
        roles.create_role(first.org, "wide", {"tools": {"*": ["echo", "add"]}}, actor=actor)
    with pytest.raises(Forbidden, match=r"'\*'"):
        roles.create_role(first.org, "everything", {"tools": {"*": ["*"]}}, actor=actor)
    role = roles.create_role(first.org, "echoers", {"tools": {"*": ["echo"]}}, actor=actor)
    with pytest.raises(Forbidden):
        roles.update_role(first.org, role.id, permissions={"tools": {"conn_x": ["*"]}}, actor=actor)
    # Nor by inviting someone in a role that holds more (the built-in member role has every tool).
    with pytest.raises(Forbidden):
        orgs.invite(first.org, "friend@example.com", "member", actor=actor)
    orgs.invite(first.org, "friend@example.com", "echoers", actor=actor)


def test_leaving_through_a_scoped_key_needs_the_scope_to_allow_it(first, admin):
    bob = orgs.create_user("bob@example.com", "a long enough password")
    orgs.add_member(first.org, bob, "member", actor=OPERATOR)
    _, narrow = api_keys.create_api_key(first.org, bob, "echo-only", scope=ECHO_ONLY, actor=OPERATOR)
    with pytest.raises(Forbidden, match="members.manage"):
        orgs.remove_member(first.org, bob, actor=through(narrow))
    _, plain = api_keys.create_api_key(first.org, bob, "plain", actor=OPERATOR)
    orgs.remove_member(first.org, bob, actor=through(plain))


def test_the_operator_still_makes_keys_and_orgs_as_before(first, admin):
    key, row = api_keys.create_api_key(first.org, admin, "cli", scope=ECHO_ONLY, actor=OPERATOR)
    assert key.startswith(row.prefix) and scope_layers(row.scope) == scope_layers(ECHO_ONLY)
    assert orgs.create_org("From The Shell", admin, actor=OPERATOR).slug == "from-the-shell"


def test_keys_stored_with_one_scope_document_keep_working(first, admin):
    """Keys made before scopes could stack hold one document, not a list."""
    _, row = api_keys.create_api_key(first.org, admin, "legacy", actor=OPERATOR)
    db.session.execute(sa.update(ApiKey).where(ApiKey.id == row.id).values(scope=ECHO_ONLY))
    db.session.commit()
    db.session.refresh(row)
    assert key_policy(first.org.id, row).allows("tools", "c", "echo")
    assert not key_policy(first.org.id, row).allows("tools", "c", "add")
    _, child = api_keys.create_api_key(first.org, admin, "child", actor=through(row))
    assert not key_policy(first.org.id, child).allows("tools", "c", "add")


# -- 8: write-only secrets were readable with connections.write ------------------------------

@pytest.fixture
def editor(first):
    """A member whose custom role holds only connections.read and connections.write."""
    roles.create_role(first.org, "connection-editor", {"manage": ["connections.read", "connections.write"]}, actor=OPERATOR)
    eve = orgs.create_user("eve@example.com", "a long enough password")
    orgs.add_member(first.org, eve, "connection-editor", actor=OPERATOR)
    _, key = api_keys.create_api_key(first.org, eve, "eve", actor=OPERATOR)
    return through(key)


@pytest.fixture
def guarded(first):
    # An address, not a name: members' changes are checked where the address resolves (no DNS here).
    return connections.create_connection(first.org, "crm", "https://1.1.1.1/mcp", {"X-Api-Key": OWNER_HEADER},
                                         secrets={"bearer": OWNER_TOKEN}, actor=OPERATOR)


def stored_fields(connection_id: str) -> list[str]:
    db.session.rollback()
    return sorted(db.session.scalars(sa.select(ConnectionSecret.field)
                                     .where(ConnectionSecret.connection_id == connection_id)))


@pytest.mark.parametrize("elsewhere", ["https://8.8.8.8/mcp", "http://1.1.1.1/mcp", "https://1.1.1.1:8443/mcp"])
def test_moving_a_connection_to_another_origin_drops_its_secrets(first, editor, guarded, elsewhere, published):
    moved, dropped = connections.update_connection(first.org, guarded.id, url=elsewhere, actor=editor)
    assert sorted(dropped) == ["bearer", "header:X-Api-Key"]
    assert stored_fields(guarded.id) == []
    assert clear_headers(moved) == [], "CONNECTION_TEST would send nothing of the owner's"
    assert published(first.org.id).connections[guarded.id].credentials == {}
    entry = db.session.scalars(sa.select(AdminAudit).where(AdminAudit.action == "connection.update")).one()
    assert entry.before["credentials"] == ["-bearer", "-header:X-Api-Key"]
    assert not find_secret(json.dumps([entry.before, entry.after]), OWNER_TOKEN)


def test_secrets_set_again_in_the_same_call_go_with_the_new_origin(first, editor, guarded):
    mine = "sk-live-editor-chosen-token-9z8y"
    moved, dropped = connections.update_connection(first.org, guarded.id, url="https://8.8.4.4/mcp",
                                                   secrets={"bearer": mine}, actor=editor)
    assert dropped == ["header:X-Api-Key"] and stored_fields(guarded.id) == ["bearer"]
    assert clear_headers(moved) == [("Authorization", f"Bearer {mine}")]


@pytest.mark.parametrize("same_origin", ["https://1.1.1.1/other/path", "https://1.1.1.1:443/mcp",
                                         "https://1.1.1.1/mcp?version=2"])
def test_a_url_on_the_same_origin_keeps_its_secrets(first, editor, guarded, same_origin):
    moved, dropped = connections.update_connection(first.org, guarded.id, url=same_origin, actor=editor)
    assert dropped == [] and stored_fields(guarded.id) == ["bearer", "header:X-Api-Key"]
    assert ("Authorization", f"Bearer {OWNER_TOKEN}") in clear_headers(moved)


def test_a_secret_sealed_for_one_origin_never_opens_for_another(first, guarded, published):
    """Whatever path changes the URL (here: the database itself), the old secret does not open."""
    db.session.execute(sa.update(Connection).where(Connection.id == guarded.id)
                       .values(url="https://attacker.example/mcp"))
    db.session.commit()
    db.session.refresh(guarded)
    result = connections.test_connection(first.org, guarded.id, actor=OPERATOR)[1]
    assert not result.ok and "set them again" in result.error
    connections.update_connection(first.org, guarded.id, name="crm2", actor=OPERATOR)
    route = published(first.org.id).connections[guarded.id]
    assert route.status == "broken" and route.credentials == {}


def test_a_connection_whose_stored_url_names_no_origin_can_still_be_given_a_new_one(first, guarded):
    db.session.execute(sa.update(Connection).where(Connection.id == guarded.id).values(url="not a url"))
    db.session.commit()
    moved, dropped = connections.update_connection(first.org, guarded.id, url="https://crm.example/mcp", actor=OPERATOR)
    assert sorted(dropped) == ["bearer", "header:X-Api-Key"] and stored_fields(guarded.id) == []
    assert moved.url == "https://crm.example/mcp"


def test_a_stdio_connection_has_no_url_to_move(first):
    from control_plane.services import bridged_connections

    conn = bridged_connections.create_stdio_connection(first.org, "cmd", "true", [], {"env:TOKEN": OWNER_TOKEN}, actor=OPERATOR)
    with pytest.raises(InvalidInput, match="no URL"):
        connections.update_connection(first.org, conn.id, url="https://attacker.example/mcp", actor=OPERATOR)
    assert stored_fields(conn.id) == ["env:TOKEN"]


# -- 9: account enumeration and forced membership --------------------------------------------

@pytest.fixture
def org_admin(first):
    kim = orgs.create_user("kim@example.com", "a long enough password")
    orgs.add_member(first.org, kim, "admin", actor=OPERATOR)
    _, key = api_keys.create_api_key(first.org, kim, "kim", actor=OPERATOR)
    return through(key)


def test_over_the_network_nobody_is_made_a_member_without_accepting(first, org_admin):
    sam = orgs.create_user("sam@example.com", "a long enough password")
    with pytest.raises(Forbidden, match="invitation"):
        orgs.add_member(first.org, sam, "member", actor=org_admin)
    orgs.invite(first.org, "sam@example.com", "member", actor=org_admin)
    assert db.session.scalar(sa.select(Member).where(Member.user_id == sam.id)) is None
    # The operator (`mesh members add`) still adds directly.
    assert orgs.add_member(first.org, sam, "member", actor=OPERATOR).user_id == sam.id


def test_an_invitation_is_written_to_the_outbox_and_its_token_to_no_log(first, org_admin, settings, caplog):
    caplog.set_level(logging.DEBUG)
    token = orgs.invite(first.org, "newcomer@example.com", "member", actor=org_admin)
    outbox = settings.data_dir / "outbox"
    files = list(outbox.iterdir())
    assert len(files) == 1 and token in files[0].read_text() and "To: newcomer@example.com" in files[0].read_text()
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600 and stat.S_IMODE(outbox.stat().st_mode) == 0o700
    assert "newcomer@example.com" in caplog.text and not find_secret(caplog.text, token)


def test_inviting_answers_alike_whether_or_not_the_address_has_an_account(first, org_admin, settings):
    orgs.create_user("known@example.com", "a long enough password")
    for email in ("known@example.com", "unknown@example.com", "admin@localhost"):  # a user, nobody, a member
        token = orgs.invite(first.org, email, "member", actor=org_admin)
        assert token.startswith("inv_")
    assert len(list((settings.data_dir / "outbox").iterdir())) == 3
    assert count(Member) == 2  # the admin and kim: nobody joined by being invited


# -- masks -------------------------------------------------------------------------------------

def test_masks_show_at_most_the_last_4_characters(first):
    conn = connections.create_connection(first.org, "api", "https://api.example/mcp", {"X-Short": "fifteen-chars-x"},
                                         secrets={"bearer": OWNER_TOKEN}, actor=OPERATOR)
    from control_plane.presenters import connection as present

    assert present(conn)["credentials"] == {"bearer": "…a1b2", "header:X-Short": "…"}


def test_credentials_in_a_url_query_are_masked_wherever_the_url_is_shown(first, admin):
    from control_plane.management.tools import connection_out

    url = f"https://api.example/mcp?api_key={QUERY_SECRET}&region=eu"
    conn = connections.create_connection(first.org, "query", url, actor=OPERATOR)
    assert connection_out(conn)["url"] == "https://api.example/mcp?api_key=…&region=…"
    connections.update_connection(first.org, conn.id, url=url + "&v=2", actor=OPERATOR)
    trail = json.dumps([[e.before, e.after] for e in db.session.scalars(sa.select(AdminAudit))])
    assert "api.example" in trail and not find_secret(trail, QUERY_SECRET)
    with pytest.raises(InvalidInput) as caught:
        connections.create_connection(first.org, "bad", f"ftp://api.example/mcp?api_key={QUERY_SECRET}", actor=OPERATOR)
    assert "api.example" in str(caught.value) and QUERY_SECRET not in str(caught.value)
    # Searching cannot read a masked value back one character at a time.
    assert connections.page_connections(first.org, search=QUERY_SECRET[:8], actor=OPERATOR)[0] == []
    assert [c.id for c in connections.page_connections(first.org, search="api.example/mcp?api_key", actor=OPERATOR)[0]] == [conn.id]
    assert url_origin(conn.url) == "https://api.example:443"
