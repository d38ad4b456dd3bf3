"""Sessions: an ``Mcp-Session-Id`` issued by an upstream is bound to the API key that created it
(and to its connection), so no other caller can ride on it.

The binding is carried in the id itself, not stored: the client is given
``<upstream id>.<tag>``, where the tag is an HMAC of key, connection and upstream id under the
data plane's session secret. A request presenting an id is checked and the upstream's own id is
restored before forwarding; a wrong or foreign tag gets 404, the answer the protocol gives for
an unknown session (the client may start a new one). Data planes that share traffic share the
secret (``mesh up`` writes it to ``<data dir>/session.key``), and nothing needs to be looked up.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from mitmproxy import ctx, http

from dataplane_addon.call import CALL, rpc_answer, undecided_call
from shared.jsonrpc import SESSION_NOT_FOUND

SESSION_HEADER = "Mcp-Session-Id"


def session_tag(secret: bytes, key_id: str, connection_id: str, upstream_session: str) -> str:
    mac = hmac.new(secret, f"{key_id}\0{connection_id}\0{upstream_session}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:18]).decode()


class SessionBinding:
    def __init__(self) -> None:
        self.secret = os.urandom(32)

    def load(self, loader) -> None:
        # A file, not the secret itself: a command line is visible to every local user.
        loader.add_option("mesh_session_secret_file", str, "",
                          "File holding the hex secret that binds MCP sessions to callers; data planes sharing "
                          "traffic must share it. Empty: a random secret per process.")

    def configure(self, updated) -> None:
        if "mesh_session_secret_file" in updated and ctx.options.mesh_session_secret_file:
            from mitmproxy.exceptions import OptionsError

            path = ctx.options.mesh_session_secret_file
            try:
                with open(path) as handle:
                    self.secret = bytes.fromhex(handle.read().strip())
            except OSError as error:
                raise OptionsError(f"mesh_session_secret_file: cannot read {path} ({error.strerror})") from None
            except ValueError:
                raise OptionsError(f"mesh_session_secret_file: {path} must hold a hex secret") from None
            if len(self.secret) < 16:
                raise OptionsError(f"mesh_session_secret_file: the secret in {path} must be at least 16 bytes")

    def request(self, flow: http.HTTPFlow) -> None:
        call = undecided_call(flow)
        if call is None or call.upstream is None:
            return
        presented = flow.request.headers.get(SESSION_HEADER)
        if presented is None:
            return
        upstream_session, _, tag = presented.rpartition(".")
        expected = session_tag(self.secret, call.principal.key_id, call.upstream.connection_id, upstream_session)
        if not upstream_session or not hmac.compare_digest(tag, expected):
            flow.response = rpc_answer(404, SESSION_NOT_FOUND, "Session not found: start a new session",
                                       call.request_id)
            return
        flow.request.headers[SESSION_HEADER] = upstream_session

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        call = flow.metadata.get(CALL)
        if call is None or call.upstream is None or flow.response is None:
            return
        issued = flow.response.headers.get(SESSION_HEADER)
        if issued:
            tag = session_tag(self.secret, call.principal.key_id, call.upstream.connection_id, issued)
            flow.response.headers[SESSION_HEADER] = f"{issued}.{tag}"
