"""The control plane's HTTP API (``/api/...``), reached through the data plane's front door."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, jsonify

from control_plane.models import db

api = Blueprint("api", __name__, url_prefix="/api")


@api.get("/health")
def health():
    db.session.execute(sa.text("SELECT 1"))
    return jsonify(status="ok", plane="control")
