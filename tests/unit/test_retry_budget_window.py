"""The retry budget remembers only its window, even when nothing is ever retried."""

from __future__ import annotations

from aiorch.resilience import RetryBudget


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_first_attempts_older_than_the_window_are_forgotten_without_retries() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, window=10.0, clock=clock)
    for _ in range(10_000):  # an hour of calls, one every 0.36 s, none retried
        budget.record_attempt()
        clock.now += 0.36
    assert len(budget._attempts) <= 10.0 / 0.36 + 1


def test_the_budget_still_counts_every_attempt_inside_the_window() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.5, window=10.0, clock=clock)
    for _ in range(100):
        budget.record_attempt()
        clock.now += 1.0  # only the last ten are inside the window when the retries come
    assert [budget.try_spend() for _ in range(6)] == [True] * 5 + [False]
