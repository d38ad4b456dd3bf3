"""Where calls to upstreams may go: the one rule for every place that connects to an upstream (the
data plane, the bridge's legacy-SSE client, the control plane's ``CONNECTION_TEST``) and for the
check of a URL when a connection is registered.

The rule is applied to IP addresses, after resolution: a name is checked by every address it
resolves to, and the connection itself is checked by the address it actually reached, so neither
the spelling of an address (``2852039166``, ``0251.0376.0251.0376``, ``[::ffff:169.254.169.254]``)
nor a DNS answer that changes between the check and the connect (DNS rebinding) gets around it.

- **Never**: link-local addresses (``169.254.0.0/16``, where cloud metadata services answer;
  ``fe80::/10``), other known metadata addresses, the unspecified address, multicast, broadcast
  and reserved ranges; and the gateway's own ports on any address of its own host.
- **Only where allowed**: loopback and every other address that is not globally routable
  (private ranges, carrier-grade NAT, unique-local IPv6, …). A connection registered by the
  operator (the ``mesh`` command) may use them (``private_ok``); one registered through a
  network interface (management tools, UI) may use only those inside
  ``MESH_ALLOW_PRIVATE_UPSTREAMS`` (comma-separated CIDRs).

IPv6 forms that carry an IPv4 address (IPv4-mapped ``::ffff:0:0/96``, IPv4-compatible,
6to4 ``2002::/16``, NAT64 ``64:ff9b::/96``, Teredo) are judged by that IPv4 address as well.

Nothing here imports Flask, mitmproxy or an HTTP client.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Metadata services outside the link-local ranges (AWS over IPv6, Alibaba Cloud).
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class AddressRefused(Exception):
    """A connection to an upstream may not go where it points; the message says why, for people."""


def parse_networks(text: str | None) -> tuple[IPNetwork, ...]:
    """``"10.0.0.0/8, fd00::/8"`` → networks. Raises ``ValueError`` naming a bad entry."""
    networks = []
    for entry in (text or "").split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP network (expected CIDR notation such as 10.0.0.0/8)") from None
    return tuple(networks)


def carried_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (mapped, compatible, 6to4, NAT64, Teredo)."""
    if address.version == 4:
        return []
    carried = []
    if address.ipv4_mapped is not None:
        carried.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        carried.append(address.sixtofour)
    if address.teredo is not None:
        carried.extend(address.teredo)
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        carried.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return carried


@functools.lru_cache(maxsize=1024)
def is_own_address(address: IPAddress) -> bool:
    """Whether ``address`` belongs to this host (loopback, or bound to one of its interfaces):
    only an address of one's own can be bound."""
    if address.is_loopback or address.is_unspecified:
        return True
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class AddressRules:
    allowed_private: tuple[IPNetwork, ...] = ()  # MESH_ALLOW_PRIVATE_UPSTREAMS
    own_ports: frozenset[int] = frozenset()  # the gateway's own listeners, never an upstream

    @classmethod
    def from_settings(cls, allowed_private: str | None, own_ports: Iterable[int] = ()) -> "AddressRules":
        return cls(parse_networks(allowed_private), frozenset(p for p in own_ports if p))

    @functools.lru_cache(maxsize=4096)  # the data plane asks for every call on a kept-alive connection
    def refusal(self, address: IPAddress | str, port: int, *, private_ok: bool) -> str | None:
        """Why an upstream at ``address``:``port`` may not be called, or None if it may."""
        address = ipaddress.ip_address(address)
        if address.version == 6 and address.scope_id:
            address = ipaddress.ip_address(str(address).partition("%")[0])
        carried = carried_ipv4(address)
        # An address that carries an IPv4 address is judged by it (its wrapper range, ::/8 say,
        # would count as "reserved" and hide what it points at).
        for candidate in carried or [address]:
            reason = self._never(candidate)
            if reason:
                return f"{address} is {reason}"
        if port in self.own_ports and any(is_own_address(a) for a in (address, *carried)):
            where = f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
            return f"{where} is the gateway's own port"
        if not private_ok:
            for candidate in carried or [address]:  # a wrapper is judged by what it carries
                if not candidate.is_global and not any(candidate in net for net in self.allowed_private
                                                       if net.version == candidate.version):
                    return (f"{address} is a loopback or private address, which connections registered over the "
                            "network may not use (the operator can allow ranges with MESH_ALLOW_PRIVATE_UPSTREAMS)")
        return None

    @staticmethod
    def _never(address: IPAddress) -> str | None:
        if address.is_loopback:
            return None  # private: allowed where private addresses are
        if address in METADATA_ADDRESSES or address.is_link_local:
            return "a link-local or cloud metadata address"
        if address.is_unspecified:
            return "the unspecified address"
        if address.is_multicast:
            return "a multicast address"
        if address.version == 4 and address == ipaddress.IPv4Address("255.255.255.255"):
            return "the broadcast address"
        if address.is_reserved:
            return "a reserved address"
        return None

    def check(self, addresses: Iterable[IPAddress | str], port: int, *, private_ok: bool) -> None:
        """Raise ``AddressRefused`` unless every one of ``addresses`` may be called."""
        for address in addresses:
            reason = self.refusal(address, port, private_ok=private_ok)
            if reason:
                raise AddressRefused(reason)


@functools.lru_cache(maxsize=4096)
def literal_address(host: str) -> IPAddress | None:
    """``host`` as an IP address if it is written as one in standard notation (a URL's ``[v6]``
    brackets removed); None for a name or a non-standard spelling, which ``resolve`` handles."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` stands for, as the system resolver (and so the connect) reads it:
    names, and every notation ``inet_aton`` accepts (``2852039166``, ``0x7f.1``, octal)."""
    infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    return _addresses(infos)


async def resolve_async(host: str, port: int) -> list[IPAddress]:
    infos = await asyncio.get_running_loop().getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    return _addresses(infos)


def _addresses(infos) -> list[IPAddress]:
    seen: dict[IPAddress, None] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        seen[ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])] = None
    return list(seen)
