"""Redis (`AIORCH_REDIS_URL`): the answer cache, the rate-limit buckets and the circuit breakers'
state, shared by replicas.

The client fails fast: short socket and connect timeouts and no retries of its own, because
every caller (`failsafe_cache.FailSafeCache`, `ratelimit.RedisRateLimiter`,
`shared_breakers.BreakerSync`) bounds its wait and goes on without Redis instead
(`remote.RemoteDependency`). redis-py reconnects on the next command, so
a restarted Redis is picked up without any help.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from aiorch.breaker import BreakerState
from aiorch.cache import KEY_PREFIX
from aiorch.shared_breakers import BreakerRecord

# A backstop only: callers wait far less than this before giving up on Redis.
SOCKET_TIMEOUT = 1.0
BUCKET_PREFIX = "aiorch:ratelimit:v1:"
# `<prefix><service>`: "<state> <event>", expiring with the record; `<prefix><service>:probe`:
# the active probe's lock for one probe interval, its value the holder.
BREAKER_PREFIX = "aiorch:breaker:v1:"
PROBE_SUFFIX = ":probe"

# One bucket, refilled and taken from atomically. Redis's own clock, so that replicas with
# skewed clocks agree. Returns the seconds to wait as a string (Lua numbers become integers).
TAKE_TOKEN = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens),
           'at', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return string.format('%.6f', wait)
"""


def connect(url: str, timeout: float = SOCKET_TIMEOUT) -> Redis:
    """A pooled client that connects on first use and never retries by itself."""
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )


class RedisCache:
    """The `Cache` protocol on Redis: values with a TTL under the cache's key prefix."""

    def __init__(self, client: Redis) -> None:
        self.client = client

    @classmethod
    def from_url(cls, url: str) -> RedisCache:
        return cls(connect(url))

    async def get(self, key: str) -> bytes | None:
        value = await self.client.get(key)
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if ttl > 0:
            await self.client.set(key, value, px=max(1, round(ttl * 1000)))

    async def clear(self) -> None:
        """Delete aiorch's answers only: the database may hold other things."""
        batch: list[bytes] = []
        async for key in self.client.scan_iter(match=KEY_PREFIX + "*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                await self.client.delete(*batch)
                batch.clear()
        if batch:
            await self.client.delete(*batch)

    async def close(self) -> None:
        await self.client.aclose()


class RedisBuckets:
    """Token buckets in Redis, one hash per client under `BUCKET_PREFIX`."""

    def __init__(self, client: Redis) -> None:
        self.client = client
        self._script = client.register_script(TAKE_TOKEN)

    @classmethod
    def from_url(cls, url: str) -> RedisBuckets:
        return cls(connect(url))

    async def take(self, client: str, rate: float, burst: int) -> float:
        """Seconds until a token is free for `client` (0.0: one was taken)."""
        wait = await self._script(keys=[BUCKET_PREFIX + client], args=[repr(rate), burst])
        return float(wait)

    async def close(self) -> None:
        await self.client.aclose()


class RedisBreakerStore:
    """The `shared_breakers.BreakerStore` protocol on Redis: a key per service, a lock each."""

    def __init__(self, client: Redis) -> None:
        self.client = client

    @classmethod
    def from_url(cls, url: str) -> RedisBreakerStore:
        return cls(connect(url))

    async def publish(self, service: str, record: BreakerRecord) -> None:
        value = f"{record.state.value} {record.event}"
        await self.client.set(BREAKER_PREFIX + service, value, px=_millis(record.remaining))

    async def read(self, services: Sequence[str]) -> dict[str, BreakerRecord | None]:
        async with self.client.pipeline(transaction=False) as pipe:  # one round trip for all
            for service in services:
                pipe.get(BREAKER_PREFIX + service)
                pipe.pttl(BREAKER_PREFIX + service)
            replies = await pipe.execute()
        found: dict[str, BreakerRecord | None] = {}
        for index, service in enumerate(services):
            value, ttl = replies[2 * index], replies[2 * index + 1]
            found[service] = _record(value, ttl)
        return found

    async def acquire_probe(self, service: str, owner: str, ttl: float) -> bool:
        key = BREAKER_PREFIX + service + PROBE_SUFFIX
        return bool(await self.client.set(key, owner, nx=True, px=_millis(ttl)))

    async def close(self) -> None:
        await self.client.aclose()


def _millis(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _record(value: object, ttl: object) -> BreakerRecord | None:
    """A stored record, or None if absent, expiring as we read it, or not ours to read."""
    if not isinstance(value, bytes) or not isinstance(ttl, int) or ttl <= 0:
        return None
    state, _, event = value.decode(errors="replace").partition(" ")
    if state not in {s.value for s in BreakerState} or not event:
        return None
    return BreakerRecord(BreakerState(state), event, ttl / 1000)
