"""Breakers shared by replicas: the in-process store, the sync between two "replicas" on one
store (fake clocks, passes driven by hand), a failing store, and two dispatchers end to end.

The Redis store itself runs against a real redis-server in tests/integration/test_redis.py, and
two real replicas in tests/integration/test_replicas.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import pytest
from prometheus_client import CollectorRegistry

from aiorch.config import BreakerSettings
from aiorch.dispatch import Dispatcher
from aiorch.errors import BackendConnectionError
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.resilience import BreakerState, CircuitBreaker
from aiorch.shared_breakers import BreakerRecord, BreakerSync, MemoryBreakerStore
from aiorch.types import Service
from tests.unit.test_resilience import KIMI_FIRST, REQUEST, FakeBackend, sample, settings

THRESHOLD = 2
RESET = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class Replica:
    """One replica's breaker for "kimi" and its sync, on a shared store and clock."""

    def __init__(self, store: MemoryBreakerStore, clock: Clock) -> None:
        self.changes: list[BreakerState] = []
        self.breaker = CircuitBreaker(
            BreakerSettings(failure_threshold=THRESHOLD, reset_seconds=RESET),
            on_change=self.changes.append,
            clock=clock,
        )
        self.sync = BreakerSync(store, {"kimi": self.breaker})

    def fail(self, times: int = THRESHOLD) -> None:
        for _ in range(times):
            self.breaker.record_failure()


def pair() -> tuple[Replica, Replica, MemoryBreakerStore, Clock]:
    clock = Clock()
    store = MemoryBreakerStore(clock)
    return Replica(store, clock), Replica(store, clock), store, clock


async def sync(*replicas: Replica) -> None:
    for replica in replicas:
        assert await replica.sync.sync_once()


# ---------------------------------------------------------------------------- the memory store


async def test_memory_store_records_expire_and_the_probe_lock_has_one_holder() -> None:
    clock = Clock()
    store = MemoryBreakerStore(clock)
    await store.publish("kimi", BreakerRecord(BreakerState.OPEN, "e1", 5.0))
    clock.now += 2.0
    assert await store.read(["kimi", "qwen"]) == {
        "kimi": BreakerRecord(BreakerState.OPEN, "e1", 3.0),
        "qwen": None,
    }
    clock.now += 3.0
    assert await store.read(["kimi"]) == {"kimi": None}

    assert await store.acquire_probe("kimi", "a", ttl=5.0)
    assert not await store.acquire_probe("kimi", "b", ttl=5.0)
    await store.release_probe("kimi", "b")  # not b's to give back
    assert not await store.acquire_probe("kimi", "b", ttl=5.0)
    clock.now += 5.0  # a holder that vanished loses it
    assert await store.acquire_probe("kimi", "b", ttl=5.0)
    await store.release_probe("kimi", "b")
    assert await store.acquire_probe("kimi", "a", ttl=5.0)


# ---------------------------------------------------------------------------- two replicas


async def test_a_breaker_opened_by_one_replica_is_open_on_the_other() -> None:
    a, b, _, clock = pair()
    await sync(a, b)
    a.fail()
    assert not a.breaker.allow()
    assert b.breaker.allow()  # B has not heard yet: the hot path never waits on the store
    await sync(a, b)
    assert b.breaker.state is BreakerState.OPEN
    assert not b.breaker.allow()
    assert b.changes == [BreakerState.OPEN]  # what drives B's breaker-state gauge
    # B opens for what is left of A's pause, not a fresh one: both turn half-open together.
    clock.now += RESET - 1
    assert b.breaker.open_remaining() == pytest.approx(1.0)
    clock.now += 1
    assert b.breaker.state is BreakerState.HALF_OPEN


async def test_one_replica_at_a_time_probes_and_its_success_closes_both() -> None:
    a, b, _, clock = pair()
    await sync(a, b)
    a.fail()
    await sync(a, b)
    clock.now += RESET
    assert a.breaker.state is b.breaker.state is BreakerState.HALF_OPEN
    assert not a.breaker.allow()  # coordinated: no probe without the store's permit
    await sync(a, b)  # A asks first and gets the lock; B is refused
    assert a.breaker.allow()
    assert not a.breaker.allow()  # one probe, not one per caller
    assert not b.breaker.allow()
    await sync(b)
    assert not b.breaker.allow()  # still A's
    a.breaker.record_success()
    assert b.breaker.state is BreakerState.HALF_OPEN
    await sync(a, b)
    assert a.breaker.state is b.breaker.state is BreakerState.CLOSED
    assert b.breaker.allow()
    assert b.changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


async def test_a_failed_probe_opens_both_for_another_full_pause() -> None:
    a, b, _, clock = pair()
    await sync(a, b)
    a.fail()
    await sync(a, b)
    clock.now += RESET
    await sync(a, b)
    assert a.breaker.allow()
    a.breaker.record_failure()
    await sync(a, b)
    assert b.breaker.state is BreakerState.OPEN
    assert b.breaker.open_remaining() == pytest.approx(RESET)
    # The lock went back with the verdict: after the pause the next probe may be B's.
    clock.now += RESET
    await sync(b, a)
    assert b.breaker.allow()
    assert not a.breaker.allow()


async def test_a_probe_that_never_reports_back_is_replaced_by_another_replicas() -> None:
    a, b, _, clock = pair()
    await sync(a, b)
    a.fail()
    await sync(a, b)
    clock.now += RESET
    await sync(a, b)
    assert a.breaker.allow()  # A's probe hangs: no verdict, no release
    clock.now += RESET
    await sync(b)  # the lock has expired
    assert b.breaker.allow()
    assert not a.breaker.allow()  # A's stale permit is gone with its lock


async def test_a_replica_that_starts_late_learns_an_open_breaker() -> None:
    a, _, store, clock = pair()
    await sync(a)
    a.fail()
    await sync(a)
    clock.now += 3.0
    late = Replica(store, clock)
    await sync(late)
    assert late.breaker.state is BreakerState.OPEN
    assert late.breaker.open_remaining() == pytest.approx(RESET - 3.0)


async def test_a_stale_record_read_during_an_own_transition_does_not_undo_it() -> None:
    """A closed record read while this replica's breaker opens is older than that opening."""
    clock = Clock()
    store = RacingStore(clock)
    a, b = Replica(store, clock), Replica(store, clock)
    await store.publish("kimi", BreakerRecord(BreakerState.CLOSED, "someone-else", RESET))
    store.during_read = a.fail  # A's breaker opens while its pass waits on the store
    await sync(a)
    assert a.breaker.state is BreakerState.OPEN
    await sync(a, b)  # the next pass publishes A's opening
    assert a.breaker.state is b.breaker.state is BreakerState.OPEN


class RacingStore(MemoryBreakerStore):
    """Runs `during_read` once while a read is in progress."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.during_read: Callable[[], None] | None = None

    async def read(self, services: Sequence[str]) -> dict[str, BreakerRecord | None]:
        found = await super().read(services)
        if self.during_read is not None:
            self.during_read()
            self.during_read = None
        return found


# ---------------------------------------------------------------------------- a failing store


class BrokenStore(MemoryBreakerStore):
    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.broken = False

    async def read(self, services: Sequence[str]) -> dict[str, BreakerRecord | None]:
        if self.broken:
            raise ConnectionError("Redis is gone")
        return await super().read(services)


async def test_when_the_store_fails_breakers_work_alone_and_it_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    store = BrokenStore(clock)
    a = Replica(store, clock)
    await sync(a)
    store.broken = True
    with caplog.at_level(logging.WARNING, logger="aiorch.shared_breakers"):
        assert not await a.sync.sync_once()
        assert not await a.sync.sync_once()
        a.fail()  # still opens on its own failures
        assert not a.breaker.allow()
        clock.now += RESET
        assert a.breaker.allow()  # and probes without a permit nobody could grant
        a.breaker.record_failure()
        assert not await a.sync.sync_once()
    failures = [r for r in caplog.records if "Redis failed" in r.getMessage()]
    assert len(failures) == 1  # once per incident, not once per pass
    caplog.clear()
    store.broken = False
    with caplog.at_level(logging.WARNING, logger="aiorch.shared_breakers"):
        assert await a.sync.sync_once()
        assert await a.sync.sync_once()
    assert [r.getMessage() for r in caplog.records] == [
        "circuit breakers: Redis recovered; breaker state is shared again"
    ]
    # The opening made while Redis was gone was published once it came back.
    record = (await store.read(["kimi"]))["kimi"]
    assert record is not None
    assert record.state is BreakerState.OPEN


async def test_a_hung_store_costs_the_background_pass_a_bounded_wait_only() -> None:
    class HungStore(MemoryBreakerStore):
        async def read(self, services: Sequence[str]) -> dict[str, BreakerRecord | None]:
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

    breaker = CircuitBreaker(BreakerSettings())
    sync_ = BreakerSync(HungStore(), {"kimi": breaker}, timeout=0.05)
    assert not await asyncio.wait_for(sync_.sync_once(), timeout=30)
    assert sync_.degraded


# ---------------------------------------------------------------------------- two dispatchers


async def test_two_dispatchers_on_one_store_skip_a_dead_backend_together() -> None:
    s = settings(
        breaker={"failure_threshold": THRESHOLD, "reset_seconds": 60.0}, retry={"attempts": 1}
    )
    store = MemoryBreakerStore()
    replicas = []
    for _ in range(2):
        registry = CollectorRegistry()
        backends = {service: FakeBackend(s.backend(service)) for service in Service}
        dispatcher = Dispatcher(s, backends, Metrics(registry), store, sync_interval=0.01)
        replicas.append((dispatcher, backends, registry))
    (a, a_backends, _), (b, b_backends, b_registry) = replicas
    try:
        a_backends[Service.KIMI].errors = [BackendConnectionError("down")] * THRESHOLD
        for _ in range(THRESHOLD):
            assert (await a.chain(KIMI_FIRST, REQUEST)).service is Service.QWEN

        deadline = time.monotonic() + 30  # anti-hang only: a pass takes milliseconds
        while sample(b_registry, "orchestrator_circuit_breaker_state", service="kimi") != 2:
            assert time.monotonic() < deadline, "B never saw the breaker open"
            await asyncio.sleep(0.01)

        answer = await b.chain(KIMI_FIRST, REQUEST)
        assert answer.service is Service.QWEN
        assert answer.fallback is not None
        assert answer.fallback.reason == "circuit_open"
        assert b_backends[Service.KIMI].calls == 0  # B never called the dead backend
    finally:
        await a.close()
        await b.close()
