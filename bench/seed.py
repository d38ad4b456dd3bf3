"""A realistic installation for the gateway under test, made through the service layer (the
same functions ``mesh`` calls), so the data plane's look-ups run on indexes of a real size.

- org ``bench``: an owner, a member whose API key the load uses, the ``echo`` connection to the
  benchmark upstream, and filler connections and keys;
- ``FILLER_ORGS`` more orgs, each with ``PER_ORG`` connections and keys.

Publishing is switched off while seeding (one snapshot per org is enough, not one per row):
``mesh up``'s reconciler publishes every org when it starts.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa

from control_plane.settings import Settings

FILLER_ORGS = 10
PER_ORG = 30
# Nothing listens on the discard port; filler connections are only there to be looked past.
FILLER_URL = "http://127.0.0.1:9/mcp/{}"


@dataclass(frozen=True)
class SeededOrg:
    org_id: str
    member_email: str
    connection_id: str
    api_key: str
    orgs: int
    connections: int  # across all orgs
    api_keys: int


@contextmanager
def service_context(settings: Settings, publish: bool = True):
    """An app context for calling services against the gateway's database and Redis prefix."""
    from control_plane.app import create_app
    from control_plane.models import db

    app = create_app(settings)
    if not publish:
        app.extensions.pop("mesh.publisher")
    with app.app_context():
        try:
            yield app
        finally:
            db.session.remove()
            publisher = app.extensions.get("mesh.publisher")
            if publisher is not None:
                publisher.redis.close()
            db.engine.dispose()


def migrate(settings: Settings) -> None:
    from control_plane.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = sa.create_engine(settings.database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def seed(settings: Settings, upstream_url: str, filler_orgs: int = FILLER_ORGS, per_org: int = PER_ORG) -> SeededOrg:
    from control_plane.services.actors import OPERATOR
    from control_plane.services.api_keys import create_api_key
    from control_plane.services.connections import create_connection
    from control_plane.services.orgs import add_member, create_org, create_user

    migrate(settings)
    with service_context(settings, publish=False):
        owner = create_user("owner@bench.local", "bench-owner-password")
        member = create_user("client@bench.local", "bench-client-password")
        orgs = [create_org("Bench", owner, slug="bench", actor=OPERATOR)]
        orgs += [create_org(f"Filler {n}", owner, slug=f"filler-{n}", actor=OPERATOR) for n in range(filler_orgs)]
        add_member(orgs[0], member, role="member", actor=OPERATOR)
        echo = create_connection(orgs[0], "echo", upstream_url, actor=OPERATOR)
        api_key, _ = create_api_key(orgs[0], member, "bench-load", actor=OPERATOR)
        for org in orgs:
            for n in range(per_org):
                create_connection(org, f"filler-{n}", FILLER_URL.format(n), actor=OPERATOR)
                create_api_key(org, owner, f"filler-{n}", actor=OPERATOR)
        return SeededOrg(org_id=orgs[0].id, member_email=member.email, connection_id=echo.id, api_key=api_key,
                         orgs=len(orgs), connections=1 + len(orgs) * per_org, api_keys=1 + len(orgs) * per_org)
