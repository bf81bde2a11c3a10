"""Circuit breakers, the retry budget, recent latency, and one backend call with retries.

A breaker per backend skips a dead backend at once (open), lets one probe through after a pause
(half-open) and closes on success (`shared_breakers` keeps replicas' breakers in step). The
retry budget caps retries at a share of first attempts over a sliding window, so that during an
outage retries cannot multiply the load. Retries use tenacity with jittered exponential backoff
that honours the upstream's Retry-After, and never start a wait that would end past the call's
deadline. `LatencyWindow` keeps a backend's recent latencies for hedged requests.
"""

from __future__ import annotations

import asyncio
import enum
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt, wait_random_exponential

from aiorch.config import BreakerSettings, RetrySettings
from aiorch.errors import BackendError, is_retryable

T = TypeVar("T")


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


class CircuitBreaker:
    """Closed, open or half-open, decided from this process's calls and, when shared, others'.

    Alone, the breaker decides everything from its own calls. When a `shared_breakers.BreakerSync`
    keeps it in step with other replicas, the sync publishes the breaker's own transitions
    (`share`), brings in the others' (`adopt_open`, `adopt_close`), and marks it
    `coordinated` while the shared store answers: a half-open probe then needs the permit the
    sync gets from the store (`grant_probe`), so that one replica probes at a time. `allow()`
    never waits on the store either way.
    """

    def __init__(
        self,
        settings: BreakerSettings,
        on_change: Callable[[BreakerState], None] = lambda state: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._on_change = on_change
        self._on_local_change: Callable[[BreakerState], None] = lambda state: None
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._state = BreakerState.CLOSED
        self._probe_started: float | None = None
        self.coordinated = False
        self._permit = False

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= (
            self.settings.reset_seconds
        ):
            self._set(BreakerState.HALF_OPEN)
        return self._state

    def allow(self) -> bool:
        """Whether a call may go to the backend now; in half-open, only one probe at a time."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        now = self._clock()
        # A probe that never reported back (its caller vanished) must not wedge the breaker.
        if self._probe_started is not None and now - self._probe_started < (
            self.settings.reset_seconds
        ):
            return False
        if self.coordinated and (not self._permit or self._probe_started is not None):
            # No permit, or the vanished probe's permit (its lock has expired by now): the
            # next probe waits for a fresh permit, which may go to another replica.
            self._permit = False
            self._probe_started = None
            return False
        self._probe_started = now
        return True

    def share(self, on_local_change: Callable[[BreakerState], None]) -> None:
        """Report the breaker's own transitions (not adopted ones) to `on_local_change`."""
        self._on_local_change = on_local_change

    def coordinate(self, shared: bool) -> None:
        """Whether half-open probes need a permit: set by the sync while the store answers."""
        if not shared:
            self._permit = False  # whatever lock it stood for is not ours to count on
        self.coordinated = shared

    @property
    def wants_probe(self) -> bool:
        """Half-open and coordinated, without a permit to probe."""
        return self.state is BreakerState.HALF_OPEN and self.coordinated and not self._permit

    @property
    def has_permit(self) -> bool:
        return self._permit and self.state is BreakerState.HALF_OPEN

    def grant_probe(self) -> None:
        """This replica may send the half-open probe (it holds the shared probe lock)."""
        if self.state is BreakerState.HALF_OPEN:
            self._permit = True

    def open_remaining(self) -> float:
        """Seconds until an open breaker turns half-open (0.0 unless open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.settings.reset_seconds - self._clock())

    def record_success(self) -> None:
        self._failures = 0
        self._probe_started = None
        if self._state is not BreakerState.CLOSED:
            self._set(BreakerState.CLOSED)

    def record_failure(self) -> None:
        self._failures += 1
        self._probe_started = None
        if self._state is BreakerState.HALF_OPEN or (
            self._failures >= self.settings.failure_threshold
        ):
            self._opened_at = self._clock()
            self._set(BreakerState.OPEN, force=True)

    def release(self) -> None:
        """The call ended without a verdict (cancelled): let the next caller probe."""
        self._probe_started = None

    def adopt_open(self, remaining: float) -> None:
        """Another replica opened it: stay open for `remaining` seconds (or longer if already)."""
        if remaining <= 0 or self.open_remaining() >= remaining:
            return
        self._opened_at = self._clock() + remaining - self.settings.reset_seconds
        self._probe_started = None
        self._set(BreakerState.OPEN, local=False)

    def adopt_close(self) -> None:
        """Another replica's probe succeeded: the backend is back."""
        self._failures = 0
        self._probe_started = None
        self._set(BreakerState.CLOSED, local=False)

    def _set(self, state: BreakerState, *, local: bool = True, force: bool = False) -> None:
        if state is self._state and not force:
            return
        changed = state is not self._state
        self._state = state
        self._permit = False  # a permit is for one half-open period
        if changed:
            self._on_change(state)
        if local:
            self._on_local_change(state)


class RetryBudget:
    """Allows `ratio` retries per first attempt over the last `window` seconds."""

    def __init__(self, ratio: float, window: float, clock: Callable[[], float] = time.monotonic):
        self.ratio = ratio
        self.window = window
        self._clock = clock
        self._attempts: deque[float] = deque()
        self._retries: deque[float] = deque()

    def record_attempt(self) -> None:
        now = self._clock()
        self._attempts.append(now)
        # Forget attempts older than the window here too: with no retries `try_spend` never runs,
        # and the deque grew by one float per call for ever (about 4 MiB a minute at 2,000/s).
        while now - self._attempts[0] > self.window:
            self._attempts.popleft()

    def try_spend(self) -> bool:
        now = self._clock()
        for times in (self._attempts, self._retries):
            while times and now - times[0] > self.window:
                times.popleft()
        # At least one retry is always allowed so that a quiet service can still retry.
        if len(self._retries) + 1 > max(1.0, self.ratio * len(self._attempts)):
            return False
        self._retries.append(now)
        return True


class LatencyWindow:
    """The last `size` successful call latencies of one backend, and a quantile of them."""

    def __init__(self, size: int) -> None:
        self._recent: deque[float] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self._recent)

    def observe(self, seconds: float) -> None:
        self._recent.append(seconds)

    def quantile(self, q: float) -> float | None:
        if not self._recent:
            return None
        ordered = sorted(self._recent)
        rank = math.ceil(q * len(ordered))  # nearest rank: a value that was actually seen
        return ordered[min(len(ordered), max(1, rank)) - 1]


class _RetryPlan:
    """Decides whether to retry and how long to wait, together: the deadline can veto a wait.

    The wait is jittered exponential backoff, or the upstream's Retry-After plus a little jitter
    (never sooner than asked, and not all clients at the same instant).
    """

    def __init__(
        self,
        settings: RetrySettings,
        budget: RetryBudget,
        deadline: float | None,
        on_retry: Callable[[BackendError], None],
        on_budget_exhausted: Callable[[], None],
        jitter: Callable[[float, float], float],
    ) -> None:
        self.settings = settings
        self.budget = budget
        self.deadline = deadline
        self.on_retry = on_retry
        self.on_budget_exhausted = on_budget_exhausted
        self.jitter = jitter
        self.delay = 0.0
        self._backoff = wait_random_exponential(
            multiplier=settings.backoff_base, max=settings.backoff_max
        )

    def should_retry(self, state: RetryCallState) -> bool:
        # tenacity asks before it checks the stop condition: never spend on a last attempt.
        error = state.outcome.exception() if state.outcome else None
        settings = self.settings
        if state.attempt_number >= settings.attempts:
            return False
        if not isinstance(error, BackendError) or not is_retryable(error):
            return False
        if error.retry_after is not None:
            if error.retry_after > settings.max_retry_after:
                return False  # waiting that long is worse than falling back
            delay = error.retry_after + self.jitter(0.0, settings.backoff_base)
        else:
            delay = float(self._backoff(state))
        deadline = self.deadline
        if deadline is not None and asyncio.get_running_loop().time() + delay >= deadline:
            return False  # the retry could not finish in time: fall back now instead
        if not self.budget.try_spend():
            self.on_budget_exhausted()
            return False
        self.delay = delay
        self.on_retry(error)
        return True

    def wait(self, state: RetryCallState) -> float:
        return self.delay


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    settings: RetrySettings,
    budget: RetryBudget,
    on_retry: Callable[[BackendError], None],
    on_budget_exhausted: Callable[[], None],
    *,
    deadline: float | None = None,
    jitter: Callable[[float, float], float] = random.uniform,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run `call`, retrying retryable errors while attempts, the deadline and the budget allow.

    `deadline` is the event loop's time by which the whole call must be over.
    """
    budget.record_attempt()
    try:  # the first attempt goes straight out: tenacity's machinery only on failure
        return await call()
    except BackendError as error:
        if settings.attempts <= 1 or not is_retryable(error):
            raise
        first_error = error

    replayed = False

    async def attempt() -> T:
        # Tenacity's first attempt is the failure that already happened, so that its
        # predicate, wait and stop see the whole history without a second upstream call.
        nonlocal replayed
        if not replayed:
            replayed = True
            raise first_error
        return await call()

    plan = _RetryPlan(settings, budget, deadline, on_retry, on_budget_exhausted, jitter)
    retrying = AsyncRetrying(
        stop=stop_after_attempt(settings.attempts),
        wait=plan.wait,
        retry=plan.should_retry,
        reraise=True,
        sleep=sleep,
    )
    return await retrying(attempt)


async def hedged(
    first: Callable[[], Awaitable[T]],
    second: Callable[[], Awaitable[T]],
    delay: float,
    succeeded: Callable[[T], bool],
) -> list[T]:
    """Start `first`; if it has not finished after `delay` seconds, start `second` as well.

    Returns the outcomes in the order they finished, stopping at the first that `succeeded`
    (the other call is then cancelled). The calls report failure through their result, not by
    raising. One outcome means `second` was never started.
    """
    tasks = [asyncio.ensure_future(first())]
    outcomes: list[T] = []
    try:
        done, _ = await asyncio.wait(tasks, timeout=delay)
        if not done:
            tasks.append(asyncio.ensure_future(second()))
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            # Both may finish in the same turn: take a success first.
            finished = sorted((t.result() for t in done), key=lambda o: not succeeded(o))
            outcomes.extend(finished)
            if succeeded(finished[0]):
                break
        return outcomes
    finally:
        unfinished = [t for t in tasks if not t.done()]
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
