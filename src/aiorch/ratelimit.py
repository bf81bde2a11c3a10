"""Per-client rate limits: a token bucket per API key, in process or shared through Redis.

Each client (the API key's hash prefix, or the peer address where no keys are configured) has a
bucket of `burst` tokens refilled at `per_minute / 60` tokens a second; a request takes one token
or is refused with the seconds until one is there (the 429's Retry-After). With
`AIORCH_REDIS_URL` the buckets live in Redis, updated by one Lua script so that replicas share
them atomically; when Redis is slow or gone the limiter falls back to its in-process buckets
(bounded wait, then Redis is only probed once a second; logged once per incident) rather than
refusing or waving everyone through.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiorch.config import Settings

log = logging.getLogger(__name__)

MAX_BUCKETS = 10_000  # in-process buckets kept; the least recently used is forgotten
PROBE_INTERVAL = 1.0  # seconds between attempts to use Redis while it is failing


class RateLimiter(Protocol):
    async def acquire(self, client: str) -> float:
        """Take a token: 0.0 if the request may go on, else the seconds until one is free."""
        ...

    async def close(self) -> None: ...


class TokenBucket:
    """`burst` tokens, refilled continuously at `rate` tokens a second."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def take(self, now: float) -> float:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class MemoryRateLimiter:
    """Buckets in this process, at most `max_buckets` of them (a forgotten bucket is a full one,
    which is what an idle client's bucket would be anyway)."""

    def __init__(
        self,
        per_minute: float,
        burst: int,
        *,
        max_buckets: int = MAX_BUCKETS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = max(1, burst)
        self.max_buckets = max_buckets
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    async def acquire(self, client: str) -> float:
        return self.take(client)

    def take(self, client: str) -> float:
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self.max_buckets:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
        return bucket.take(now)

    async def close(self) -> None:
        return None


# What the Redis limiter needs from redis_store: run the script for one client's bucket.
BucketScript = Callable[[str, float, int], Awaitable[float]]


class RedisRateLimiter:
    """Buckets in Redis, shared by every replica; in-process buckets while Redis fails."""

    def __init__(
        self,
        take: BucketScript,
        fallback: MemoryRateLimiter,
        timeout: float,
        close: Callable[[], Awaitable[None]],
        *,
        probe_interval: float = PROBE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._take = take
        self.fallback = fallback
        self.timeout = timeout
        self._close = close
        self.probe_interval = probe_interval
        self._clock = clock
        self.degraded = False
        self._failed_at = 0.0

    async def acquire(self, client: str) -> float:
        if self.degraded and self._clock() - self._failed_at < self.probe_interval:
            return self.fallback.take(client)  # between probes, do not wait on a hung Redis
        try:
            async with asyncio.timeout(self.timeout):
                wait = await self._take(client, self.fallback.rate, self.fallback.burst)
        except Exception as error:  # Redis trouble must not refuse or fail the request
            self._failed_at = self._clock()
            if not self.degraded:
                self.degraded = True
                log.warning(
                    "rate limiter: Redis failed (%s: %s); limiting per process until it recovers",
                    type(error).__name__,
                    error,
                )
            return self.fallback.take(client)
        if self.degraded:
            self.degraded = False
            log.warning("rate limiter: Redis recovered")
        return wait

    async def close(self) -> None:
        await self._close()


def build_rate_limiter(settings: Settings) -> RateLimiter | None:
    """The limiter the settings ask for, or None when rate limiting is off."""
    server = settings.server
    if server.rate_limit_per_minute <= 0:
        return None
    local = MemoryRateLimiter(server.rate_limit_per_minute, server.rate_limit_burst)
    if not server.redis_url:
        return local
    from aiorch.redis_store import RedisBuckets  # redis is a heavy import: only when configured

    buckets = RedisBuckets.from_url(server.redis_url)
    return RedisRateLimiter(buckets.take, local, settings.cache.redis_timeout, buckets.close)
