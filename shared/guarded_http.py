"""An ``httpx2`` client for calls to upstreams from outside the data plane (the control plane's
``CONNECTION_TEST``, the bridge's legacy-SSE client) whose every connection goes only where
``shared.upstream_addresses`` allows.

The upstream's name is resolved here, every address it resolves to is checked, and the TCP
connection is made to a checked address: DNS cannot answer one thing to the check and another to
the connect. TLS still verifies the certificate against the name (``httpcore`` passes the URL's
host as the server name). No proxy from the environment is used: a proxy would connect on the
client's behalf, to an address nobody checked.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpcore2
import httpx2

from shared.upstream_addresses import AddressRefused, AddressRules, literal_address, resolve

# How a refusal of ours begins, for callers that describe failures (``connection_probe.reason``).
NAME_NOT_RESOLVED = "name not resolved"
ADDRESS_REFUSED = "address not allowed"


class CheckedNetworkBackend(httpcore2.AsyncNetworkBackend):
    def __init__(self, rules: AddressRules, private_ok: bool) -> None:
        self.rules = rules
        self.private_ok = private_ok
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options=None) -> httpcore2.AsyncNetworkStream:
        literal = literal_address(host)
        try:
            addresses = [literal] if literal is not None else await anyio.to_thread.run_sync(resolve, host, port)
        except OSError:
            raise httpcore2.ConnectError(f"{NAME_NOT_RESOLVED}: {host}") from None
        try:
            self.rules.check(addresses, port, private_ok=self.private_ok)
        except AddressRefused as refused:
            raise httpcore2.ConnectError(f"{ADDRESS_REFUSED}: {refused}") from None
        return await self._inner.connect_tcp(str(addresses[0]), port, timeout, local_address, socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options=None) -> httpcore2.AsyncNetworkStream:
        raise httpcore2.ConnectError("upstreams are reached over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_client(rules: AddressRules, private_ok: bool, **client_options: Any) -> httpx2.AsyncClient:
    """An ``httpx2.AsyncClient`` (``client_options`` as for it) that connects only where allowed."""
    transport = httpx2.AsyncHTTPTransport(trust_env=False)
    # httpx2 takes no network backend of its own; its pool does (tests pin this).
    transport._pool._network_backend = CheckedNetworkBackend(rules, private_ok)
    return httpx2.AsyncClient(transport=transport, trust_env=False, **client_options)
