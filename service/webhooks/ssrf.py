"""The SSRF guard: where a webhook may be sent.

In production a URL must be https and every address its host resolves to must be public: no
loopback, private, link-local (the 169.254.169.254 metadata service), CGNAT, multicast or reserved
range, nor their IPv6 equivalents (unique-local, link-local, IPv4-mapped `::ffff:…`). The check
runs at registration and again before each delivery, which then connects to the address just
checked (the host name kept for TLS and the Host header), so a name re-pointed after the check
(DNS rebinding) cannot steer a delivery inside. Redirects are never followed. Development and
test allow loopback and private addresses so tests can run a receiver.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from service.http.errors import Unprocessable

RESOLVE_SECONDS = 5.0
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class Refused(Unprocessable):
    def __init__(self, message: str):
        super().__init__(message, "webhook_url_refused")


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str  # as written in the URL (for TLS and the Host header)
    port: int
    path: str  # path and query
    address: str  # the checked address to connect to

    def pinned_url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def public_address(value: str) -> bool:
    addr = ipaddress.ip_address(value.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address):
        mapped = addr.ipv4_mapped or addr.sixtofour
        if mapped is not None:
            return public_address(str(mapped))
        if addr in _NAT64:
            return public_address(str(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)))
    if addr in _CGNAT:
        return False
    return addr.is_global and not (
        addr.is_multicast
        or addr.is_reserved
        or addr.is_link_local
        or addr.is_loopback
        or addr.is_private
        or addr.is_unspecified
    )


def parse(url: str, allow_private: bool) -> tuple[str, str, int, str]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Refused("The URL does not parse.") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or (scheme == "http" and not allow_private):
        raise Refused("Webhook URLs must use https.")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise Refused("The URL must name a host and carry no credentials.")
    if parts.fragment:
        raise Refused("The URL must not have a fragment.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80), path


async def resolve(host: str, port: int) -> list[str]:
    try:
        return [str(ipaddress.ip_address(host))]  # an address literal: nothing to look up
    except ValueError:
        pass
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_SECONDS
        )
    except (TimeoutError, socket.gaierror, UnicodeError, OSError):
        raise Refused(f"The host {host[:100]!r} does not resolve.") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


@functools.lru_cache(maxsize=1024)
def _literal(url: str, allow_private: bool) -> Target | None:
    """The target of a URL naming an address literal (nothing to resolve, so nothing that can change
    between deliveries), checked once; None for a host name, which each delivery resolves again."""
    scheme, host, port, path = parse(url, allow_private)
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        return None
    if not allow_private and not public_address(address):
        raise Refused(
            "The URL resolves to an address that is not public (loopback, private, link-local, metadata or reserved)."
        )
    return Target(scheme, host, port, path, address)


async def check(url: str, allow_private: bool) -> Target:
    """The URL's target, with an address to connect to; Refused if it may not be called."""
    literal = _literal(url, allow_private)
    if literal is not None:
        return literal
    scheme, host, port, path = parse(url, allow_private)
    addresses = await resolve(host, port)
    if not addresses:
        raise Refused(f"The host {host[:100]!r} does not resolve.")
    if not allow_private:
        bad = [a for a in addresses if not public_address(a)]
        if bad:
            raise Refused(
                "The URL resolves to an address that is not public (loopback, private, link-local, "
                "metadata or reserved)."
            )
    return Target(scheme, host, port, path, addresses[0])
