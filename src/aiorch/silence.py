"""A stream's idle and whole-life limits, kept by one timer rather than one per event."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")
# uvloop arms timers to the millisecond: one may fire that much before its time.
TIMER_RESOLUTION = 0.001


class Silent(Exception):
    def __init__(self, whole: bool) -> None:
        self.whole = whole  # the stream's whole-life limit, not the silence between events


class Silence:
    """A stream's idle limit (and its whole-life limit), on one timer, not one per event.

    `bounded` notes when a wait for the next event began; the timer, armed for the earliest
    moment a wait could run out, looks at the wait in progress when it fires, and either
    cancels it (its limit passed) or re-arms itself for that wait's limit. A healthy stream
    therefore costs a timer per idle period, where `asyncio.timeout` around each wait armed and
    cancelled one per event. Only a wait in progress is cancelled: time spent by the reader
    between events (a slow client) is not silence.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, idle: float, end_of_life: float) -> None:
        self.loop = loop
        self.idle = idle
        self.end_of_life = end_of_life
        self.waiting: asyncio.Task[object] | None = None
        self.since = 0.0
        self.expired: bool | None = None  # once the limit passed: whether it was the whole one
        self.timer: asyncio.TimerHandle | None = None

    async def bounded(self, wait: Awaitable[T]) -> T:
        task = asyncio.current_task(self.loop)  # given the loop, no getpid() system call
        assert task is not None
        self.waiting, self.since = task, self.loop.time()
        if self.timer is None:
            self.timer = self.loop.call_at(self._due(), self._check)
        try:
            return await wait
        except asyncio.CancelledError:
            if self.expired is not None and task.uncancel() == 0:  # ours, and nobody else's
                raise Silent(self.expired) from None
            raise
        finally:
            self.waiting = None

    def _due(self) -> float:
        return min(self.since + self.idle, self.end_of_life)

    def _check(self) -> None:
        self.timer = None
        if self.waiting is None:
            return  # the reader has the stream: the next wait re-arms the timer
        due = self._due()
        if self.loop.time() + TIMER_RESOLUTION >= due:
            self.expired = due >= self.end_of_life
            self.waiting.cancel()
        else:
            self.timer = self.loop.call_at(due, self._check)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
