"""Deleting a connection or an org deletes its sealed secrets in the same transaction, on every
database, so nothing outlives what it belonged to and key rotation never re-wraps a leftover; and
the database itself enforces foreign keys (SQLite too)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from control_plane.models import Connection, ConnectionSecret, db, new_id
from control_plane.rotation import rotate_master_key, vault_status
from control_plane.services import connections, orgs
from control_plane.services.actors import OPERATOR

BEARER = "sk-live-0123456789abcdef-a1b2"
HEADER = "hdr-9f8e7d6c5b4a39281706-x"


@pytest.fixture
def first(app):
    return orgs.bootstrap_first_run()


def secrets_of(**where) -> list[tuple[str, str]]:
    db.session.rollback()  # a fresh transaction: MariaDB (repeatable read) would show an old snapshot
    query = sa.select(ConnectionSecret.connection_id, ConnectionSecret.field).filter_by(**where)
    return sorted(tuple(row) for row in db.session.execute(query))


def with_secrets(org, name: str) -> Connection:
    return connections.create_connection(org, name, "http://127.0.0.1:9/mcp", {"X-Api-Key": HEADER},
                                         secrets={"bearer": BEARER}, actor=OPERATOR)


def test_deleting_a_connection_deletes_its_secrets_and_rotation_never_sees_them(app, first):
    gone, kept = with_secrets(first.org, "gone").id, with_secrets(first.org, "kept").id
    connections.delete_connection(first.org, gone, actor=OPERATOR)
    assert secrets_of(connection_id=gone) == []
    assert secrets_of(org_id=first.org.id) == [(kept, "bearer"), (kept, "header:X-Api-Key")]
    vault = app.extensions["mesh.vault"]
    assert sum(vault_status(vault).secrets_by_key.values()) == 2
    report = rotate_master_key(vault, grace=0)
    assert report.rewrapped == 2 and not report.unreadable


def test_deleting_an_org_deletes_every_secret_of_it_and_rotation_never_sees_them(app, first):
    other = orgs.create_org("Other", orgs.find_user("admin@localhost"), actor=OPERATOR)
    other_id, doomed = other.id, [with_secrets(other, "a").id, with_secrets(other, "b").id]
    kept = with_secrets(first.org, "kept").id
    orgs.delete_org(other, actor=OPERATOR)
    assert secrets_of(org_id=other_id) == []
    assert all(secrets_of(connection_id=c) == [] for c in doomed)
    assert [c for c, _ in secrets_of()] == [kept, kept]
    report = rotate_master_key(app.extensions["mesh.vault"], grace=0)
    assert report.rewrapped == 2 and not report.unreadable


def test_the_database_enforces_foreign_keys_and_their_cascades(app, first):
    conn = with_secrets(first.org, "api").id
    # A row pointing at no connection is refused, on SQLite as on the others.
    db.session.add(ConnectionSecret(id=new_id("sec"), org_id=first.org.id, connection_id="conn_missing",
                                    field="bearer", envelope="{}", key_id="k", hint="…"))
    with pytest.raises(sa.exc.IntegrityError):
        db.session.commit()
    db.session.rollback()
    # Removing a connection however it happens takes its secrets with it (ON DELETE CASCADE).
    db.session.execute(sa.delete(Connection).where(Connection.id == conn))
    db.session.commit()
    assert secrets_of(connection_id=conn) == []
