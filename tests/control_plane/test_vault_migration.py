"""Migration 0002_vault on each database: plaintext connection headers move into the vault,
sealed, and the plaintext column is gone; a downgrade with the master key brings them back."""

from __future__ import annotations

import json

import sqlalchemy as sa

from control_plane.migrate import downgrade, is_current, upgrade
from control_plane.settings import Settings
from control_plane.vault import Vault
from shared.credentials import vault_context
from shared.envelope import open_sealed
from tests.secret_scan import database_dump, find_secret

TOKEN = "legacy-plaintext-token-7c1d9e"


def test_existing_plaintext_headers_are_sealed_into_the_vault(database_url, tmp_path):
    vault = Vault(Settings.from_env(tmp_path / "data", env={"DATABASE_URL": database_url}))
    engine = sa.create_engine(Settings.from_env(tmp_path, env={"DATABASE_URL": database_url}).database_url)
    try:
        upgrade(engine, "0001")
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO organizations (id, name, slug, policy_version, created_at, updated_at) "
                                 "VALUES ('org_1', 'One', 'one', 3, '2026-01-01', '2026-01-01')"))
            for cid, headers in (("conn_1", {"X-Api-Key": TOKEN, "X-Team": "blue-team-000"}), ("conn_2", {})):
                conn.execute(sa.text("INSERT INTO connections (id, org_id, name, url, transport, status, headers, "
                                     "created_at, updated_at) VALUES (:id, 'org_1', :id, 'http://127.0.0.1:9/mcp', "
                                     "'http', 'active', :headers, '2026-01-01', '2026-01-01')"),
                             {"id": cid, "headers": json.dumps(headers)})

        upgrade(engine, master_keyring=vault.master_keyring)
        assert is_current(engine)
        assert "headers" not in {c["name"] for c in sa.inspect(engine).get_columns("connections")}
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT connection_id, field, envelope, key_id, hint FROM connection_secrets "
                                        "ORDER BY field")).all()
            version = conn.execute(sa.text("SELECT policy_version FROM organizations")).scalar()
        assert [(r.connection_id, r.field) for r in rows] == [("conn_1", "header:X-Api-Key"),
                                                              ("conn_1", "header:X-Team")]
        keyring = vault.master_keyring()
        opened = {r.field: open_sealed(r.envelope, vault_context("org_1", "conn_1", r.field), keyring).decode()
                  for r in rows}
        assert opened == {"header:X-Api-Key": TOKEN, "header:X-Team": "blue-team-000"}
        assert rows[0].key_id == keyring.active and rows[0].hint == "leg…1d9e"
        # 0002 and 0006_private_upstreams each change the snapshot's shape, so each bumps the version.
        assert version == 5, "the org must be published again in the new snapshot shape"
        assert not any(find_secret(blob, TOKEN) for blob in database_dump(engine).values())

        downgrade(engine, "0001", master_keyring=vault.master_keyring)
        with engine.connect() as conn:
            headers = conn.execute(sa.text("SELECT headers FROM connections WHERE id = 'conn_1'")).scalar()
        restored = json.loads(headers) if isinstance(headers, str) else headers
        assert restored == {"X-Api-Key": TOKEN, "X-Team": "blue-team-000"}
    finally:
        engine.dispose()


def test_an_empty_database_migrates_without_touching_the_master_key(database_url, tmp_path):
    engine = sa.create_engine(Settings.from_env(tmp_path, env={"DATABASE_URL": database_url}).database_url)
    try:
        upgrade(engine)  # no keyring given, none needed
        assert is_current(engine)
    finally:
        engine.dispose()
    assert not (tmp_path / "data" / "mesh.key").exists()
