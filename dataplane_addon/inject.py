"""Inject: point the request at the connection's upstream, forward only the request headers MCP
needs (``FORWARDED_HEADERS``: never the caller's credentials, cookies, ``X-Forwarded-*``,
method overrides or anything else a server might act on), and add the connection's own
credentials.

The connection's credentials arrive in the snapshot sealed under the data-plane key
(``shared.credentials``); they are opened here, per call, only to set the header, and are not
kept: the clear value lives in this process only while the request carrying it is in flight.
Opening costs two AES-GCM decryptions of a few dozen bytes per credential (measured: about 23 µs
per credential, against 0.75 to 1.3 ms of proxy CPU per call), so there is no cache of opened
values to keep secrets in the clear longer.

A connection whose credentials cannot be opened (damaged, sealed for another data-plane key, or
published as ``broken`` by the control plane) is answered here with 503 and a JSON-RPC error that
names the connection and says what to do, and is logged once per snapshot without secret
material. Every other connection keeps working.

The data-plane key comes from ``MESH_DATAPLANE_KEY`` or the file named by the
``mesh_dataplane_key_file`` option (``shared.keys``; ``mesh up`` passes
``<data dir>/dataplane.key``). The master key is never here.
"""

from __future__ import annotations

import logging

from mitmproxy import ctx, http

from dataplane_addon.bridge.address import CALLER_HEADER
from dataplane_addon.call import rpc_answer, undecided_call
from dataplane_addon.plane_options import declare
from dataplane_addon.snapshot_store import Upstream
from shared.credentials import header_for, open_delivered, upstream_origin
from shared.envelope import EnvelopeError, Keyring, KeyFormatError
from shared.keys import load_dataplane_keyring
from shared.jsonrpc import CREDENTIALS_UNAVAILABLE
from shared.vocabulary import Status

log = logging.getLogger(__name__)

# Request headers of the caller's that reach the upstream, compared case-insensitively (plus
# ``Mcp-Param-*``, which mirror tool arguments). Everything else stays at the gateway. A POST's
# ``Content-Type`` and ``Content-Length`` are the gateway's own: its body is the JSON ``parse``
# wrote.
FORWARDED_HEADERS = frozenset(name.encode() for name in (
    "host", "accept", "user-agent",
    "mcp-protocol-version", "mcp-session-id", "mcp-method", "mcp-name", "last-event-id",
    "traceparent", "tracestate",
))
FORWARDED_PREFIXES = (b"mcp-param-",)


def forwarded_headers(request: http.Request) -> http.Headers:
    """The headers that go upstream with ``request`` (the connection's credentials come after)."""
    fields = [(name, value) for name, value in request.headers.fields
              if (lowered := name.lower()) in FORWARDED_HEADERS or lowered.startswith(FORWARDED_PREFIXES)]
    if request.method == "POST":
        fields += ((b"Content-Type", b"application/json"),
                   (b"Content-Length", str(len(request.raw_content or b"")).encode()))
    return http.Headers(fields)


class CredentialsUnavailable(Exception):
    """Why a connection's credentials cannot be injected. Never holds secret material."""


def credential_headers(upstream: Upstream, keyring: Keyring | None) -> list[tuple[str, str]]:
    """The headers the connection's credentials become, opened now."""
    if upstream.status != Status.ACTIVE:
        raise CredentialsUnavailable("the control plane could not open its secrets")
    if not upstream.credentials:
        return []
    if keyring is None:
        raise CredentialsUnavailable("this data plane holds no data-plane key")
    headers = []
    for field, record in upstream.credentials:
        try:
            value = open_delivered(upstream.org_id, upstream.connection_id, field, record, keyring,
                                   origin=upstream_origin(upstream.scheme, upstream.host, upstream.port))
        except (EnvelopeError, UnicodeDecodeError) as error:
            reason = error if isinstance(error, EnvelopeError) else "not text"
            raise CredentialsUnavailable(str(reason)) from None
        header = header_for(field, value)
        if header is not None:  # env: credentials are for stdio servers
            headers.append(header)
    return headers


class CredentialInjector:
    def __init__(self) -> None:
        self.keyring: Keyring | None = None
        self._reported: dict[str, Upstream] = {}  # connection id -> the snapshot's entry last logged as broken

    def load(self, loader) -> None:
        declare(loader, "mesh_dataplane_key_file")  # the bridge takes it too

    def configure(self, updated) -> None:
        if "mesh_dataplane_key_file" in updated:
            from mitmproxy.exceptions import OptionsError

            try:
                self.keyring = load_dataplane_keyring(ctx.options.mesh_dataplane_key_file)
            except KeyFormatError as error:
                raise OptionsError(str(error)) from None

    def request(self, flow: http.HTTPFlow) -> None:
        call = undecided_call(flow)
        if call is None or call.upstream is None:
            return
        upstream = call.upstream
        request = flow.request
        request.headers = forwarded_headers(request)
        try:
            headers = credential_headers(upstream, self.keyring)
        except CredentialsUnavailable as error:
            self._report(upstream, error)
            flow.response = rpc_answer(
                503, CREDENTIALS_UNAVAILABLE,
                f"Service unavailable: the credentials of connection {upstream.name!r} cannot be used; an admin "
                "must set them again (mesh connections set-secret)", call.request_id)
            return
        query = request.path.partition("?")[2]
        request.anticomp()  # plain answers, so event streams can be inspected chunk by chunk
        request.scheme = upstream.scheme
        request.host = upstream.host  # also rewrites Host, which the upstream checks
        request.port = upstream.port
        joined = "&".join(q for q in (upstream.query, query) if q)
        request.path = upstream.path + ("?" + joined if joined else "")
        for name, value in (*headers, *upstream.gateway_headers):
            request.headers[name] = value
        if upstream.internal:
            request.headers[CALLER_HEADER] = call.principal.key_id

    def _report(self, upstream: Upstream, error: CredentialsUnavailable) -> None:
        # Once per connection per snapshot: a broken connection under load must not flood the log.
        if self._reported.get(upstream.connection_id) is not upstream:
            self._reported[upstream.connection_id] = upstream
            log.error("connection %s (%s) is broken: %s", upstream.connection_id, upstream.name, error)
