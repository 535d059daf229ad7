"""Who is calling: the client address behind trusted proxies, and the per-address limit of the
anonymous routes (verifications, registrations, sign-ins).

The address is the socket peer unless the peer is one of `ESCROW_TRUSTED_PROXIES`; then the
right-most `X-Forwarded-For` entry that is not itself a trusted proxy is the client (entries to its
left were written by the client and prove nothing). IPv6 clients are limited per /64, the block a
single subscriber is normally given, so rotating through one's own block does not lift the limit.

The limit is checked twice: first in this process's memory, which rejects a flood without touching
the database, then in the `rate_limits` table inside the write itself, so replicas share one
allowance. Only attempts the memory check let through can reach the table.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """`"10.0.0.1, 192.168.0.0/16, fd00::/8"` → networks; a bad entry is a ValueError naming it."""
    networks = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not an IP address or CIDR block") from None
    return tuple(networks)


def _ip(text: str):
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def _trusted(ip, networks: tuple[Network, ...]) -> bool:
    return any(ip.version == n.version and ip in n for n in networks)


def client_ip(peer: str | None, forwarded_for: list[str], trusted: tuple[Network, ...]) -> str:
    """The client's address: the peer, or the right-most untrusted X-Forwarded-For hop behind a trusted peer."""
    ip = _ip(peer) if peer else None
    if ip is None:
        return peer or "unknown"
    if not trusted or not _trusted(ip, trusted):
        return str(ip)
    hops = [h for value in forwarded_for for h in value.split(",") if h.strip()]
    for hop in reversed(hops):
        hop_ip = _ip(hop)
        if hop_ip is None:
            break  # garbage written by someone: believe nothing further left
        ip = hop_ip
        if not _trusted(ip, trusted):
            break
    return str(ip)


@lru_cache(maxsize=65536)
def limit_bucket(address: str) -> str:
    """The unit a limit counts: an IPv4 address, or the /64 an IPv6 address belongs to."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def request_client(request, trusted: tuple[Network, ...]) -> str:
    peer = request.client.host if request.client else None
    return client_ip(peer, request.headers.getlist("x-forwarded-for"), trusted)


class MemoryLimiter:
    """Attempts per bucket in the current minute, in this process only: the cheap first gate."""

    MAX_BUCKETS = 200_000  # beyond this the minute's table is dropped: memory stays bounded under any flood

    def __init__(self):
        self.window: datetime | None = None
        self.counts: dict[str, int] = {}

    def hit(self, bucket: str, now: datetime, per_minute: int) -> bool:
        """Count one attempt; True when it is over the limit (and must be refused without a write)."""
        window = now.replace(second=0, microsecond=0)
        if window != self.window or len(self.counts) > self.MAX_BUCKETS:
            self.window, self.counts = window, {}
        n = self.counts.get(bucket, 0) + 1
        self.counts[bucket] = n
        return n > per_minute
