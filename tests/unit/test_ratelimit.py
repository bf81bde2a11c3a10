"""Token buckets with a fake clock, and the Redis limiter's fallback with a fake Redis call.

The Lua script itself runs against a real Redis in tests/integration/test_redis.py.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
import pytest

from aiorch.config import Settings, load_settings
from aiorch.ratelimit import (
    MemoryRateLimiter,
    RedisRateLimiter,
    TokenBucket,
    build_rate_limiter,
)


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_bucket_gives_the_burst_then_one_token_per_interval() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)  # 2 tokens a second: half a second to wait
    assert bucket.take(0.25) == pytest.approx(0.25)
    assert bucket.take(0.5) == 0.0
    # A long idle time refills to the burst, no further.
    assert [bucket.take(100.0) for _ in range(4)][:3] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) > 0


def test_a_refused_request_does_not_spend_a_token() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, now=0.0)
    assert bucket.take(0.0) == 0.0
    for _ in range(10):
        assert bucket.take(0.5) == pytest.approx(0.5)
    assert bucket.take(1.0) == 0.0


async def test_clients_have_separate_buckets() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(per_minute=60, burst=2, clock=clock)
    assert await limiter.acquire("key:a") == 0.0
    assert await limiter.acquire("key:a") == 0.0
    assert await limiter.acquire("key:a") == pytest.approx(1.0)
    assert await limiter.acquire("key:b") == 0.0  # b is not punished for a
    clock.now += 1.0
    assert await limiter.acquire("key:a") == 0.0


async def test_bucket_count_is_bounded_and_the_oldest_is_forgotten() -> None:
    clock = Clock()
    limiter = MemoryRateLimiter(per_minute=1, burst=1, max_buckets=3, clock=clock)
    for client in ("a", "b", "c", "d"):
        assert await limiter.acquire(client) == 0.0
    assert len(limiter) == 3
    assert await limiter.acquire("d") > 0  # still remembered
    assert await limiter.acquire("a") == 0.0  # forgotten, so full again


class FakeRedis:
    def __init__(self) -> None:
        self.failing: Exception | None = None
        self.calls = 0

    async def take(self, client: str, rate: float, burst: int) -> float:
        self.calls += 1
        if self.failing is not None:
            raise self.failing
        return 0.0 if self.calls % 2 else 7.0

    async def close(self) -> None:
        return None


async def test_redis_limiter_uses_redis_and_falls_back_to_local_buckets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis = FakeRedis()
    clock = Clock()
    local = MemoryRateLimiter(per_minute=60, burst=1, clock=clock)
    limiter = RedisRateLimiter(
        redis.take, local, timeout=0.5, close=redis.close, retry_interval=1.0, clock=clock
    )
    assert await limiter.acquire("k") == 0.0
    assert await limiter.acquire("k") == 7.0  # Redis says wait
    assert len(local) == 0  # the local buckets were not touched

    redis.failing = ConnectionError("Redis is gone")
    with caplog.at_level(logging.WARNING, logger="aiorch.ratelimit"):
        assert await limiter.acquire("k") == 0.0  # the local bucket's first token
        assert await limiter.acquire("k") > 0  # and the local limit applies
        assert await limiter.acquire("k") > 0
    assert limiter.degraded
    failures = [r for r in caplog.records if "Redis failed" in r.getMessage()]
    assert len(failures) == 1  # once per incident, not per request
    assert redis.calls == 3  # tried once, then left alone between probes

    redis.failing = None
    await limiter.acquire("k")
    assert limiter.degraded  # not probed again yet
    assert redis.calls == 3
    clock.now += 1.0
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aiorch.ratelimit"):
        await limiter.acquire("k")
    assert not limiter.degraded
    assert any("recovered" in r.getMessage() for r in caplog.records)


async def test_a_slow_redis_is_waited_on_for_a_bounded_time() -> None:
    async def hung(client: str, rate: float, burst: int) -> float:
        await asyncio.sleep(3600)
        return 0.0

    local = MemoryRateLimiter(per_minute=60, burst=5)
    limiter = RedisRateLimiter(
        hung, local, timeout=0.02, close=FakeRedis().close, retry_interval=1.0
    )
    async with asyncio.timeout(5):  # anti-hang bound only
        assert await limiter.acquire("k") == 0.0
    assert limiter.degraded


def _settings(**server: object) -> Settings:
    raw = msgspec.to_builtins(load_settings({}))
    raw["server"] = {**raw["server"], **server}
    return msgspec.convert(raw, Settings)


async def test_build_picks_the_limiter_from_the_settings() -> None:
    assert build_rate_limiter(_settings()) is None  # off by default
    local = build_rate_limiter(_settings(rate_limit_per_minute=120, rate_limit_burst=4))
    assert isinstance(local, MemoryRateLimiter)
    assert local.rate == 2.0
    assert local.burst == 4
    shared = build_rate_limiter(
        _settings(rate_limit_per_minute=60, redis_url="redis://127.0.0.1:1/0")
    )
    assert isinstance(shared, RedisRateLimiter)
    await shared.close()  # never connected: closing must still work
