"""The credential vault in the control plane, on each database and the real Redis: secrets are
sealed at rest, masked on the way out, delivered sealed for the data plane, and a damaged one
breaks its own connection only."""

from __future__ import annotations

import json
import logging
import os
import stat

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from control_plane.cli import main
from control_plane.models import ConnectionSecret, db
from control_plane.services import commit_and_publish, connections, org_changed, orgs
from control_plane.services.actors import OPERATOR
from control_plane.services.errors import InvalidInput
from control_plane.services.secrets import set_secrets
from control_plane.vault_keys import read_keyring_file
from shared.credentials import delivery_context, url_origin, vault_context
from shared.envelope import AuthenticationFailed, EnvelopeError, Keyring, open_sealed
from tests.secret_scan import database_dump, find_secret, redis_dump

BEARER = "sk-live-0123456789abcdef-a1b2"
HEADER = "hdr-9f8e7d6c5b4a39281706-x"
PASSWORD = "pw-correct-horse-battery-staple"


@pytest.fixture
def first(app):
    return orgs.bootstrap_first_run()


def vault(app):
    return app.extensions["mesh.vault"]


def stored(connection_id: str) -> dict[str, ConnectionSecret]:
    db.session.rollback()  # a fresh transaction: MariaDB (repeatable read) would show an old snapshot
    return {row.field: row for row in db.session.scalars(
        sa.select(ConnectionSecret).where(ConnectionSecret.connection_id == connection_id))}


def damage(connection_id: str, field: str, part: str) -> None:
    """Flip one bit of one part of a stored record, the way a bad disk or a meddler would."""
    row = stored(connection_id)[field]
    doc = json.loads(row.envelope)
    raw = bytearray(_unb64(doc[part]))
    raw[len(raw) // 2] ^= 0x01
    doc[part] = _b64(bytes(raw))
    db.session.execute(sa.update(ConnectionSecret).where(ConnectionSecret.id == row.id)
                       .values(envelope=json.dumps(doc)))
    db.session.commit()


def republish(org) -> None:
    org_changed(org.id)
    commit_and_publish(org.id)


def _b64(data: bytes) -> str:
    import base64
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    import base64
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_secrets_are_sealed_in_the_database_and_listed_only_as_masks(app, first):
    conn = connections.create_connection(first.org, "api", "http://127.0.0.1:9/mcp", {"X-Api-Key": HEADER},
                                         secrets={"bearer": BEARER}, actor=OPERATOR)
    rows = stored(conn.id)
    assert set(rows) == {"bearer", "header:X-Api-Key"}
    assert rows["bearer"].hint == "…a1b2"
    assert rows["bearer"].key_id == vault(app).master_keyring().active
    for field, value in (("bearer", BEARER), ("header:X-Api-Key", HEADER)):
        assert value not in rows[field].envelope
        assert vault(app).open_secret(first.org.id, conn.id, field, rows[field].envelope,
                                      origin=url_origin(conn.url)) == value


def test_the_snapshot_carries_credentials_sealed_for_the_data_plane_only(app, first, published):
    conn = connections.create_connection(first.org, "api", "http://127.0.0.1:9/mcp", secrets={"bearer": BEARER}, actor=OPERATOR)
    route = published(first.org.id).connections[conn.id]
    assert route.status == "active" and set(route.credentials) == {"bearer"}
    sealed = route.credentials["bearer"]
    assert BEARER not in sealed
    dataplane = vault(app).dataplane_keyring()
    origin = url_origin(conn.url)
    delivered_here = delivery_context(first.org.id, conn.id, "bearer", origin=origin)
    assert open_sealed(sealed, delivered_here, dataplane).decode() == BEARER
    with pytest.raises(EnvelopeError):  # the master key cannot open the delivery copy
        open_sealed(sealed, delivered_here, vault(app).master_keyring())
    with pytest.raises(EnvelopeError):  # nor can it pass for the stored copy
        open_sealed(sealed, vault_context(first.org.id, conn.id, "bearer", origin=origin), dataplane)


def test_no_plaintext_of_a_secret_is_in_any_redis_key_or_database_row(app, first, settings, redis_client, bus_prefix):
    env = {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
           "MESH_REDIS_PREFIX": settings.redis_prefix, "UPSTREAM_TOKEN": HEADER}
    runner = CliRunner()
    base = ["--data-dir", str(settings.data_dir)]
    added = runner.invoke(main, [*base, "connections", "add", "--name", "cli", "--url", "http://127.0.0.1:9/mcp",
                                 "--bearer", "-", "--header-env", "X-Api-Key: UPSTREAM_TOKEN", "--json"],
                          env=env, input=BEARER + "\n")
    assert added.exit_code == 0, added.output
    conn_id = json.loads(added.output)["id"]
    assert runner.invoke(main, [*base, "connections", "add", "--name", "basic", "--url", "http://127.0.0.1:9/mcp",
                                "--basic-env", "BASIC"], env={**env, "BASIC": f"svc:{PASSWORD}"}).exit_code == 0
    listing = runner.invoke(main, [*base, "connections", "list", "--json"], env=env).output
    shown = next(c for c in json.loads(listing) if c["id"] == conn_id)["credentials"]
    assert shown == {"bearer": "…a1b2", "header:X-Api-Key": "…06-x"}
    assert set(stored(conn_id)) == {"bearer", "header:X-Api-Key"}

    everything = {**{f"redis {k}": v for k, v in redis_dump(redis_client, bus_prefix).items()},
                  **{f"table {k}": v for k, v in database_dump(db.engine).items()}}
    assert any(k.endswith(":snapshots") for k in everything) and "table connection_secrets" in everything
    for where, blob in everything.items():
        for secret in (BEARER, HEADER, PASSWORD, f"svc:{PASSWORD}"):
            assert not find_secret(blob, secret), f"{find_secret(blob, secret)} of a secret found in {where}"
    for output in (added.output, listing):
        assert not any(find_secret(output, s) for s in (BEARER, HEADER, PASSWORD))


def test_set_secret_replaces_removes_and_never_prints_values(app, first, settings):
    conn = connections.create_connection(first.org, "api", "http://127.0.0.1:9/mcp", {"x-api-key": "old-value-000000"}, actor=OPERATOR)
    env = {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
           "MESH_REDIS_PREFIX": settings.redis_prefix}
    runner = CliRunner()
    base = ["--data-dir", str(settings.data_dir)]
    result = runner.invoke(main, [*base, "connections", "set-secret", "api", "--header", f"X-Api-Key: {HEADER}",
                                  "--basic", f"svc:{PASSWORD}", "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.output)["credentials"]) == {"header:X-Api-Key", "basic"}  # x-api-key was replaced
    assert HEADER not in result.output and PASSWORD not in result.output
    assert json.loads(result.output)["credentials"]["basic"] == "…" + PASSWORD[-4:]  # user and password masked whole
    result = runner.invoke(main, [*base, "connections", "set-secret", conn.id, "--remove", "basic"], env=env)
    assert result.exit_code == 0 and set(stored(conn.id)) == {"header:X-Api-Key"}
    missing = runner.invoke(main, [*base, "connections", "set-secret", conn.id, "--remove", "bearer"], env=env)
    assert missing.exit_code != 0 and "no secret 'bearer'" in missing.output


@pytest.mark.parametrize("secrets, says", [
    ({"bearer": BEARER, "basic": f"svc:{PASSWORD}"}, "only one of bearer, basic"),
    ({"bearer": BEARER, "header:authorization": f"Token {HEADER}"}, "only one of bearer, basic"),
    ({"bearer": f"two {BEARER}"}, "whitespace"),
    ({"basic": PASSWORD}, "USER:PASSWORD"),
    ({"header:X-Api-Key": f"{HEADER}\r\nX-Evil: 1"}, "control characters"),
    ({"header:Host": HEADER}, "cannot be a connection header"),
    ({"header:Mcp-Session-Id": HEADER}, "cannot be a connection header"),
    ({"env:1BAD": HEADER}, "not an environment variable name"),
    ({"header:X-Api-Key": ""}, "empty"),
])
def test_unusable_secrets_are_refused_without_repeating_them(app, first, secrets, says):
    conn = connections.create_connection(first.org, "api", "http://127.0.0.1:9/mcp", actor=OPERATOR)
    with pytest.raises(InvalidInput) as caught:
        set_secrets(first.org, conn, secrets, actor=OPERATOR)
    assert says in str(caught.value)
    assert not any(find_secret(str(caught.value), s) for s in (BEARER, HEADER, PASSWORD))
    assert stored(conn.id) == {}


def test_a_header_without_a_colon_is_refused_without_echoing_it(app, first, settings):
    result = CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "connections", "add", "--name", "x",
                                       "--url", "http://127.0.0.1:9/mcp", "--header", BEARER],
                                env={"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
                                     "MESH_REDIS_PREFIX": settings.redis_prefix})
    assert result.exit_code != 0 and "Name: value" in result.output and BEARER not in result.output


@pytest.mark.parametrize("part", ["ct", "n", "wk", "wn"])
def test_a_damaged_secret_breaks_only_its_own_connection(app, first, part, caplog, published):
    hurt = connections.create_connection(first.org, "hurt", "http://127.0.0.1:9/mcp", secrets={"bearer": BEARER}, actor=OPERATOR)
    fine = connections.create_connection(first.org, "fine", "http://127.0.0.1:9/mcp", {"X-Api-Key": HEADER}, actor=OPERATOR)
    damage(hurt.id, "bearer", part)
    with caplog.at_level(logging.DEBUG):
        republish(first.org)
    routes = published(first.org.id).connections
    assert routes[hurt.id].status == "broken" and routes[hurt.id].credentials == {}
    assert routes[fine.id].status == "active" and set(routes[fine.id].credentials) == {"header:X-Api-Key"}
    failure = [r.getMessage() for r in caplog.records if hurt.id in r.getMessage()]
    assert failure and "failed authentication" in failure[0]
    assert not any(find_secret(caplog.text, s) for s in (BEARER, HEADER))
    with pytest.raises(AuthenticationFailed) as caught:
        vault(app).open_secret(first.org.id, hurt.id, "bearer", stored(hurt.id)["bearer"].envelope,
                               origin=url_origin(hurt.url))
    assert BEARER not in str(caught.value)


def test_envelopes_swapped_between_two_connections_open_for_neither(app, first, published):
    one = connections.create_connection(first.org, "one", "http://127.0.0.1:9/mcp", secrets={"bearer": BEARER}, actor=OPERATOR)
    two = connections.create_connection(first.org, "two", "http://127.0.0.1:9/mcp", secrets={"bearer": HEADER}, actor=OPERATOR)
    a, b = stored(one.id)["bearer"], stored(two.id)["bearer"]
    a_envelope, b_envelope = a.envelope, b.envelope
    db.session.execute(sa.update(ConnectionSecret).where(ConnectionSecret.id == a.id).values(envelope=b_envelope))
    db.session.execute(sa.update(ConnectionSecret).where(ConnectionSecret.id == b.id).values(envelope=a_envelope))
    db.session.commit()
    republish(first.org)
    routes = published(first.org.id).connections
    assert routes[one.id].status == routes[two.id].status == "broken"


def test_the_master_keyring_file_is_created_once_private_with_a_backup_warning(app, first, settings, caplog):
    path = settings.master_key_file
    assert not path.exists()
    with caplog.at_level(logging.WARNING):
        connections.create_connection(first.org, "api", "http://127.0.0.1:9/mcp", secrets={"bearer": BEARER}, actor=OPERATOR)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(settings.dataplane_key_file).st_mode) == 0o600
    assert "Back this file up" in caplog.text and str(path) in caplog.text
    ring = read_keyring_file(path)
    assert ring.active == vault(app).master_keyring().active and len(ring.keys) == 1
    before = path.read_bytes()
    connections.create_connection(first.org, "more", "http://127.0.0.1:9/mcp", secrets={"bearer": BEARER}, actor=OPERATOR)
    assert path.read_bytes() == before


def test_rotation_moves_every_secret_under_a_new_key_and_the_old_key_opens_nothing(app, first, settings, published):
    from control_plane.rotation import rotate_master_key

    conns = [connections.create_connection(first.org, f"c{i}", "http://127.0.0.1:9/mcp",
                                           {"X-Api-Key": f"{HEADER}-{i}"}, secrets={"bearer": f"{BEARER}-{i}"}, actor=OPERATOR)
             for i in range(4)]
    old = vault(app).master_keyring()
    report = rotate_master_key(vault(app), batch_size=3, grace=0)
    assert report.rewrapped == 8 and report.retired_keys == [old.active] and not report.unreadable
    new = read_keyring_file(settings.master_key_file)
    assert set(new.keys) == {report.active_key} != {old.active}
    for conn in conns:
        for field, row in stored(conn.id).items():
            assert row.key_id == new.active
            context = vault_context(first.org.id, conn.id, field, origin=url_origin(conn.url))
            assert open_sealed(row.envelope, context, new).decode().endswith(conn.name[1:])
            with pytest.raises(EnvelopeError):
                open_sealed(row.envelope, context, old)
            forged = Keyring(new.active, {new.active: old.keys[old.active]})  # old key under the new id
            with pytest.raises(AuthenticationFailed):
                open_sealed(row.envelope, context, forged)
    republish(first.org)  # and the control plane still delivers them
    assert all(published(first.org.id).connections[c.id].status == "active" for c in conns)


def test_rotation_with_keys_from_the_environment_needs_the_previous_key_and_then_retires_it(app, first, settings):
    from control_plane.app import create_app
    from control_plane.rotation import rotate_master_key
    from control_plane.settings import Settings
    from control_plane.vault import Vault
    from control_plane.vault_keys import VaultKeyError
    from shared.envelope import encode_key, generate_key

    old_key, new_key = generate_key(), generate_key()
    env = {"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
           "MESH_REDIS_PREFIX": settings.redis_prefix, "ENCRYPTION_KEY": encode_key(old_key)}
    with create_app(Settings.from_env(settings.data_dir, env=env)).app_context():
        org = orgs.find_org(None)
        conn = connections.create_connection(org, "api", "http://127.0.0.1:9/mcp", secrets={"bearer": BEARER}, actor=OPERATOR)
        with pytest.raises(VaultKeyError) as caught:
            rotate_master_key(vault_of_current_app(), grace=0)
        assert "ENCRYPTION_KEY_PREVIOUS" in str(caught.value)
        during = Vault(Settings.from_env(settings.data_dir, env={
            **env, "ENCRYPTION_KEY": new_key.hex(), "ENCRYPTION_KEY_PREVIOUS": env["ENCRYPTION_KEY"]}))
        report = rotate_master_key(during, grace=0)
        assert report.rewrapped == 1 and report.from_environment and not report.unreadable
        after = Vault(Settings.from_env(settings.data_dir, env={**env, "ENCRYPTION_KEY": new_key.hex()}))
        origin = url_origin(conn.url)
        assert after.open_secret(org.id, conn.id, "bearer", stored(conn.id)["bearer"].envelope, origin=origin) == BEARER
        with pytest.raises(EnvelopeError):
            Vault(Settings.from_env(settings.data_dir, env=env)).open_secret(
                org.id, conn.id, "bearer", stored(conn.id)["bearer"].envelope, origin=origin)
        db.session.remove()
    assert not settings.master_key_file.exists(), "with ENCRYPTION_KEY no keyring file is written"


def vault_of_current_app():
    from flask import current_app
    return current_app.extensions["mesh.vault"]


def test_moving_from_the_keyring_file_to_encryption_key_is_a_rotation(app, first, settings):
    from control_plane.rotation import rotate_master_key, secrets_under_keys_not_held
    from control_plane.settings import Settings
    from control_plane.vault import Vault
    from shared.envelope import encode_key, generate_key

    conn = connections.create_connection(first.org, "api", "http://127.0.0.1:9/mcp", secrets={"bearer": BEARER}, actor=OPERATOR)
    file_ring = read_keyring_file(settings.master_key_file)
    new_key = encode_key(generate_key())
    only_new = Vault(Settings.from_env(settings.data_dir, env={"ENCRYPTION_KEY": new_key}))
    assert secrets_under_keys_not_held(only_new) == {file_ring.active: 1}, "what mesh up warns about"
    both = Vault(Settings.from_env(settings.data_dir, env={
        "ENCRYPTION_KEY": new_key, "ENCRYPTION_KEY_PREVIOUS": encode_key(file_ring.keys[file_ring.active])}))
    assert rotate_master_key(both, grace=0).rewrapped == 1
    assert secrets_under_keys_not_held(only_new) == {}
    assert only_new.open_secret(first.org.id, conn.id, "bearer", stored(conn.id)["bearer"].envelope,
                                origin=url_origin(conn.url)) == BEARER


def test_a_bad_encryption_key_is_refused_with_a_clear_message(app, first, settings):
    result = CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "connections", "add", "--name", "x",
                                       "--url", "http://127.0.0.1:9/mcp", "--bearer", BEARER],
                                env={"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
                                     "MESH_REDIS_PREFIX": settings.redis_prefix, "ENCRYPTION_KEY": "too-short"})
    assert result.exit_code != 0
    assert "ENCRYPTION_KEY must be 32 bytes" in result.output and "too-short" not in result.output
    assert "Traceback" not in result.output


def test_settings_never_show_the_keys_they_hold(tmp_path):
    from control_plane.settings import Settings

    held = Settings.from_env(tmp_path, env={"ENCRYPTION_KEY": "A" * 43 + "=", "MESH_DATAPLANE_KEY": "B" * 64,
                                                     "ENCRYPTION_KEY_PREVIOUS": "C" * 64})
    assert held.encryption_key and "AAAA" not in repr(held) and "BBBB" not in repr(held) and "CCCC" not in repr(held)


def test_vault_status_counts_secrets_by_key_and_names_the_broken_ones(app, first, settings):
    one = connections.create_connection(first.org, "one", "http://127.0.0.1:9/mcp", secrets={"bearer": BEARER}, actor=OPERATOR)
    connections.create_connection(first.org, "two", "http://127.0.0.1:9/mcp", {"X-Api-Key": HEADER}, actor=OPERATOR)
    damage(one.id, "bearer", "ct")
    result = CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "vault", "status", "--json"],
                                env={"DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
                                     "MESH_REDIS_PREFIX": settings.redis_prefix})
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["secrets_by_key"] == {vault(app).master_keyring().active: 2}
    assert status["unreadable"] == {f"{one.id} bearer": "AuthenticationFailed"}
    assert BEARER not in result.output and HEADER not in result.output
