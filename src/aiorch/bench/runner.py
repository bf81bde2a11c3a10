"""The two load shapes: closed loop (fixed concurrency) and open loop (constant arrival rate).

Closed loop: `concurrency` workers, each sending its next request when the last one is answered.
It finds throughput ceilings, but a slow answer also delays the requests that would have been
sent meanwhile, so its latencies understate the tail (coordinated omission).

Open loop: request i is due at `start + i / rate` whatever happened before, and its latency is
measured from that intended time. When the server falls behind, the wait shows up in the latency,
as it would for real users. `max_in_flight` bounds the memory a stalled server can cost; requests
waiting for a slot are still timed from their intended send time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import msgspec

from aiorch.bench.mix import Picker
from aiorch.bench.stats import Recorder, Summary
from aiorch.bench.targets import Target, error_type_of

# (completed, failed, elapsed seconds) -> None; called a few times a second, never per request.
ProgressHook = Callable[[int, int, float], None]
TICK = 0.1


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """How much load, of which shape. Exactly one of `requests` and `duration` bounds the run."""

    concurrency: int = 1
    rate: float | None = None  # set: open loop at this many requests per second
    requests: int | None = None
    duration: float | None = None  # seconds
    warmup: int = 0  # requests sent (closed loop, same concurrency) and discarded first
    timeout: float | None = None  # client-side deadline per request, seconds
    max_in_flight: int = 10_000

    @property
    def mode(self) -> str:
        return "open" if self.rate is not None else "closed"

    def check(self) -> None:
        if (self.requests is None) == (self.duration is None):
            raise ValueError("give exactly one of requests and duration")
        if self.requests is not None and self.requests < 1:
            raise ValueError("requests must be at least 1")
        if self.duration is not None and self.duration <= 0:
            raise ValueError("duration must be positive")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive")
        if self.max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")


async def run(
    target: Target,
    picker: Picker,
    plan: Plan,
    *,
    progress: ProgressHook | None = None,
    recorder: Recorder | None = None,
) -> Summary:
    """Run the plan against the target and summarise; the target is not closed."""
    plan.check()
    if plan.warmup:
        await _closed(target, picker, plan, Recorder(), plan.warmup, None)
    recorder = recorder if recorder is not None else Recorder()
    started = time.perf_counter()
    ticker = asyncio.create_task(_tick(recorder, started, progress)) if progress else None
    try:
        if plan.rate is not None:
            await _open(target, picker, plan, recorder, started)
        else:
            deadline = started + plan.duration if plan.duration is not None else None
            await _closed(target, picker, plan, recorder, plan.requests, deadline)
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
    elapsed = time.perf_counter() - started
    if progress is not None:
        progress(recorder.completed, recorder.failed, elapsed)
    return recorder.summary(
        target=target.description,
        mode=plan.mode,
        concurrency=plan.concurrency if plan.rate is None else None,
        target_rate=plan.rate,
        duration=elapsed,
    )


async def _tick(recorder: Recorder, started: float, progress: ProgressHook) -> None:
    while True:
        progress(recorder.completed, recorder.failed, time.perf_counter() - started)
        await asyncio.sleep(TICK)


async def _one(target: Target, picker: Picker, plan: Plan, recorder: Recorder) -> None:
    item = picker.next()
    sent = time.perf_counter()
    try:
        async with asyncio.timeout(plan.timeout):
            outcome = await target.call(item)
    except Exception as error:  # every failure is a result to count, not a crash
        recorder.failure(error_type_of(error))
        return
    recorder.success(
        time.perf_counter() - sent,
        service=outcome.service,
        cached=outcome.cached,
        ttft=outcome.ttft,
    )


async def _closed(
    target: Target,
    picker: Picker,
    plan: Plan,
    recorder: Recorder,
    limit: int | None,
    deadline: float | None,
) -> None:
    claimed = 0

    async def worker() -> None:
        nonlocal claimed
        while True:
            if limit is not None and claimed >= limit:
                return
            if deadline is not None and time.perf_counter() >= deadline:
                return
            claimed += 1
            await _one(target, picker, plan, recorder)

    workers = plan.concurrency if limit is None else min(plan.concurrency, limit)
    await asyncio.gather(*(worker() for _ in range(workers)))


async def _open(
    target: Target, picker: Picker, plan: Plan, recorder: Recorder, started: float
) -> None:
    assert plan.rate is not None
    interval = 1.0 / plan.rate
    slots = asyncio.Semaphore(plan.max_in_flight)
    tasks: set[asyncio.Task[None]] = set()

    async def timed(intended: float) -> None:
        try:
            item = picker.next()
            sent = time.perf_counter()
            try:
                async with asyncio.timeout(plan.timeout):
                    outcome = await target.call(item)
            except Exception as error:
                recorder.failure(error_type_of(error), lag=sent - intended)
                return
            done = time.perf_counter()
            # Timers may wake a little early; never report less than the service time.
            recorder.success(
                done - min(intended, sent),
                service=outcome.service,
                cached=outcome.cached,
                ttft=outcome.ttft,
                service_time=done - sent,
                lag=sent - intended,
            )
        finally:
            slots.release()

    index = 0
    while True:
        intended = started + index * interval
        if plan.requests is not None and index >= plan.requests:
            break
        if plan.duration is not None and intended >= started + plan.duration:
            break
        delay = intended - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        # A full house delays the send; the latency still counts from the intended time.
        await slots.acquire()
        task = asyncio.create_task(timed(intended))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        index += 1
    if tasks:
        await asyncio.gather(*tasks)
