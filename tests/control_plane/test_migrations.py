from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from control_plane.migrate import is_current, upgrade
from control_plane.models import db


def test_migrations_build_exactly_the_schema_the_models_describe(app):
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        assert compare_metadata(context, db.metadata) == []


def test_migrating_twice_changes_nothing(app):
    assert is_current(db.engine)
    upgrade(db.engine)
    assert is_current(db.engine)
    tables = set(sa.inspect(db.engine).get_table_names())
    assert {"users", "organizations", "members", "connections", "api_keys", "alembic_version"} <= tables
