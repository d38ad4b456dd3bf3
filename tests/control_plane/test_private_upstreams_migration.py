"""Migration 0006_private_upstreams on each database: a connection keeps the right to reach
loopback and private addresses only if the operator set its URL last, as the admin audit trail
tells; everything else is held to the stricter rule, and every org is published again."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from control_plane.migrate import upgrade
from control_plane.settings import Settings


def test_only_connections_whose_url_the_operator_set_last_may_stay_on_private_addresses(database_url, tmp_path):
    engine = sa.create_engine(Settings.from_env(tmp_path, env={"DATABASE_URL": database_url}).database_url)
    try:
        upgrade(engine, "0005_admin_audit")
        url = "http://127.0.0.1:9/mcp"
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO organizations (id, name, slug, policy_version, created_at, updated_at) "
                                 "VALUES ('org_1', 'One', 'one', 3, '2026-01-01', '2026-01-01')"))
            for cid in ("conn_operator", "conn_member", "conn_moved", "conn_renamed", "conn_unknown"):
                conn.execute(sa.text("INSERT INTO connections (id, org_id, name, url, transport, status, created_at, "
                                     "updated_at) VALUES (:id, 'org_1', :id, :url, 'http', 'active', '2026-01-01', "
                                     "'2026-01-01')"), {"id": cid, "url": url})
            trail = [  # (actor, action, target, before, after), oldest first
                ("operator", "connection.create", "conn_operator", None, {"url": url}),
                ("usr_1", "connection.create", "conn_member", None, {"url": url}),
                ("operator", "connection.create", "conn_moved", None, {"url": "http://8.8.8.8/mcp"}),
                ("usr_1", "connection.update", "conn_moved", {"url": "http://8.8.8.8/mcp"}, {"url": url}),
                ("operator", "connection.create", "conn_renamed", None, {"url": url}),
                ("usr_1", "connection.update", "conn_renamed", {"url": url, "name": "a"}, {"url": url, "name": "b"}),
            ]
            audit = sa.table("admin_audit", *(sa.column(c) for c in ("id", "org_id", "actor", "action",
                                                                      "target_type", "target_id", "created_at")),
                             sa.column("before", sa.JSON), sa.column("after", sa.JSON))  # "before": a keyword
            conn.execute(audit.insert(), [
                {"id": f"aud_{n}", "org_id": "org_1", "actor": actor, "action": action, "target_type": "connections",
                 "target_id": target, "before": before, "after": after, "created_at": datetime(2026, 1, 1, 0, 0, n)}
                for n, (actor, action, target, before, after) in enumerate(trail)])
        upgrade(engine, "0006_private_upstreams")
        with engine.connect() as conn:
            allowed = dict(conn.execute(sa.text("SELECT id, allow_private FROM connections")).all())
            version = conn.execute(sa.text("SELECT policy_version FROM organizations")).scalar()
        assert {cid for cid, flag in allowed.items() if flag} == {"conn_operator", "conn_renamed"}
        assert version == 4
    finally:
        engine.dispose()
