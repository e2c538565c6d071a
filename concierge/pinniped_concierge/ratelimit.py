"""A token bucket per client address, so that one client cannot crowd out the rest.

Each address may make `burst` requests at once, then `requests_per_second`
sustained; a refused request learns how many whole seconds to wait
(`Retry-After`). The address is the TCP peer's (uvicorn runs with
`proxy_headers=False`): a header such as X-Forwarded-For is the client's to
choose, so trusting it would let anyone take a fresh bucket per request.

IPv6 clients are limited per /64, the block one host (or one customer of a
provider) normally gets: within it, picking a new address is free.

The table of addresses is bounded (`max_tracked`): the least recently seen
address is forgotten first, which can only hand that address a full bucket
again, the same as a never-seen address gets, so churning the table gains an
attacker nothing it could not get by using new addresses.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from pinniped_concierge.config import RateLimitConfig

IPV6_CLIENT_PREFIX = 64


class RateLimiter:
    """Token buckets by client address; used from the event loop's thread only."""

    def __init__(self, requests_per_second: float, burst: int, max_tracked: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if requests_per_second <= 0 or burst < 1 or max_tracked < 1:
            raise ValueError("requests_per_second must be positive, burst and max_tracked "
                             "at least 1")
        self._rate = float(requests_per_second)
        self._burst = float(burst)
        self._max_tracked = max_tracked
        self._clock = clock
        #: address -> (tokens left, when they were counted); least recently seen first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    @classmethod
    def from_config(cls, config: RateLimitConfig) -> RateLimiter | None:
        """The limiter `rateLimit` asks for, or None when `requestsPerSecond` is 0 (off)."""
        if config.requests_per_second == 0:
            return None
        return cls(config.requests_per_second, config.burst, config.max_tracked_addresses)

    def check(self, address: str) -> int | None:
        """Take a token for one request from `address`: None if it may go ahead, else the
        whole seconds (at least 1) until its bucket holds a token again."""
        key = client_key(address)
        now = self._clock()
        tokens, counted_at = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - counted_at) * self._rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._max_tracked:
            self._buckets.popitem(last=False)
        if allowed:
            return None
        return max(1, math.ceil((1.0 - tokens) / self._rate))

    def __len__(self) -> int:
        return len(self._buckets)


def client_key(address: str) -> str:
    """The bucket an address draws from: itself for IPv4 (also when IPv4-mapped into IPv6),
    its /64 for IPv6, and the text as is for anything else (a Unix socket's peer)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # no zone: fe80::1%eth0
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))
    return str(ip)
