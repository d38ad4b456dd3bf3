"""Inject: point the request at the connection's upstream, remove the caller's credentials (no
token passthrough, ever) and add the connection's own headers."""

from __future__ import annotations

from mitmproxy import http

from dataplane_addon.call import undecided_call

CALLER_CREDENTIALS = ("Authorization", "Cookie", "Proxy-Authorization")


class CredentialInjector:
    def request(self, flow: http.HTTPFlow) -> None:
        call = undecided_call(flow)
        if call is None or call.upstream is None:
            return
        upstream = call.upstream
        request = flow.request
        query = request.path.partition("?")[2]
        for name in CALLER_CREDENTIALS:
            request.headers.pop(name, None)
        request.anticomp()  # plain answers, so event streams can be inspected chunk by chunk
        request.scheme = upstream.scheme
        request.host = upstream.host  # also rewrites Host, which the upstream checks
        request.port = upstream.port
        joined = "&".join(q for q in (upstream.query, query) if q)
        request.path = upstream.path + ("?" + joined if joined else "")
        for name, value in upstream.headers:
            request.headers[name] = value
