"""The shared Redis cache and rate limits, against a real, private redis-server.

The test starts its own `redis-server` on a free port (never the machine's 6379), runs two
replicas of the service on it, then freezes it (slow), kills it (gone) and restarts it on the
same port: answers keep coming throughout, the failures are counted and logged once per incident,
and the cache works again by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from aiorch.breaker import BreakerState, CircuitBreaker
from aiorch.breaker_supervisor import BreakerSupervisor
from aiorch.cache import KEY_PREFIX
from aiorch.config import BreakerSettings
from aiorch.redis_store import (
    BREAKER_PREFIX,
    BUCKET_PREFIX,
    RedisBreakerStore,
    RedisBuckets,
    RedisCache,
    connect,
)
from aiorch.shared_breakers import BreakerRecord
from tests.integration.reliability_support import DEFAULT_TOML, aiorch_service, mock_upstream
from tests.integration.service_support import Mock, unique, wait_until
from tests.integration.service_support import Service as Running
from tests.support.procs import free_port

pytestmark = pytest.mark.redis

CACHE_KEY = "sk-redis-cache-client"
LIMITED_KEY = "sk-redis-limited-client"
PER_MINUTE = 60
BURST = 40
REDIS_TOML = (
    DEFAULT_TOML
    + f"""
[cache]
redis_timeout = 0.25  # bounded wait, with room for a busy test machine
[server]
rate_limit_burst = {BURST}
"""
)


@dataclass
class PrivateRedis:
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.port != 6379, "never touch the machine's own Redis"
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [
                    "redis-server",
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                ],
                stdout=sink,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self.pong():
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    server = PrivateRedis(free_port(), tmp_path_factory.mktemp("redis") / "redis.log")
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.signal(signal.SIGCONT)  # in case a failed test left it frozen
            server.kill()


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, private_redis: PrivateRedis
) -> Iterator[tuple[Mock, Running, Running]]:
    tmp = tmp_path_factory.mktemp("replicas")
    env = {
        "AIORCH_REDIS_URL": private_redis.url,
        "AIORCH_API_KEYS": f"{CACHE_KEY},{LIMITED_KEY}",
        "AIORCH_RATE_LIMIT_PER_MINUTE": str(PER_MINUTE),
    }
    with contextlib.ExitStack() as stack:
        mock = stack.enter_context(mock_upstream(tmp))
        a = stack.enter_context(aiorch_service(tmp, mock, toml=REDIS_TOML, name="a", **env))
        b = stack.enter_context(aiorch_service(tmp, mock, toml=REDIS_TOML, name="b", **env))
        yield mock, a, b


def ask(service: Running, text: str, key: str = CACHE_KEY) -> httpx.Response:
    return service.query(
        {"query": text, "query_type": "code"}, headers={"Authorization": f"Bearer {key}"}
    )


def cached(service: Running, text: str) -> bool:
    response = ask(service, text)
    assert response.status_code == 200, response.text[:300]
    value: bool = response.json()["cached"]
    return value


def incidents(service: Running, what: str) -> int:
    return service.server.output().count(what)


# ---------------------------------------------------------------------------- store, directly


async def test_cache_store_sets_a_ttl_and_clears_only_its_own_keys(
    private_redis: PrivateRedis,
) -> None:
    cache = RedisCache.from_url(private_redis.url)
    raw = aioredis.Redis.from_url(private_redis.url)
    try:
        await raw.set("someone-elses-key", b"keep me")
        await cache.set(KEY_PREFIX + "one", b"answer", ttl=30)
        assert await cache.get(KEY_PREFIX + "one") == b"answer"
        assert 0 < await raw.pttl(KEY_PREFIX + "one") <= 30_000
        await cache.set(KEY_PREFIX + "short", b"gone soon", ttl=0.05)
        await asyncio.sleep(0.2)
        assert await cache.get(KEY_PREFIX + "short") is None
        await cache.clear()
        assert await cache.get(KEY_PREFIX + "one") is None
        assert await raw.get("someone-elses-key") == b"keep me"
    finally:
        await raw.delete("someone-elses-key")
        await raw.aclose()
        await cache.close()


async def test_token_bucket_script_is_atomic_under_concurrency(
    private_redis: PrivateRedis,
) -> None:
    # A hundred connections open at once: on a busy machine that takes longer than the
    # production backstop of a second, and this test is about the script, not connect speed.
    buckets = [RedisBuckets(connect(private_redis.url, timeout=10.0)) for _ in range(4)]
    client = unique("bucket")
    try:
        # Four clients (replicas) race for a ten-token bucket refilled once an hour.
        waits = await asyncio.gather(
            *(buckets[i % 4].take(client, 1 / 3600, 10) for i in range(100))
        )
        assert sum(1 for w in waits if w == 0.0) == 10
        assert all(w > 3000 for w in waits if w > 0)
        ttl = await buckets[0].client.pttl(BUCKET_PREFIX + client)
        assert 0 < ttl <= (10 * 3600 + 1) * 1000  # idle buckets expire
    finally:
        for bucket in buckets:
            await bucket.close()


async def test_breaker_store_records_expire_and_the_probe_lock_has_one_holder_a_round(
    private_redis: PrivateRedis,
) -> None:
    stores = [RedisBreakerStore.from_url(private_redis.url) for _ in range(2)]
    first, second = stores
    service = unique("svc").replace(" ", "-")
    try:
        assert await first.read([service]) == {service: None}
        await first.publish(service, BreakerRecord(BreakerState.OPEN, "a-1", 30.0))
        record = (await second.read([service, "nobody"]))[service]
        assert record is not None
        assert (record.state, record.event) == (BreakerState.OPEN, "a-1")
        assert 0 < record.remaining <= 30.0
        await first.publish(service, BreakerRecord(BreakerState.CLOSED, "a-2", 0.05))
        await asyncio.sleep(0.2)
        assert await second.read([service]) == {service: None}  # expired with its pause

        await first.publish(service, BreakerRecord(BreakerState.HALF_OPEN, "a-3", 30.0))
        record = (await second.read([service]))[service]
        assert record is not None
        assert record.state is BreakerState.HALF_OPEN

        # Replicas race for this round's probe: exactly one wins, and holds it for the round.
        won = await asyncio.gather(
            *(stores[i % 2].acquire_probe(service, f"replica-{i}", 0.3) for i in range(10))
        )
        assert won.count(True) == 1
        assert not await first.acquire_probe(service, f"replica-{won.index(True)}", 0.3)
        await asyncio.sleep(0.5)  # the round is over
        assert await second.acquire_probe(service, "replica-1", 0.3)
    finally:
        await first.client.delete(BREAKER_PREFIX + service, BREAKER_PREFIX + service + ":probe")
        for store in stores:
            await store.close()


async def test_breakers_share_a_probe_verdict_through_redis(private_redis: PrivateRedis) -> None:
    """Two replicas' supervisors on one Redis: A's evidence opens B's breaker, and A's probes
    close both. B has no probe of its own, so what it does it learns through Redis."""
    service = unique("svc").replace(" ", "-")
    settings = BreakerSettings(minimum_calls=4, reset_seconds=3600.0, probe_interval=0.05)
    a, b = CircuitBreaker(settings), CircuitBreaker(settings)
    b_changes: list[BreakerState] = []
    b.listen(lambda state, adopted: b_changes.append(state))
    probes: list[BreakerState] = []

    async def probe() -> bool:
        probes.append(a.state)
        return len(probes) > 3  # the backend is down for the first three probes

    stores = [RedisBreakerStore.from_url(private_redis.url) for _ in range(2)]
    supervisors = [
        BreakerSupervisor({service: a}, {service: probe}, stores[0], sync_interval=0.02),
        BreakerSupervisor({service: b}, {}, stores[1], sync_interval=0.02),
    ]
    for supervisor in supervisors:
        supervisor.start()
    try:
        for _ in range(4):
            assert a.acquire()
            a.on_failure(0.0)
        deadline = time.monotonic() + 30  # anti-hang only
        while not (a.state is b.state is BreakerState.CLOSED):
            assert time.monotonic() < deadline, f"A {a.state}, B {b.state}, probes {probes}"
            await asyncio.sleep(0.01)
        assert probes[:3] == [BreakerState.OPEN] * 3  # failed probes left it open
        assert b_changes[0] is BreakerState.OPEN
        assert b_changes[-1] is BreakerState.CLOSED
    finally:
        for supervisor in supervisors:
            await supervisor.close()  # closes its store too


# ---------------------------------------------------------------------------- replicas


def test_replicas_share_the_cache(replicas: tuple[Mock, Running, Running]) -> None:
    mock, a, b = replicas
    text = unique("Write a function that reverses a list")
    assert cached(a, text) is False
    assert cached(b, text) is True  # stored by A, found by B
    assert len(mock.requests_mentioning(text)) == 1


def test_replicas_share_the_rate_limit(replicas: tuple[Mock, Running, Running]) -> None:
    _, a, b = replicas
    started = time.monotonic()
    statuses: dict[str, list[int]] = {"a": [], "b": []}
    for i in range(BURST + 20):
        name, service = ("a", a) if i % 2 == 0 else ("b", b)
        statuses[name].append(ask(service, unique("limit"), LIMITED_KEY).status_code)
    elapsed = time.monotonic() - started
    accepted = sum(s == 200 for s in statuses["a"] + statuses["b"])
    # Separate buckets would accept all of them (half of them each, under the burst); one
    # shared bucket accepts the burst and what refilled meanwhile.
    assert accepted <= BURST + PER_MINUTE / 60 * elapsed + 1
    assert 429 in statuses["a"]
    assert 429 in statuses["b"]


def test_slow_redis_is_waited_on_briefly_then_skipped(
    replicas: tuple[Mock, Running, Running], private_redis: PrivateRedis
) -> None:
    _, a, b = replicas
    errors_before = a.metric("orchestrator_cache_errors_total")
    logged_before = incidents(a, "answering without the cache")
    private_redis.signal(signal.SIGSTOP)  # alive, listening, and answering nothing
    try:
        texts = [unique("Write a sort function") for _ in range(4)]
        started = time.monotonic()
        for text in texts:
            assert cached(a, text) is False
            assert cached(a, text) is False  # no cache while Redis hangs
        elapsed = time.monotonic() - started
    finally:
        private_redis.signal(signal.SIGCONT)
    assert a.metric("orchestrator_cache_errors_total") > errors_before
    assert incidents(a, "answering without the cache") == logged_before + 1
    # Eight requests: a hung Redis costs at most a bounded wait about once a second, not its
    # socket timeout on every request (a generous bound; the guard's wait is 0.25 s).
    assert elapsed < 8 * 1.0
    wait_until(lambda: _caches_again(a, b), "the cache to recover after SIGCONT")


def test_service_answers_while_redis_is_gone_and_recovers_when_it_is_back(
    replicas: tuple[Mock, Running, Running], private_redis: PrivateRedis
) -> None:
    _, a, b = replicas
    logged = {s.name: incidents(s, "answering without the cache") for s in (a, b)}
    limiter_logged = incidents(a, "rate limiter: Redis failed")
    private_redis.kill()
    try:
        text = unique("Write a parser")
        for service in (a, b, a, b, a, b):
            assert cached(service, text) is False  # answered, without the cache
        assert ask(a, unique("limit while gone"), LIMITED_KEY).status_code in (200, 429)
        for service in (a, b):
            assert service.metric("orchestrator_cache_errors_total", operation="get") > 0
            # Logged once for the whole incident, however many requests it touched.
            assert incidents(service, "answering without the cache") == logged[service.name] + 1
        assert incidents(a, "rate limiter: Redis failed") == limiter_logged + 1
    finally:
        private_redis.start()  # the same port, empty: --save ''
    wait_until(lambda: _caches_again(a, b), "the cache to work again after the restart")
    assert "cache: Redis recovered" in a.server.output()
    assert "cache: Redis recovered" in b.server.output()


def _caches_again(a: Running, b: Running) -> bool:
    """One new query through A, then B: True once B answers it from the shared cache."""
    text = unique("Write a function that merges two lists")
    cached(a, text)
    return cached(b, text)
