"""`ReadinessCache`: one probe per `ttl` seconds, shared by concurrent callers, with a fake
clock and a counting probe (issue 17, finding 7)."""

from __future__ import annotations

import asyncio

import pytest

from aiorch.backends.base import Readiness
from aiorch.server.readiness import ReadinessCache


class Clock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


class Probe:
    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def __call__(self) -> list[Readiness]:
        self.calls += 1
        await self.release.wait()
        return [
            Readiness(
                service="qwen",
                kind="ollama",
                model="m",
                url=None,
                ready=True,
                detail=str(self.calls),
            )
        ]


async def test_concurrent_callers_share_one_probe_and_later_ones_the_cached_answer() -> None:
    clock, probe = Clock(), Probe()
    cache = ReadinessCache(probe, ttl=5.0, clock=clock)

    waiting = [asyncio.create_task(cache.get()) for _ in range(10)]
    await asyncio.sleep(0)
    probe.release.set()
    answers = await asyncio.gather(*waiting)

    assert probe.calls == 1
    assert {a[0].detail for a in answers} == {"1"}
    clock.now += 4.9
    assert (await cache.get())[0].detail == "1"
    clock.now += 0.2
    assert (await cache.get())[0].detail == "2"
    assert probe.calls == 2


async def test_a_caller_that_goes_away_does_not_cancel_the_probe_for_the_others() -> None:
    probe = Probe()
    cache = ReadinessCache(probe, ttl=5.0, clock=Clock())
    leaving = asyncio.create_task(cache.get())
    staying = asyncio.create_task(cache.get())
    await asyncio.sleep(0)

    leaving.cancel()
    probe.release.set()

    assert (await staying)[0].ready is True
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert probe.calls == 1


async def test_a_zero_ttl_probes_every_time() -> None:
    probe = Probe()
    probe.release.set()
    cache = ReadinessCache(probe, ttl=0.0, clock=Clock())

    await cache.get()
    await cache.get()

    assert probe.calls == 2
