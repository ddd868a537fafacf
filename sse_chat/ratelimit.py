"""Who a client is (behind trusted proxies) and fixed-window rate limits (pure: no I/O)."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """`10.0.0.0/8, 127.0.0.1` -> networks; raise ValueError on a bad entry."""
    return tuple(ipaddress.ip_network(part.strip()) for part in text.split(",") if part.strip())


def client_address(remote: str, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The client's address: `remote`, or the nearest untrusted hop of X-Forwarded-For when
    the request came through trusted proxies (the header is the client's to forge otherwise)."""
    hops = [remote]
    if forwarded_for:
        hops = [hop.strip() for hop in forwarded_for.split(",")] + hops
    for hop in reversed(hops):
        if not is_trusted(hop, trusted):
            return hop
    return hops[0]


def is_trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    """True when `address` is in one of the `trusted` networks."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


@dataclass(frozen=True, slots=True)
class Window:
    """The current fixed window of `seconds` at time `now`: its key suffix and time left."""

    index: int
    retry_after: int

    @classmethod
    def at(cls, now: float, seconds: int) -> Window:
        index = int(now // seconds)
        return cls(index, max(1, math.ceil((index + 1) * seconds - now)))
