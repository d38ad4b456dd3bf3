"""The Flask application factory. Nothing happens at import time; every process (gunicorn
workers, the CLI, tests) builds its own app from ``Settings``."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Flask, jsonify

from control_plane.models import db
from control_plane.publisher import SnapshotPublisher
from control_plane.services.errors import Conflict, Forbidden, InvalidInput, NotFound, ServiceError
from control_plane.settings import Settings
from control_plane.vault import Vault
from shared.bus import BusKeys


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=settings.database_url,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
        MESH_SETTINGS=settings,
    )
    db.init_app(app)
    with app.app_context():
        enforce_foreign_keys(db.engine)
    vault = Vault(settings)
    app.extensions["mesh.vault"] = vault
    app.extensions["mesh.address_rules"] = settings.address_rules()
    app.extensions["mesh.publisher"] = SnapshotPublisher.from_url(
        settings.redis_url, BusKeys(settings.redis_prefix), lambda: db.session, vault.dataplane_keyring, vault.deliver
    )

    from control_plane.api import api
    from web import web

    app.register_blueprint(api)
    app.register_blueprint(web)

    @app.errorhandler(ServiceError)
    def service_error(error: ServiceError):
        status = {NotFound: 404, Conflict: 409, InvalidInput: 400, Forbidden: 403}.get(type(error), 400)
        return jsonify(error=type(error).__name__, message=str(error)), status

    @app.errorhandler(500)
    def internal_error(_error):
        # Never a stack trace to a client; the log has it.
        return jsonify(error="internal_error", message="the control plane failed; see its log"), 500

    return app


def enforce_foreign_keys(engine: sa.Engine) -> None:
    """SQLite enforces foreign keys (and their ON DELETE CASCADE) only when each connection asks;
    the other databases always do. Only the application's engine asks: migrations run on their
    own engine, where SQLite's table rebuilds must not cascade."""
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", lambda connection, _record: connection.execute("PRAGMA foreign_keys=ON"))
