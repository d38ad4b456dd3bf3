"""Migration 0008_unique_connection_names on each database: duplicate connection names in an org
(any case) are renamed ``name (2)``, ``name (3)``… with the oldest keeping its name, nothing else
of them changes, only the orgs concerned are published again, and the database refuses a
duplicate from then on."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from control_plane.migrate import upgrade
from control_plane.settings import Settings


def test_duplicate_names_are_renamed_oldest_first_and_then_refused(database_url, tmp_path):
    engine = sa.create_engine(Settings.from_env(tmp_path, env={"DATABASE_URL": database_url}).database_url)
    try:
        upgrade(engine, "0007_origin_bound_secrets")
        with engine.begin() as conn:
            for org in ("org_1", "org_2"):
                conn.execute(sa.text("INSERT INTO organizations (id, name, slug, policy_version, created_at, "
                                     "updated_at) VALUES (:id, :id, :id, 3, '2026-01-01', '2026-01-01')"),
                             {"id": org})
            rows = [("conn_a", "org_1", "docs", "2026-01-01 00:00:01"),
                    ("conn_b", "org_1", "Docs", "2026-01-01 00:00:02"),
                    ("conn_c", "org_1", "docs (2)", "2026-01-01 00:00:03"),
                    ("conn_d", "org_1", "docs", "2026-01-01 00:00:04"),
                    ("conn_e", "org_1", "wiki", "2026-01-01 00:00:05"),
                    ("conn_f", "org_2", "docs", "2026-01-01 00:00:06")]
            for cid, org, name, created in rows:
                conn.execute(sa.text("INSERT INTO connections (id, org_id, name, url, transport, status, allow_private, "
                                     "created_at, updated_at) VALUES (:id, :org, :name, 'http://127.0.0.1:9/mcp', "
                                     "'http', 'active', false, :created, :created)"),
                             {"id": cid, "org": org, "name": name, "created": created})
        upgrade(engine, "0008_unique_connection_names")
        with engine.connect() as conn:
            names = dict(conn.execute(sa.text("SELECT id, name FROM connections")).all())
            versions = dict(conn.execute(sa.text("SELECT id, policy_version FROM organizations")).all())
        assert names == {"conn_a": "docs", "conn_b": "Docs (3)", "conn_c": "docs (2)", "conn_d": "docs (4)",
                         "conn_e": "wiki", "conn_f": "docs"}
        assert versions == {"org_1": 4, "org_2": 3}
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO connections (id, org_id, name, url, transport, status, allow_private, "
                                 "created_at, updated_at) VALUES ('conn_g', 'org_2', 'docs', 'http://127.0.0.1:9/mcp', "
                                 "'http', 'active', false, '2026-01-02', '2026-01-02')"))
    finally:
        engine.dispose()
