"""The database matrix: every control-plane test runs on SQLite, PostgreSQL and MariaDB, each on
a fresh database that is dropped afterwards."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from control_plane.app import create_app
from control_plane.migrate import upgrade
from control_plane.models import db
from control_plane.settings import Settings, normalize_database_url
from tests.conftest import unavailable
from tests.support import published_snapshot

SERVERS = {
    "postgresql": os.environ.get("MESH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
    "mariadb": os.environ.get("MESH_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/test"),
}


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def database_url(request, tmp_path):
    kind = request.param
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'mesh.db'}"
        return
    server = make_url(normalize_database_url(SERVERS[kind]))
    name = f"mesh_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    except sa.exc.OperationalError:
        admin.dispose()
        unavailable(f"{kind} at {server.render_as_string(hide_password=True)}")
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if kind == "postgresql" else ""
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}{force}"))
        admin.dispose()


@pytest.fixture
def settings(database_url, redis_url, bus_prefix, tmp_path) -> Settings:
    return Settings.from_env(tmp_path / "data", env={
        "DATABASE_URL": database_url, "REDIS_URL": redis_url, "MESH_REDIS_PREFIX": bus_prefix,
    })


@pytest.fixture
def app(settings):
    engine = sa.create_engine(settings.database_url)
    upgrade(engine)
    engine.dispose()
    app = create_app(settings)
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def published(app, redis_client, bus_prefix):
    """``published(org_id)``: the org's snapshot as the data plane reads it from Redis."""
    keyring = app.extensions["mesh.vault"].dataplane_keyring
    return lambda org_id: published_snapshot(redis_client, bus_prefix, org_id, keyring())
