"""The background half of the circuit breakers: their timers, their active probes, their sharing.

`CircuitBreaker` is a state machine that never acts by itself. `BreakerSupervisor` runs, per
breaker, one task that sleeps until the breaker's next deadline (open -> half-open) or its next
probe, whichever is first, and wakes early on any transition. So an idle service's breaker (and
the gauge fed by its `on_change`) changes state when its time comes, not when someone looks.

While a breaker is not closed, its probe (an injected `async () -> bool`, in practice the
backend's readiness probe) runs every `probe_interval` seconds, jittered by `probe_jitter` so
that replicas and services do not probe in step. The first probe comes one interval after the
breaker opened. A success turns an open breaker half-open and counts as a trial success when it
is half-open, so with no traffic at all a recovered service is closed again a few probe
intervals after it recovered; a failure never lengthens an open period.

With a `BreakerStore`, the supervisor also runs the `shared_breakers.BreakerSync` passes and
takes the store's probe lock before each probe, so that one replica probes and all adopt its
verdict; without the store (or while it fails) each replica probes for itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Mapping

from aiorch.breaker import BreakerState, CircuitBreaker
from aiorch.remote import RETRY_INTERVAL
from aiorch.shared_breakers import SYNC_INTERVAL, BreakerStore, BreakerSync

log = logging.getLogger(__name__)

Probe = Callable[[], Awaitable[bool]]

# A probe gets one probe interval to answer, and never less than this (seconds).
MIN_PROBE_TIMEOUT = 1.0
# How long `close` waits for its tasks before it cancels them again (seconds).
CLOSE_WAIT = 1.0


class BreakerSupervisor:
    """Timers and active probes for `breakers` (by service name); sharing through `store`."""

    def __init__(
        self,
        breakers: Mapping[str, CircuitBreaker],
        probes: Mapping[str, Probe],
        store: BreakerStore | None = None,
        *,
        retry_interval: float = RETRY_INTERVAL,
        sync_interval: float = SYNC_INTERVAL,
        rng: random.Random | None = None,
    ) -> None:
        self.breakers = breakers
        self.probes = probes
        self.sync = (
            None
            if store is None
            else BreakerSync(
                store,
                breakers,
                retry_interval=retry_interval,
                interval=sync_interval,
            )
        )
        self._rng = rng or random.Random()
        self._wake = {name: asyncio.Event() for name in breakers}
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        for name, breaker in breakers.items():
            breaker.listen(functools.partial(self._changed, name))

    def _changed(self, name: str, state: BreakerState, adopted: bool) -> None:
        self._wake[name].set()  # its deadline or probe schedule may have changed

    @property
    def running(self) -> bool:
        return any(not task.done() for task in self._tasks)

    def start(self) -> None:
        """Start the background tasks, unless running or closed. Needs a running event loop.

        After the loop they ran in has ended (a CLI or a test may run several loops in turn),
        `start()` in the next loop starts them again there.
        """
        if self._closed or self.running:
            return
        loop = asyncio.get_running_loop()
        # Events belong to the loop that first waits on them: fresh ones for this loop.
        for name in self.breakers:
            self._wake[name] = asyncio.Event()
        if self.sync is not None:
            self.sync.wake = asyncio.Event()
            self.sync.wake.set()  # publish what happened while nothing ran
        self._tasks = [
            loop.create_task(self._watch(name), name=f"aiorch-breaker-{name}")
            for name in self.breakers
        ]
        if self.sync is not None:
            self._tasks.append(loop.create_task(self._share(self.sync), name="aiorch-breaker-sync"))

    async def close(self) -> None:
        """Stop the tasks and close the store.

        The loops also stop by themselves once closed: a library that swallows a cancellation
        (redis-py's calls have, when the cancel raced one of their own timeouts) would otherwise
        keep its loop, and this close, waiting for ever. A task still running after a second is
        cancelled again.
        """
        self._closed = True
        while self._tasks:
            for task in self._tasks:
                task.cancel()
            done, pending = await asyncio.wait(self._tasks, timeout=CLOSE_WAIT)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.warning("breaker task %s failed: %r", task.get_name(), task.exception())
            self._tasks = list(pending)
        if self.sync is not None:
            await self.sync.close()

    async def _watch(self, name: str) -> None:
        """Advance the breaker at its deadlines and probe it while it is not closed."""
        breaker, wake = self.breakers[name], self._wake[name]
        probe = self.probes.get(name)
        next_probe: float | None = None
        opened = -1.0  # the `since` of the open period the probe schedule belongs to
        while not self._closed:
            wake.clear()
            breaker.advance()
            now = breaker.clock()
            state = breaker.state
            if (
                state is BreakerState.CLOSED
                or probe is None
                or breaker.settings.probe_interval <= 0
            ):
                next_probe = None
            elif state is BreakerState.OPEN and breaker.since != opened:
                opened = breaker.since  # newly opened: the first probe one interval from now
                next_probe = now + self._interval(breaker)
            elif next_probe is None:
                next_probe = now + self._interval(breaker)
            elif now >= next_probe:
                await self._probe(name, breaker, probe)
                next_probe = breaker.clock() + self._interval(breaker)
                continue
            due = [t for t in (breaker.next_deadline(), next_probe) if t is not None]
            await _wait_for(wake, max(0.0, min(due) - now) if due else None)

    async def _probe(self, name: str, breaker: CircuitBreaker, probe: Probe) -> None:
        interval = breaker.settings.probe_interval
        if self.sync is not None and not await self.sync.may_probe(name, interval):
            return  # another replica probes this round; its verdict comes through the store
        try:
            async with asyncio.timeout(max(interval, MIN_PROBE_TIMEOUT)):
                ok = await probe()
        except Exception as error:  # a probe that raises or hangs says the service is not back
            log.debug("breaker probe for %s failed: %r", name, error)
            ok = False
        breaker.on_probe(ok)

    def _interval(self, breaker: CircuitBreaker) -> float:
        settings = breaker.settings
        spread = settings.probe_jitter
        return settings.probe_interval * (1.0 + self._rng.uniform(-spread, spread))

    async def _share(self, sync: BreakerSync) -> None:
        while not self._closed:
            sync.wake.clear()
            await sync.sync_once()
            await _wait_for(sync.wake, sync.next_wait())


async def _wait_for(event: asyncio.Event, seconds: float | None) -> None:
    """Until `event` is set or `seconds` have passed (None: no limit)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
