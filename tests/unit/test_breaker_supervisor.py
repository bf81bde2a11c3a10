"""The supervisor: breakers' timers and active probes, with fake probes on a real event loop.

Intervals are tens of milliseconds. Every wait below is an anti-hang bound, never a claim about
speed: the claims are about order (which transition came first, what the probes saw).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import pytest

from aiorch.breaker import BreakerState, CircuitBreaker
from aiorch.breaker_supervisor import BreakerSupervisor
from aiorch.config import BreakerSettings
from aiorch.shared_breakers import BreakerRecord, MemoryBreakerStore

OPEN, HALF_OPEN, CLOSED = BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED
ANTI_HANG = 20.0


class FakeProbe:
    """Answers `ok`; records the breaker's state at each call."""

    def __init__(self, breaker: CircuitBreaker, ok: bool = True, error: bool = False) -> None:
        self.breaker = breaker
        self.ok = ok
        self.error = error
        self.seen: list[BreakerState] = []

    async def __call__(self) -> bool:
        self.seen.append(self.breaker.state)
        if self.error:
            raise ConnectionError("refused")
        return self.ok


def breaker(**settings: object) -> tuple[CircuitBreaker, list[BreakerState]]:
    changes: list[BreakerState] = []
    values: dict[str, object] = {"probe_interval": 0.02, "probe_jitter": 0.0, **settings}
    b = CircuitBreaker(BreakerSettings(**values), on_change=changes.append)  # type: ignore[arg-type]
    return b, changes


def trip(b: CircuitBreaker) -> None:
    for _ in range(b.settings.minimum_calls):
        assert b.acquire()
        b.on_failure(0.0)
    assert b.state is OPEN


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + ANTI_HANG
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.005)


async def test_failed_probes_do_not_delay_the_timer_that_turns_an_idle_breaker_half_open() -> None:
    b, changes = breaker(reset_seconds=0.3)
    probe = FakeProbe(b, ok=False)
    supervisor = BreakerSupervisor({"kimi": b}, {"kimi": probe})
    supervisor.start()
    try:
        trip(b)
        await until(lambda: HALF_OPEN in changes, "the timer to turn the breaker half-open")
        failed_while_open = probe.seen.count(OPEN)
        # A probe every 20 ms, each failing, through a 300 ms pause: had any of them lengthened
        # it, the breaker would still be open.
        assert failed_while_open >= 3
        await until(lambda: len(changes) >= 3, "the next probe's verdict")
        assert changes[:3] == [OPEN, HALF_OPEN, OPEN]  # half-open, a failed probe reopens it
    finally:
        await supervisor.close()


async def test_probes_close_an_idle_breaker_without_a_single_call() -> None:
    b, changes = breaker(reset_seconds=3600.0, half_open_calls=3)
    probe = FakeProbe(b, ok=True)
    supervisor = BreakerSupervisor({"kimi": b}, {"kimi": probe})
    supervisor.start()
    try:
        trip(b)
        await until(lambda: b.state is CLOSED, "the probes to close the breaker")
        assert changes == [OPEN, HALF_OPEN, CLOSED]  # the gauge followed, with nobody reading
        assert probe.seen == [OPEN, HALF_OPEN, HALF_OPEN, HALF_OPEN]
    finally:
        await supervisor.close()


async def test_a_probe_that_raises_is_a_failed_probe() -> None:
    b, changes = breaker(reset_seconds=3600.0)
    probe = FakeProbe(b, error=True)
    supervisor = BreakerSupervisor({"kimi": b}, {"kimi": probe})
    supervisor.start()
    try:
        trip(b)
        await until(lambda: len(probe.seen) >= 3, "three probes")
        assert b.state is OPEN
        assert changes == [OPEN]
    finally:
        await supervisor.close()


async def test_nothing_is_probed_while_the_breaker_is_closed() -> None:
    b, _ = breaker(reset_seconds=3600.0)
    probe = FakeProbe(b)
    supervisor = BreakerSupervisor({"kimi": b}, {"kimi": probe})
    supervisor.start()
    try:
        await asyncio.sleep(0.2)  # ten probe intervals
        assert probe.seen == []
        trip(b)
        await until(lambda: b.state is CLOSED, "the probes to close the breaker")
        probes = len(probe.seen)
        await asyncio.sleep(0.2)
        assert len(probe.seen) == probes  # closed again: the probes stopped
    finally:
        await supervisor.close()


async def test_each_breaker_has_its_own_probe_and_schedule() -> None:
    kimi, _ = breaker(reset_seconds=3600.0)
    qwen, _ = breaker(reset_seconds=3600.0)
    kimi_probe, qwen_probe = FakeProbe(kimi, ok=True), FakeProbe(qwen, ok=False)
    supervisor = BreakerSupervisor(
        {"kimi": kimi, "qwen": qwen}, {"kimi": kimi_probe, "qwen": qwen_probe}
    )
    supervisor.start()
    try:
        trip(kimi)
        trip(qwen)
        await until(lambda: kimi.state is CLOSED, "kimi's probes to close it")
        await until(lambda: len(qwen_probe.seen) >= 3, "qwen's probes")
        assert qwen.state is OPEN
    finally:
        await supervisor.close()


async def test_start_needs_a_loop_is_idempotent_and_close_stops_it() -> None:
    b, _ = breaker()
    supervisor = BreakerSupervisor({"kimi": b}, {})
    supervisor.start()
    supervisor.start()
    assert supervisor.running
    await supervisor.close()
    assert not supervisor.running
    supervisor.start()  # closed for good
    assert not supervisor.running


def test_start_outside_an_event_loop_is_refused() -> None:
    b, _ = breaker()
    with pytest.raises(RuntimeError):
        BreakerSupervisor({"kimi": b}, {}).start()


async def test_with_a_store_the_replicas_adopt_the_probing_replicas_verdict() -> None:
    store = MemoryBreakerStore()
    a, _ = breaker(reset_seconds=3600.0)
    b, b_changes = breaker(reset_seconds=3600.0)
    probe = FakeProbe(a, ok=True)
    # B has no probe of its own: whatever it learns of the backend, it learns from A.
    supervisors = [
        BreakerSupervisor({"kimi": a}, {"kimi": probe}, store, sync_interval=0.01),
        BreakerSupervisor({"kimi": b}, {}, store, sync_interval=0.01),
    ]
    for supervisor in supervisors:
        supervisor.start()
    try:
        trip(a)
        await until(lambda: a.state is CLOSED and b.state is CLOSED, "both to close")
        assert b_changes[0] is OPEN  # B skipped the backend on A's evidence...
        assert b_changes[-1] is CLOSED  # ...and took it back on A's probes
    finally:
        for supervisor in supervisors:
            await supervisor.close()


def test_a_supervisor_works_again_in_the_next_event_loop() -> None:
    """A CLI or a test may run one orchestrator in several loops in turn."""
    b, _ = breaker(reset_seconds=3600.0)
    probe = FakeProbe(b)
    supervisor = BreakerSupervisor({"kimi": b}, {"kimi": probe}, MemoryBreakerStore())

    async def first() -> None:
        supervisor.start()
        await asyncio.sleep(0.05)

    async def second() -> None:
        supervisor.start()
        try:
            trip(b)
            await until(lambda: b.state is CLOSED, "the probes to close the breaker")
        finally:
            await supervisor.close()

    asyncio.run(first())  # the loop ends, and the supervisor's tasks with it
    asyncio.run(second())


class SwallowingStore(MemoryBreakerStore):
    """A store whose read swallows a cancellation, as redis-py's calls have when a cancel raced
    one of their own timeouts (redis/redis-py#2028, #2551): the call returns as if nothing
    happened. Its first read waits until it is cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = asyncio.Event()
        self.swallowed = 0

    async def read(self, services: Sequence[str]) -> dict[str, BreakerRecord | None]:
        if not self.inside.is_set():
            self.inside.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.swallowed += 1
        return await super().read(services)


async def test_close_returns_even_when_the_store_swallows_the_cancellation() -> None:
    b, _ = breaker()
    store = SwallowingStore()
    supervisor = BreakerSupervisor({"kimi": b}, {}, store, sync_interval=0.01)
    supervisor.start()
    await until(store.inside.is_set, "the sync loop to read the store")
    await supervisor.close()  # used to wait for ever: the sync loop went on
    assert store.swallowed == 1
    assert not supervisor.running
