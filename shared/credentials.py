"""What a connection's credentials are, for both planes: their field names, the envelope
contexts they are sealed under, the headers each one becomes, and the masks shown instead of
them (of a secret, and of a URL's query string).

Fields (one secret each; the field name is bound into the envelope's associated data):

- ``bearer``         → ``Authorization: Bearer <value>``
- ``basic``          → ``Authorization: Basic base64(<user:password>)``; the value is ``user:password``
- ``header:<Name>``  → ``<Name>: <value>`` (e.g. ``header:X-API-Key``)
- ``env:<NAME>``     → an environment variable for stdio servers (not sent as a header)

The same field is sealed twice in its life: under the master key in the database (purpose
``vault``) and under the data-plane key in a snapshot (purpose ``delivery``). The two contexts
differ, so neither record can stand in for the other.

Both contexts also bind the connection's **origin** (``upstream_origin``: ``https://host:443``, or
``stdio`` for a command): a secret sealed for one upstream cannot be opened once the
connection points at another scheme, host or port, so a changed URL never receives an old
secret, whatever path changed it.

Nothing here encrypts (``shared.envelope`` does) and nothing here logs.
"""

from __future__ import annotations

import base64
from urllib.parse import urlsplit, urlunsplit

from shared.envelope import SealContext
from shared.vocabulary import Transport

BEARER = "bearer"
BASIC = "basic"
HEADER_PREFIX = "header:"
ENV_PREFIX = "env:"
VAULT = "vault"
DELIVERY = "delivery"
STDIO_ORIGIN = "stdio"
DEFAULT_PORTS = {"http": 80, "https": 443}


def header_field(name: str) -> str:
    return HEADER_PREFIX + name


def env_field(name: str) -> str:
    return ENV_PREFIX + name


def field_kind(field: str) -> tuple[str, str]:
    """``("header", "X-API-Key")``, ``("env", "TOKEN")``, ``("bearer", "")`` or ``("basic", "")``."""
    if field.startswith(HEADER_PREFIX):
        return "header", field[len(HEADER_PREFIX):]
    if field.startswith(ENV_PREFIX):
        return "env", field[len(ENV_PREFIX):]
    if field in (BEARER, BASIC):
        return field, ""
    raise ValueError(f"unknown credential field {field!r}")


def sets_authorization(field: str) -> bool:
    kind, name = field_kind(field)
    return kind in (BEARER, BASIC) or (kind == "header" and name.lower() == "authorization")


def upstream_origin(scheme: str, host: str, port: int | None) -> str:
    """The canonical origin a secret is bound to: ``https://host:443`` (lowercase, the port
    always written, the scheme's default when none is given). Raises ``ValueError`` for a
    scheme without a default port when none is given."""
    scheme, host = scheme.lower(), host.lower()
    if port is None:
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"no default port for scheme {scheme!r}")
        port = DEFAULT_PORTS[scheme]
    if ":" in host:  # an IPv6 literal, as urlsplit gives it (without brackets)
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def url_origin(url: str) -> str:
    """``upstream_origin`` of a URL. Raises ``ValueError`` for one without a usable host or port."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError("the URL has no host")
    return upstream_origin(parts.scheme, parts.hostname, parts.port)


def route_origin(transport: str, url: str) -> str:
    """The origin of a connection (``transport`` and ``url`` as a connection or snapshot route
    holds them): ``stdio`` for a command, else its URL's."""
    return STDIO_ORIGIN if transport == Transport.STDIO else url_origin(url)


def vault_context(org_id: str, connection_id: str, field: str, *, origin: str) -> SealContext:
    return SealContext(VAULT, org_id, connection_id, field, origin)


def delivery_context(org_id: str, connection_id: str, field: str, *, origin: str) -> SealContext:
    return SealContext(DELIVERY, org_id, connection_id, field, origin)


def header_for(field: str, value: str) -> tuple[str, str] | None:
    """The header a credential becomes on the way upstream; ``None`` for environment variables."""
    kind, name = field_kind(field)
    if kind == BEARER:
        return "Authorization", f"Bearer {value}"
    if kind == BASIC:
        return "Authorization", "Basic " + base64.b64encode(value.encode()).decode()
    if kind == "header":
        return name, value
    return None


MASK = "…"
MASK_MIN_LENGTH = 16  # shorter secrets show nothing of themselves
MASK_SHOWN = 4        # longer ones at most their last 4 characters


def mask_secret(value: str) -> str:
    """What listings show instead of a secret: ``…a1b2`` (its last 4 characters) for one of 16
    characters or more, ``…`` for anything shorter. A ``basic`` credential is masked whole
    (``user:password``): some services put the key itself in the user name."""
    if len(value) < MASK_MIN_LENGTH:
        return MASK
    return MASK + value[-MASK_SHOWN:]


def mask_url(url: str) -> str:
    """A URL as listings, logs, errors and the audit trail show it: every query value replaced
    by ``…`` (any of them may be a credential: ``?api_key=…``), a query item without a value
    masked whole, user information and fragment masked. Scheme, host, port, path and query
    names stay, so the URL can still be recognised. Something that does not parse as a URL
    shows nothing."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
    except ValueError:
        return MASK
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rpartition("@")[2]
    query = "&".join(_mask_query_item(item) for item in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, MASK if parts.fragment else ""))


def _mask_query_item(item: str) -> str:
    name, sep, value = item.partition("=")
    if not sep:
        return MASK if item else ""
    return f"{name}={MASK if value else ''}"


def open_delivered(org_id: str, connection_id: str, field: str, record, keyring, *, origin: str) -> str:
    """A credential as the data plane (or its bridge) received it, opened with the data-plane
    key, for the upstream at ``origin`` (``upstream_origin(scheme, host, port)``, or ``stdio``). Raises
    ``shared.envelope.EnvelopeError`` (saying why, never what) or ``ValueError``."""
    from shared.envelope import open_sealed

    return open_sealed(record, delivery_context(org_id, connection_id, field, origin=origin), keyring).decode()
