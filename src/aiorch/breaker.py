"""The circuit breaker: a state machine driven by call outcomes and by time, never by reads.

Closed, it counts the outcomes of the last `window_seconds` and opens when at least
`minimum_calls` were made and `failure_rate` of them failed, or `slow_call_rate` of them took
`slow_call_seconds` or more (a slow call is its own signal: it may have succeeded). A count of
failures in a row (`consecutive_failures`) is an option, off by default: slow failures that end
together (calls hung until one deadline) make a run of failures out of traffic that is mostly
healthy.

Open, it refuses every call until `reset_seconds` have passed, then turns half-open. Half-open,
it lets `half_open_calls` trial calls through; that many successes close it, one failure opens
it again. An active probe (run by `breaker_supervisor.BreakerSupervisor` while the breaker is not
closed) reports through `on_probe`: a success turns an open breaker half-open and counts as a
trial success when half-open, so an idle service closes again without a user's call; a failure
reopens a half-open breaker but never lengthens an open period.

Reading (`state`, `retry_after`, `next_deadline`) changes nothing. Time-driven transitions happen
in `advance()`, which the supervisor calls when `next_deadline()` comes (and `acquire()` calls
too, so that a breaker without a supervisor still works). `on_change` hears of every transition
when it happens, so a gauge fed by it is never stale.

A call's outcome counts only for the state it started in: `seconds` (the call's duration) says
when it started, and the outcome of a call that started before the breaker last changed state is
dropped. So a hang admitted while closed cannot reopen a half-open breaker when it finally times
out, nor can a late failure lengthen an open period.
"""

from __future__ import annotations

import enum
import math
import time
from collections import deque
from collections.abc import Callable

from aiorch.service_settings import BreakerSettings

# How many parts the failure-rate window is counted in: the window slides a tenth at a time.
WINDOW_BUCKETS = 10
# Clock slack when comparing a call's start (now - its duration, measured by the caller) with
# the time of the last transition: a call admitted after a transition is never taken for stale.
START_SLACK = 0.001


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


# The members, at hand: an enum member looked up through its class costs about 50 ns, and the
# breaker looks at its state on every call.
_CLOSED, _HALF_OPEN, _OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN

# Hears (new state, adopted): adopted is True for a state taken from another replica.
Listener = Callable[[BreakerState, bool], None]


class OutcomeWindow:
    """Calls, failures and slow calls over the last `seconds`, in `WINDOW_BUCKETS` slices."""

    def __init__(self, seconds: float) -> None:
        self.width = seconds / WINDOW_BUCKETS
        self._slices: deque[tuple[int, list[int]]] = deque()  # (slice number, its 3 counts)
        self._epoch = -1  # the slice of the last call
        self._current = [0, 0, 0]
        self.calls = self.failures = self.slow = 0

    def add(self, now: float, failed: bool, slow: bool) -> None:
        epoch = int(now / self.width)
        if epoch != self._epoch:
            self._roll(epoch)
        current = self._current
        current[0] += 1
        self.calls += 1
        if failed:
            current[1] += 1
            self.failures += 1
        if slow:
            current[2] += 1
            self.slow += 1

    def clear(self) -> None:
        self._slices.clear()
        self._epoch = -1
        self._current = [0, 0, 0]
        self.calls = self.failures = self.slow = 0

    def _roll(self, epoch: int) -> None:
        """Start slice `epoch`, dropping the slices that fell out of the window."""
        self._epoch = epoch
        self._current = [0, 0, 0]
        slices = self._slices
        slices.append((epoch, self._current))
        while slices[0][0] <= epoch - WINDOW_BUCKETS:
            _, (calls, failures, slow) = slices.popleft()
            self.calls -= calls
            self.failures -= failures
            self.slow -= slow


class CircuitBreaker:
    """One service's breaker. Not thread-safe: it lives in one event loop."""

    def __init__(
        self,
        settings: BreakerSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] = lambda state: None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._on_change = on_change
        self._listeners: list[Listener] = []
        # Read on every call: kept at hand rather than looked up in the settings each time.
        self._enabled = settings.enabled
        self._slow_seconds = settings.slow_call_seconds or math.inf
        self._state = _CLOSED
        self._since = clock()  # when the current state began
        self._window = OutcomeWindow(settings.window_seconds)
        self._run = 0  # failures in a row, for the consecutive option
        self._open_until = 0.0
        self._trials = 0  # half-open: trial calls out now
        self._trial_successes = 0
        self._last_trial = 0.0

    # ------------------------------------------------------------------ reading (pure)

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def since(self) -> float:
        """When the breaker entered its current state (its clock's time)."""
        return self._since

    def retry_after(self) -> float | None:
        """Seconds until an open breaker turns half-open; None unless open."""
        if self._state is not _OPEN:
            return None
        return max(0.0, self._open_until - self.clock())

    def next_deadline(self) -> float | None:
        """The clock time at which `advance()` has a transition to make, if any."""
        if self._state is _OPEN:
            return self._open_until
        if self._state is _HALF_OPEN and self._trials > 0:
            return self._last_trial + self.settings.reset_seconds
        return None

    # ------------------------------------------------------------------ time

    def advance(self) -> None:
        """Make the transitions whose time has come."""
        now = self.clock()
        if self._state is _OPEN and now >= self._open_until:
            self._half_open(now)
        elif (
            self._state is _HALF_OPEN
            and self._trials > 0
            and now - self._last_trial >= self.settings.reset_seconds
        ):
            # Trial calls that never reported back (their caller vanished without a release)
            # must not wedge the breaker: hand their permits out again.
            self._trials = 0

    # ------------------------------------------------------------------ calls

    def acquire(self) -> bool:
        """Whether a call may go now; half-open, it takes one of the trial permits."""
        if self._state is _CLOSED:  # no timer runs while closed (nor ever when disabled)
            return True
        self.advance()  # in case the supervisor's timer has not fired yet
        if self._state is _OPEN:
            return False
        if self._trials + self._trial_successes >= self.settings.half_open_calls:
            return False
        self._trials += 1
        self._last_trial = self.clock()
        return True

    def on_success(self, seconds: float) -> None:
        """A call admitted by `acquire()` succeeded after `seconds`."""
        now = self.clock()
        if not self._counts(now, seconds):
            return
        if self._state is _HALF_OPEN:
            self._trials = max(0, self._trials - 1)
            self._trial_succeeded(now)
            return
        self._run = 0
        slow = seconds >= self._slow_seconds
        self._window.add(now, False, slow)
        if slow:  # a success lowers the failure rate: only the slow-call rate can trip here
            self._check(now)

    def on_failure(self, seconds: float) -> None:
        """A call admitted by `acquire()` failed after `seconds`, in a way that says the service
        is failing (not a request-specific refusal)."""
        now = self.clock()
        if not self._counts(now, seconds):
            return
        if self._state is _HALF_OPEN:
            self._open(now)
            return
        self._run += 1
        self._window.add(now, True, seconds >= self._slow_seconds)
        self._check(now)

    def on_release(self, seconds: float | None = None) -> None:
        """The call ended without a verdict (cancelled, or refused for its own content)."""
        if self._state is not _HALF_OPEN:
            return
        if seconds is not None and not self._counts(self.clock(), seconds):
            return
        self._trials = max(0, self._trials - 1)

    def on_probe(self, ok: bool) -> None:
        """The active probe's verdict (it runs only while the breaker is not closed)."""
        if not self._enabled:
            return
        now = self.clock()
        if self._state is _OPEN:
            if ok:  # a failure leaves the open period as it was: the timer still ends it
                self._half_open(now)
        elif self._state is _HALF_OPEN:
            if ok:
                self._trial_succeeded(now)
            else:
                self._open(now)

    # ------------------------------------------------------------------ sharing

    def listen(self, listener: Listener) -> None:
        """Also tell `listener` of every transition (the supervisor and the sharing use it)."""
        self._listeners.append(listener)

    def adopt(self, state: BreakerState, remaining: float) -> None:
        """Another replica's verdict: open for `remaining` seconds, half-open, or closed."""
        if not self._enabled:
            return
        now = self.clock()
        if state is _OPEN:
            if remaining <= 0:
                return
            if self._state is _OPEN:
                self._open_until = max(self._open_until, now + remaining)
                return
            self._open(now, remaining, adopted=True)
        elif state is _HALF_OPEN:
            if self._state is _OPEN:  # its probe succeeded: ours may try too
                self._half_open(now, adopted=True)
        elif self._state is not _CLOSED:
            self._close(now, adopted=True)

    # ------------------------------------------------------------------ transitions

    def _counts(self, now: float, seconds: float) -> bool:
        """Whether a call that ended now after `seconds` started in the current state."""
        if self._state is _OPEN or not self._enabled:
            return False  # nothing is admitted while open: such a call started before
        return now - seconds + START_SLACK >= self._since

    def _check(self, now: float) -> None:
        """Open if the window (or the run of failures, when that option is on) says so."""
        s, window = self.settings, self._window
        in_a_row = 0 < s.consecutive_failures <= self._run
        enough = window.calls >= s.minimum_calls
        failing = window.failures >= s.failure_rate * window.calls
        slow = window.slow >= s.slow_call_rate * window.calls and s.slow_call_seconds > 0
        if in_a_row or (enough and (failing or slow)):
            self._open(now)

    def _trial_succeeded(self, now: float) -> None:
        self._trial_successes += 1
        if self._trial_successes >= self.settings.half_open_calls:
            self._close(now)

    def _open(self, now: float, remaining: float | None = None, *, adopted: bool = False) -> None:
        self._open_until = now + (self.settings.reset_seconds if remaining is None else remaining)
        self._set(_OPEN, now, adopted)

    def _half_open(self, now: float, *, adopted: bool = False) -> None:
        self._trials = self._trial_successes = 0
        self._set(_HALF_OPEN, now, adopted)

    def _close(self, now: float, *, adopted: bool = False) -> None:
        self._window.clear()
        self._run = 0
        self._set(_CLOSED, now, adopted)

    def _set(self, state: BreakerState, now: float, adopted: bool) -> None:
        self._state = state
        self._since = now
        self._on_change(state)
        for listener in self._listeners:
            listener(state, adopted)
