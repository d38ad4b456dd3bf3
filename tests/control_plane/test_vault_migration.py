"""Migration 0002_vault on each database: plaintext connection headers move into the vault,
sealed (and, from 0007_origin_bound_secrets on, bound to their connection's origin), and the
plaintext column is gone; a downgrade with the master key brings them back."""

from __future__ import annotations

import json

import pytest
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
        origin = "http://127.0.0.1:9"
        opened = {r.field: open_sealed(r.envelope, vault_context("org_1", "conn_1", r.field, origin=origin),
                                       keyring).decode()
                  for r in rows}
        assert opened == {"header:X-Api-Key": TOKEN, "header:X-Team": "blue-team-000"}
        assert rows[0].key_id == keyring.active and rows[0].hint == "…1d9e"
        # 0002, 0006_private_upstreams and 0007_origin_bound_secrets each change what a snapshot
        # holds, so each bumps the version.
        assert version == 6, "the org must be published again in each new snapshot shape"
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


class _ContextBefore0007:
    """The vault's associated data before 0007_origin_bound_secrets: no origin."""

    def __init__(self, org_id: str, connection_id: str, field: str):
        self.parts = ["vault", org_id, connection_id, field]

    def encode(self) -> bytes:
        return json.dumps(self.parts, separators=(",", ":")).encode()

    def describe(self) -> str:
        return f"{self.parts[3]} of {self.parts[2]}"


def test_0007_seals_every_secret_again_for_its_connections_origin(database_url, tmp_path):
    from shared.envelope import EnvelopeError, seal

    vault = Vault(Settings.from_env(tmp_path / "data", env={"DATABASE_URL": database_url}))
    keyring = vault.master_keyring()
    engine = sa.create_engine(Settings.from_env(tmp_path, env={"DATABASE_URL": database_url}).database_url)
    secrets = {("conn_http", "bearer"): TOKEN + "-long-enough", ("conn_cmd", "env:API_KEY"): "short-env"}
    try:
        upgrade(engine, "0006_private_upstreams")  # the revision before 0007
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO organizations (id, name, slug, policy_version, created_at, updated_at) "
                                 "VALUES ('org_1', 'One', 'one', 7, '2026-01-01', '2026-01-01')"))
            for cid, url, transport in (("conn_http", "HTTPS://Api.Example/mcp?x=1", "http"),
                                        ("conn_cmd", "", "stdio"), ("conn_bad", "http://127.0.0.1:9/mcp", "http")):
                conn.execute(sa.text("INSERT INTO connections (id, org_id, name, url, transport, status, created_at, "
                                     "updated_at) VALUES (:id, 'org_1', :id, :url, :t, 'active', '2026-01-01', "
                                     "'2026-01-01')"), {"id": cid, "url": url, "t": transport})
            rows = [(cid, field, seal(value.encode(), _ContextBefore0007("org_1", cid, field), keyring).to_json(),
                     "sk-…a1b2") for (cid, field), value in secrets.items()]
            rows.append(("conn_bad", "bearer", '{"v": 1, "damaged": true}', "tok…9999"))  # cannot be opened
            for cid, field, envelope, hint in rows:
                conn.execute(sa.text("INSERT INTO connection_secrets (id, org_id, connection_id, field, envelope, "
                                     "key_id, hint, created_at, updated_at) VALUES (:id, 'org_1', :cid, :field, "
                                     ":envelope, :kid, :hint, '2026-01-01', '2026-01-01')"),
                             {"id": f"sec_{cid}", "cid": cid, "field": field, "envelope": envelope,
                              "kid": keyring.active, "hint": hint})

        upgrade(engine, master_keyring=vault.master_keyring)
        assert is_current(engine)
        with engine.connect() as conn:
            after = {r.connection_id: r for r in conn.execute(sa.text(
                "SELECT connection_id, field, envelope, hint FROM connection_secrets"))}
            version = conn.execute(sa.text("SELECT policy_version FROM organizations")).scalar()
        origins = {"conn_http": "https://api.example:443", "conn_cmd": "stdio"}
        for (cid, field), value in secrets.items():
            now = vault_context("org_1", cid, field, origin=origins[cid])
            assert open_sealed(after[cid].envelope, now, keyring).decode() == value
            with pytest.raises(EnvelopeError):  # the old, origin-less context no longer opens it
                open_sealed(after[cid].envelope, _ContextBefore0007("org_1", cid, field), keyring)
        assert after["conn_http"].hint == "…" + secrets[("conn_http", "bearer")][-4:]
        assert after["conn_cmd"].hint == "…"  # under 16 characters: nothing shown
        assert after["conn_bad"].envelope == '{"v": 1, "damaged": true}' and after["conn_bad"].hint == "…"
        assert version == 8, "every org is published again"

        downgrade(engine, "0005_admin_audit", master_keyring=vault.master_keyring)
        with engine.connect() as conn:
            back = {r.connection_id: r.envelope for r in conn.execute(sa.text(
                "SELECT connection_id, envelope FROM connection_secrets"))}
        for (cid, field), value in secrets.items():
            assert open_sealed(back[cid], _ContextBefore0007("org_1", cid, field), keyring).decode() == value
    finally:
        engine.dispose()
