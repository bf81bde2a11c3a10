"""Per-client rate limits: a token bucket per API key, in process or shared through Redis.

Each client (the API key's hash prefix, or the peer address where no keys are configured) has a
bucket of `burst` tokens refilled at `per_minute / 60` tokens a second; a request takes one token
or is refused with the seconds until one is there (the 429's Retry-After). With
`AIORCH_REDIS_URL` the buckets live in Redis, updated by one Lua script so that replicas share
them atomically; when Redis is slow or gone the limiter falls back to its in-process buckets
(bounded wait, then Redis is skipped and tried again now and then, as `remote.RemoteDependency`
says) rather than refusing or waving everyone through.

`AuthFailureLimiter` puts the same buckets to another use: failed authentications per client
address, so that keys cannot be guessed at line rate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiorch.config import Settings
from aiorch.remote import RemoteDependency

log = logging.getLogger(__name__)

MAX_BUCKETS = 10_000  # in-process buckets kept; the least recently used is forgotten


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
        retry_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._take = take
        self.fallback = fallback
        self.timeout = timeout
        self._close = close
        self.remote = RemoteDependency(
            "rate limiter",
            "Redis",
            "limiting per process",
            retry_interval=retry_interval,
            clock=clock,
            logger=log,
        )

    @property
    def degraded(self) -> bool:
        return self.remote.degraded

    async def acquire(self, client: str) -> float:
        if not self.remote.usable():
            return self.fallback.take(client)  # between retries, do not wait on a hung Redis
        try:
            async with asyncio.timeout(self.timeout):
                wait = await self._take(client, self.fallback.rate, self.fallback.burst)
        except Exception as error:  # Redis trouble must not refuse or fail the request
            self.remote.failed(error)
            return self.fallback.take(client)
        self.remote.succeeded()
        return wait

    async def close(self) -> None:
        await self._close()


class AuthFailureLimiter:
    """Failed authentications per client address: each failure takes a token from the address's
    bucket; once it is empty, the address is refused (429) for every protected request, a valid
    key included, until a token is back.

    Refusing valid keys too is the point: if a blocked address could still learn that a key is
    right (200 instead of 429), the limit would not slow guessing at all. A blocked address is
    remembered here, in process, so that its requests are refused without a Redis round trip and
    requests with valid keys never touch the buckets; with Redis, a failure on any replica finds
    the shared bucket empty and blocks the address on that replica too.
    """

    PREFIX = "authfail:"  # bucket names apart from the per-key limiter's, in a shared Redis

    def __init__(
        self,
        buckets: RateLimiter,
        *,
        max_blocked: int = MAX_BUCKETS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._buckets = buckets
        self.max_blocked = max_blocked
        self._clock = clock
        self._blocked: OrderedDict[str, float] = OrderedDict()  # address -> blocked until

    def blocked_for(self, address: str) -> float:
        """Seconds this address stays refused (0.0: it may try)."""
        until = self._blocked.get(address)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._blocked[address]
            return 0.0
        return left

    async def failed(self, address: str) -> float:
        """Record a failed authentication: 0.0 while the address has tokens left, else the
        seconds it is now refused for."""
        wait = await self._buckets.acquire(self.PREFIX + address)
        if wait > 0:
            if address not in self._blocked:
                log.warning(
                    "authentication: too many failures from %s; refusing it for %.0f s",
                    address,
                    wait,
                )
            self._blocked[address] = self._clock() + wait
            self._blocked.move_to_end(address)
            if len(self._blocked) > self.max_blocked:
                self._blocked.popitem(last=False)
        return wait

    async def close(self) -> None:
        await self._buckets.close()


def build_rate_limiter(settings: Settings) -> RateLimiter | None:
    """The limiter the settings ask for, or None when rate limiting is off."""
    server = settings.server
    if server.rate_limit_per_minute <= 0:
        return None
    return _buckets(settings, server.rate_limit_per_minute, server.rate_limit_burst)


def build_auth_failure_limiter(settings: Settings) -> AuthFailureLimiter | None:
    """The failed-authentication limiter, or None when it is off or there is nothing to guess
    (no API keys and no metrics token)."""
    server = settings.server
    if server.auth_failures_per_minute <= 0:
        return None
    if not (server.api_key_hashes or server.metrics_token):
        return None
    buckets = _buckets(settings, server.auth_failures_per_minute, server.auth_failure_burst)
    return AuthFailureLimiter(buckets)


def _buckets(settings: Settings, per_minute: float, burst: int) -> RateLimiter:
    local = MemoryRateLimiter(per_minute, burst)
    server = settings.server
    if not server.redis_url:
        return local
    from aiorch.redis_store import RedisBuckets  # redis is a heavy import: only when configured

    buckets = RedisBuckets.from_url(server.redis_url)
    return RedisRateLimiter(
        buckets.take,
        local,
        settings.cache.redis_timeout,
        buckets.close,
        retry_interval=server.redis_retry_interval,
    )
