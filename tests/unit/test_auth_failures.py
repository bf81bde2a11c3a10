"""Failed authentications per client address, on the rate limiter's token buckets (issue 17,
finding 8): with a fake clock, and with two replicas sharing one bucket store as Redis would."""

from __future__ import annotations

import logging

import msgspec
import pytest

from aiorch.config import Settings, load_settings
from aiorch.ratelimit import (
    AuthFailureLimiter,
    MemoryRateLimiter,
    RedisRateLimiter,
    build_auth_failure_limiter,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_an_address_is_blocked_once_its_failures_run_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    limiter = AuthFailureLimiter(MemoryRateLimiter(6, 3, clock=clock), clock=clock)
    with caplog.at_level(logging.WARNING, logger="aiorch.ratelimit"):
        waits = [await limiter.failed("203.0.113.9") for _ in range(5)]

    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3] == pytest.approx(10.0)  # six a minute: one every ten seconds
    assert limiter.blocked_for("203.0.113.9") > 9.0
    assert limiter.blocked_for("203.0.113.10") == 0.0  # another address is not punished
    assert len([r for r in caplog.records if "203.0.113.9" in r.getMessage()]) == 1
    clock.now += 10.0
    assert limiter.blocked_for("203.0.113.9") == 0.0
    assert await limiter.failed("203.0.113.9") == 0.0  # one token back, one more try


async def test_the_blocked_list_is_bounded() -> None:
    clock = Clock()
    limiter = AuthFailureLimiter(MemoryRateLimiter(1, 1, clock=clock), max_blocked=2, clock=clock)
    for address in ("a", "b", "c"):
        await limiter.failed(address)
        await limiter.failed(address)

    assert [limiter.blocked_for(a) > 0 for a in ("a", "b", "c")] == [False, True, True]


class SharedBuckets:
    """What Redis gives two replicas: one bucket per name, whoever asks."""

    def __init__(self, clock: Clock) -> None:
        self.buckets = MemoryRateLimiter(6, 3, clock=clock)
        self.names: list[str] = []

    async def take(self, client: str, rate: float, burst: int) -> float:
        self.names.append(client)
        return self.buckets.take(client)

    async def close(self) -> None:
        return None


async def test_replicas_sharing_redis_share_an_address_failures() -> None:
    clock = Clock()
    shared = SharedBuckets(clock)

    def replica() -> AuthFailureLimiter:
        local = MemoryRateLimiter(6, 3, clock=clock)
        redis = RedisRateLimiter(
            shared.take, local, timeout=0.5, close=shared.close, clock=clock, retry_interval=1.0
        )
        return AuthFailureLimiter(redis, clock=clock)

    one, two = replica(), replica()
    assert [await one.failed("198.51.100.4") for _ in range(2)] == [0.0, 0.0]
    assert await two.failed("198.51.100.4") == 0.0
    assert await two.failed("198.51.100.4") > 0  # the third failure was on the other replica
    assert two.blocked_for("198.51.100.4") > 0
    assert all(name.startswith("authfail:") for name in shared.names)  # apart from key buckets


def _settings(env: dict[str, str], **server: object) -> Settings:
    raw = msgspec.to_builtins(load_settings(env))
    raw["server"] = {**raw["server"], **server}
    return msgspec.convert(raw, Settings)


def test_on_by_default_whenever_there_is_something_to_guess() -> None:
    assert build_auth_failure_limiter(_settings({})) is None  # no key, no token: nothing to guess
    assert build_auth_failure_limiter(_settings({"AIORCH_API_KEYS": "k"})) is not None
    assert build_auth_failure_limiter(_settings({"AIORCH_METRICS_TOKEN": "t"})) is not None
    off = _settings({"AIORCH_API_KEYS": "k"}, auth_failures_per_minute=0)
    assert build_auth_failure_limiter(off) is None
