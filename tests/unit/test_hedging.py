"""Hedged calls, and the latency window that decides when to hedge."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from aiorch.hedging import hedged
from aiorch.latency import LatencyWindow


def test_latency_window_quantile_is_a_seen_value_over_the_recent_calls() -> None:
    window = LatencyWindow(size=100)
    assert window.quantile(0.95) is None
    for value in range(1, 101):
        window.observe(float(value))
    assert window.quantile(0.95) == 95.0
    assert window.quantile(0.5) == 50.0
    assert window.quantile(1.0) == 100.0
    for _ in range(100):  # old values fall out
        window.observe(1.0)
    assert window.quantile(0.95) == 1.0
    assert len(window) == 100


def call(result: str, delay: float, log: list[str]) -> Callable[[], Awaitable[str]]:
    async def run() -> str:
        log.append(f"start {result}")
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            log.append(f"cancel {result}")
            raise
        return result

    return run


def ok(outcome: str) -> bool:
    return not outcome.startswith("fail")


async def test_no_hedge_when_the_first_call_answers_in_time() -> None:
    log: list[str] = []
    outcomes = await hedged(call("a", 0.0, log), call("b", 0.0, log), 0.5, ok)
    assert outcomes == ["a"]
    assert log == ["start a"]


async def test_the_hedge_answers_when_the_first_call_is_slow() -> None:
    log: list[str] = []
    outcomes = await hedged(call("a", 10.0, log), call("b", 0.0, log), 0.02, ok)
    assert outcomes == ["b"]
    assert log == ["start a", "start b", "cancel a"]


async def test_a_failure_of_either_waits_for_the_other() -> None:
    log: list[str] = []
    outcomes = await hedged(call("fail a", 0.05, log), call("b", 0.1, log), 0.01, ok)
    assert outcomes == ["fail a", "b"]
    both = await hedged(call("fail a", 0.05, log), call("fail b", 0.01, log), 0.01, ok)
    assert both == ["fail b", "fail a"]


async def test_cancelling_a_hedged_call_cancels_both() -> None:
    log: list[str] = []
    task = asyncio.ensure_future(hedged(call("a", 10, log), call("b", 10, log), 0.01, ok))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(log) == ["cancel a", "cancel b", "start a", "start b"]
