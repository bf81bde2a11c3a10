"""The retry budget: a share of first attempts over a window, with a floor of retries in flight."""

from __future__ import annotations

import asyncio

import pytest

from aiorch.config import RetrySettings
from aiorch.errors import BackendConnectionError
from aiorch.retries import call_with_retries
from aiorch.retry_budget import RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_ratio_allows_a_share_of_first_attempts_over_its_window() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, window=10.0, min_concurrent=0, clock=clock)
    assert not budget.try_spend()  # no floor, no attempts: nothing to take a share of
    for _ in range(20):
        budget.record_attempt()
    assert [budget.try_spend() for _ in range(5)] == [True] * 4 + [False]  # 20 x 0.2
    clock.now += 10.5  # everything slides out of the window
    for _ in range(5):
        budget.record_attempt()
    assert [budget.try_spend() for _ in range(2)] == [True, False]


def test_an_isolated_request_gets_its_retry_after_another_one_retried() -> None:
    """Issue 16: 0.2 retries per attempt over 10 s left a lone request no retry when another
    request had retried within the last 10 s."""
    clock = Clock()
    budget = RetryBudget(ratio=0.2, window=10.0, min_concurrent=3, clock=clock)
    budget.record_attempt()
    assert budget.try_spend()
    budget.finished()
    clock.now += 3.0  # a quiet service: the next request comes three seconds later
    budget.record_attempt()
    assert budget.try_spend()  # the ratio says no (2 retries for 2 attempts); the floor says yes
    assert not RetryBudget(ratio=0.2, window=10.0, min_concurrent=0, clock=clock).try_spend()


def test_the_floor_bounds_retries_in_flight_during_an_outage() -> None:
    budget = RetryBudget(ratio=0.2, window=10.0, min_concurrent=3, clock=Clock())
    for _ in range(10):
        budget.record_attempt()
    taken = [budget.try_spend() for _ in range(10)]
    assert taken == [True] * 3 + [False] * 7  # two by the ratio, a third by the floor
    budget.finished()
    assert budget.try_spend()  # one ended: its place in the floor is free again
    assert not budget.try_spend()


def test_first_attempts_older_than_the_window_are_forgotten_without_retries() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, window=10.0, clock=clock)
    for _ in range(10_000):  # an hour of calls, one every 0.36 s, none retried
        budget.record_attempt()
        clock.now += 0.36
    assert len(budget._attempts) <= 10.0 / 0.36 + 1


def test_the_budget_still_counts_every_attempt_inside_the_window() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.5, window=10.0, min_concurrent=0, clock=clock)
    for _ in range(100):
        budget.record_attempt()
        clock.now += 1.0  # only the last ten are inside the window when the retries come
    assert [budget.try_spend() for _ in range(6)] == [True] * 5 + [False]


async def test_retries_hand_their_place_back_when_they_end() -> None:
    budget = RetryBudget(ratio=0.0, window=10.0, min_concurrent=1)
    failures: list[BackendConnectionError] = []

    async def call() -> str:
        if failures:
            raise failures.pop()
        return "ok"

    async def no_wait(seconds: float) -> None:
        return None

    settings = RetrySettings(attempts=2)
    for _ in range(3):  # each needs the floor's one place, and finds it free
        failures.append(BackendConnectionError("reset"))
        result = await call_with_retries(
            call, settings, budget, lambda e: None, lambda: None, sleep=no_wait
        )
        assert result == "ok"
        assert budget.in_flight == 0


async def test_a_retry_cancelled_during_its_wait_hands_its_place_back() -> None:
    budget = RetryBudget(ratio=0.0, window=10.0, min_concurrent=1)

    async def call() -> str:
        raise BackendConnectionError("reset")

    async def long_wait(seconds: float) -> None:
        await asyncio.sleep(3600)

    task = asyncio.ensure_future(
        call_with_retries(
            call, RetrySettings(attempts=2), budget, lambda e: None, lambda: None, sleep=long_wait
        )
    )
    await asyncio.sleep(0.01)
    assert budget.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert budget.in_flight == 0
