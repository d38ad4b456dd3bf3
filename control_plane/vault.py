"""The control plane's side of the credential vault: sealing a connection's secrets under the
master key for the database, and, at publish time only, opening them and sealing them again
under the data-plane key for the snapshot (``deliver``).

A secret is in the clear in the control plane only for the moment between those two steps (or
when an admin sets it). A secret that cannot be opened (a damaged row, a retired key) makes its
connection ``broken`` in the snapshot: the data plane answers its calls with a clear error and
every other connection keeps working. The failure is logged with the connection and the field
name, never the value.

Must not: log values, return them to any caller but the compiler's delivery, or encrypt by any
means but ``shared.envelope``.
"""

from __future__ import annotations

import dataclasses
import logging

import sqlalchemy as sa
from sqlalchemy.orm import Session

from control_plane.settings import Settings
from control_plane.vault_keys import MasterKeys, dataplane_keyring
from shared.credentials import delivery_context, route_origin, vault_context
from shared.envelope import EnvelopeError, Keyring, SealedRecord, open_sealed, seal
from shared.snapshot import ConnectionRoute
from shared.vocabulary import BROKEN

log = logging.getLogger(__name__)



class Vault:
    def __init__(self, settings: Settings) -> None:
        self.master = MasterKeys(settings)
        self._settings = settings
        self._dataplane: Keyring | None = None

    def check(self) -> None:
        """Load both keys now (creating their files on a first run), so a bad key stops the
        process at start with a clear message rather than at the first publish."""
        self.master.keyring()
        self.dataplane_keyring()

    def master_keyring(self) -> Keyring:
        return self.master.keyring()

    def dataplane_keyring(self) -> Keyring:
        if self._dataplane is None:
            self._dataplane = dataplane_keyring(self._settings)
        return self._dataplane

    def seal_secret(self, org_id: str, connection_id: str, field: str, value: str, *, origin: str) -> SealedRecord:
        """``origin``: the connection's (``shared.credentials.route_origin``); the secret opens only
        while the connection still points there."""
        return seal(value.encode(), vault_context(org_id, connection_id, field, origin=origin), self.master.keyring())

    def open_secret(self, org_id: str, connection_id: str, field: str, envelope: str, *, origin: str) -> str:
        context = vault_context(org_id, connection_id, field, origin=origin)
        return open_sealed(envelope, context, self.master.keyring()).decode()

    def deliver(self, session: Session, org_id: str, routes: dict[str, ConnectionRoute]) -> dict[str, ConnectionRoute]:
        """The compiler's last step: each route with its secrets sealed for the data plane, or
        marked broken when one of them cannot be opened."""
        from control_plane.models import ConnectionSecret

        rows = session.scalars(sa.select(ConnectionSecret).where(ConnectionSecret.org_id == org_id)
                               .order_by(ConnectionSecret.connection_id, ConnectionSecret.field))
        by_connection: dict[str, list] = {}
        for row in rows:
            if row.connection_id in routes:
                by_connection.setdefault(row.connection_id, []).append(row)
        delivered = dict(routes)
        for connection_id, secrets in by_connection.items():
            credentials: dict[str, str] = {}
            route = routes[connection_id]
            try:
                origin = route_origin(route.transport, route.url)
            except ValueError:
                origin = None
            try:
                if origin is None:
                    raise EnvelopeError("its URL names no origin (scheme, host, port) to open its secrets for")
                for row in secrets:
                    value = self.open_secret(org_id, connection_id, row.field, row.envelope, origin=origin)
                    context = delivery_context(org_id, connection_id, row.field, origin=origin)
                    credentials[row.field] = seal(value.encode(), context, self.dataplane_keyring()).to_json()
            except EnvelopeError as error:
                log.error("connection %s is broken: %s. Set the secret again with `mesh connections set-secret`.",
                          connection_id, error)
                delivered[connection_id] = dataclasses.replace(routes[connection_id], status=BROKEN, credentials={})
                continue
            delivered[connection_id] = dataclasses.replace(routes[connection_id], credentials=credentials)
        return delivered
