"""Bearer API keys for the management server, checked against the database (the control plane
owns it; the data plane's snapshot is for proxied calls). Used through the `mcp` SDK's own
``TokenVerifier`` hook, so 401 answers and ``WWW-Authenticate`` come from the SDK."""

from __future__ import annotations

from datetime import UTC

import anyio
from flask import Flask
from mcp.server.auth.provider import AccessToken

from control_plane.models import ApiKey, db, usable_keys, utcnow
from shared.apikeys import hash_key


class ApiKeyVerifier:
    def __init__(self, app: Flask) -> None:
        self.app = app

    async def verify_token(self, token: str) -> AccessToken | None:
        return await anyio.to_thread.run_sync(self._lookup, token)

    def _lookup(self, token: str) -> AccessToken | None:
        with self.app.app_context():
            row = db.session.execute(usable_keys().where(ApiKey.key_hash == hash_key(token))).first()
            if row is None:
                return None
            key, _role = row
            if key.expires_at is not None and key.expires_at <= utcnow():
                return None
            return AccessToken(
                token=key.prefix,  # never the key itself: this object may be logged
                client_id=key.id,
                scopes=[],
                subject=key.user_id,
                expires_at=int(key.expires_at.replace(tzinfo=UTC).timestamp()) if key.expires_at else None,
                claims={"org_id": key.org_id, "scope": key.scope,
                        "expires_at": key.expires_at.isoformat() if key.expires_at else None},
            )
