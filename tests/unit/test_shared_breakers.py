"""Breakers shared by replicas: the in-process store, the sync between two "replicas" on one
store (fake clocks, passes driven by hand), the probe lock, a failing store, and two replicas'
chains end to end.

The Redis store itself runs against a real redis-server in tests/integration/test_redis.py, and
two real replicas in tests/integration/test_replicas.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import pytest

from aiorch.breaker import BreakerState, CircuitBreaker
from aiorch.errors import BackendConnectionError
from aiorch.service_settings import BreakerSettings
from aiorch.shared_breakers import BreakerRecord, BreakerSync, MemoryBreakerStore
from tests.unit.chain_support import MakeRig, settings

OPEN, HALF_OPEN, CLOSED = BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED
RESET = 10.0
CALLS = 4  # minimum_calls: four failed calls open a breaker


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class Replica:
    """One replica's breaker for "kimi" and its sync, on a shared store and clock."""

    def __init__(self, store: MemoryBreakerStore, clock: Clock) -> None:
        self.clock = clock
        self.changes: list[BreakerState] = []
        self.breaker = CircuitBreaker(
            BreakerSettings(minimum_calls=CALLS, reset_seconds=RESET, half_open_calls=1),
            on_change=self.changes.append,
            clock=clock,
        )
        self.sync = BreakerSync(store, {"kimi": self.breaker}, retry_interval=1.0, clock=clock)

    def fail(self, times: int = CALLS) -> None:
        for _ in range(times):
            assert self.breaker.acquire()
            self.clock.now += 0.01
            self.breaker.on_failure(0.01)


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
    await store.publish("kimi", BreakerRecord(OPEN, "e1", 5.0))
    clock.now += 2.0
    assert await store.read(["kimi", "qwen"]) == {
        "kimi": BreakerRecord(OPEN, "e1", 3.0),
        "qwen": None,
    }
    clock.now += 3.0
    assert await store.read(["kimi"]) == {"kimi": None}

    assert await store.acquire_probe("kimi", "a", ttl=2.0)
    assert not await store.acquire_probe("kimi", "b", ttl=2.0)
    assert not await store.acquire_probe("kimi", "a", ttl=2.0)  # one probe per round, even a's
    clock.now += 2.0  # the round is over: whoever asks first probes next
    assert await store.acquire_probe("kimi", "b", ttl=2.0)


# ---------------------------------------------------------------------------- two replicas


async def test_a_breaker_opened_by_one_replica_is_open_on_the_other() -> None:
    a, b, _, clock = pair()
    await sync(a, b)
    a.fail()
    assert not a.breaker.acquire()
    assert b.breaker.acquire()  # B has not heard yet: the hot path never waits on the store
    b.breaker.on_release()
    await sync(a, b)
    assert b.breaker.state is OPEN
    assert not b.breaker.acquire()
    assert b.changes == [OPEN]  # what drives B's breaker-state gauge
    # B opens for what is left of A's pause, not a fresh one: both turn half-open together.
    clock.now += RESET - 1
    assert b.breaker.retry_after() == pytest.approx(1.0, abs=0.05)
    clock.now += 1
    b.breaker.advance()
    assert b.breaker.state is HALF_OPEN


async def test_one_replicas_probe_verdict_is_adopted_by_the_others() -> None:
    a, b, _, clock = pair()
    await sync(a, b)
    a.fail()
    await sync(a, b)
    assert await a.sync.may_probe("kimi", ttl=2.0)  # A probes this round...
    assert not await b.sync.may_probe("kimi", ttl=2.0)  # ...and B does not
    a.breaker.on_probe(True)  # the backend answers A's probe
    await sync(a, b)
    assert b.breaker.state is HALF_OPEN  # B lets its own trial calls through at once
    clock.now += 2.0
    assert await a.sync.may_probe("kimi", ttl=2.0)  # the next round's lock
    a.breaker.on_probe(True)  # one more success closes A (half_open_calls = 1 here)
    assert a.breaker.state is CLOSED
    await sync(a, b)
    assert b.breaker.state is CLOSED
    assert b.changes == [OPEN, HALF_OPEN, CLOSED]


async def test_a_failed_probe_publishes_nothing_and_leaves_the_others_as_they_were() -> None:
    a, b, store, clock = pair()
    await sync(a, b)
    a.fail()
    await sync(a, b)
    published = (await store.read(["kimi"]))["kimi"]
    clock.now += 2.0
    a.breaker.on_probe(False)
    await sync(a, b)
    record = (await store.read(["kimi"]))["kimi"]
    assert published is not None
    assert record is not None
    assert (record.state, record.event) == (OPEN, published.event)
    assert a.breaker.state is b.breaker.state is OPEN
    assert b.breaker.retry_after() == pytest.approx(RESET - 2.0, abs=0.05)  # not lengthened


async def test_a_replica_that_starts_late_learns_an_open_breaker() -> None:
    a, _, store, clock = pair()
    await sync(a)
    a.fail()
    await sync(a)
    clock.now += 3.0
    late = Replica(store, clock)
    await sync(late)
    assert late.breaker.state is OPEN
    assert late.breaker.retry_after() == pytest.approx(RESET - 3.0, abs=0.05)


async def test_a_stale_record_read_during_an_own_transition_does_not_undo_it() -> None:
    """A closed record read while this replica's breaker opens is older than that opening."""
    clock = Clock()
    store = RacingStore(clock)
    a, b = Replica(store, clock), Replica(store, clock)
    await store.publish("kimi", BreakerRecord(CLOSED, "someone-else", RESET))
    store.during_read = a.fail  # A's breaker opens while its pass waits on the store
    await sync(a)
    assert a.breaker.state is OPEN
    await sync(a, b)  # the next pass publishes A's opening
    assert a.breaker.state is b.breaker.state is OPEN


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
        self.reads = 0

    async def read(self, services: Sequence[str]) -> dict[str, BreakerRecord | None]:
        self.reads += 1
        if self.broken:
            raise ConnectionError("Redis is gone")
        return await super().read(services)

    async def acquire_probe(self, service: str, owner: str, ttl: float) -> bool:
        if self.broken:
            raise ConnectionError("Redis is gone")
        return await super().acquire_probe(service, owner, ttl)


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
        reads = store.reads
        assert not await a.sync.sync_once()
        assert store.reads == reads  # resting: not asked again within the retry interval
        a.fail()  # still opens on its own failures
        assert not a.breaker.acquire()
        assert await a.sync.may_probe("kimi", ttl=2.0)  # probes for itself
        clock.now += 1.0
        assert not await a.sync.sync_once()  # tried again, failed again: not logged again
        assert store.reads == reads + 1
    failures = [r for r in caplog.records if "Redis failed" in r.getMessage()]
    assert len(failures) == 1  # once per incident, not once per pass
    caplog.clear()
    store.broken = False
    clock.now += 1.0
    with caplog.at_level(logging.WARNING, logger="aiorch.shared_breakers"):
        assert await a.sync.sync_once()
        assert await a.sync.sync_once()
    assert [r.getMessage() for r in caplog.records] == ["circuit breakers: Redis recovered"]
    # The opening made while Redis was gone was published once it came back.
    record = (await store.read(["kimi"]))["kimi"]
    assert record is not None
    assert record.state is OPEN


async def test_a_hung_store_costs_the_background_pass_a_bounded_wait_only() -> None:
    class HungStore(MemoryBreakerStore):
        async def read(self, services: Sequence[str]) -> dict[str, BreakerRecord | None]:
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

    breaker = CircuitBreaker(BreakerSettings())
    sync_ = BreakerSync(HungStore(), {"kimi": breaker}, retry_interval=1.0, timeout=0.05)
    assert not await asyncio.wait_for(sync_.sync_once(), timeout=30)
    assert sync_.degraded


# ---------------------------------------------------------------------------- two replicas


async def test_two_replicas_on_one_store_skip_a_dead_backend_together(
    make_rig: MakeRig,
) -> None:
    s = settings(
        breaker={"minimum_calls": CALLS, "reset_seconds": 60.0, "probe_interval": 0},
        retry={"attempts": 1},
    )
    store = MemoryBreakerStore()
    a, b = make_rig(s, store), make_rig(s, store)
    a.backends["kimi"].errors = [BackendConnectionError("down")] * CALLS
    for _ in range(CALLS):
        started, _, _ = await a.run(a.kimi_first)
        assert started.service == "qwen"

    deadline = time.monotonic() + 30  # anti-hang only: a pass takes half a second
    while b.sample("orchestrator_circuit_breaker_state", service="kimi") != 2:
        assert time.monotonic() < deadline, "B never saw the breaker open"
        await asyncio.sleep(0.01)

    started, _, ended = await b.run(b.kimi_first)
    assert started.service == "qwen"
    assert ended.fallback is not None
    assert ended.fallback.reason == "circuit_open"
    assert b.backends["kimi"].calls == []  # B never called the dead backend
