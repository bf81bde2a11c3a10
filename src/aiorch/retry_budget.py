"""The retry budget: how many retries a backend may take, so that retries cannot multiply an
outage's load, yet an isolated request still gets its retry.

Two rules, either of which allows a retry (as Envoy's retry budget has them):

- the ratio: `ratio` retries per first attempt over the last `window` seconds (0.2: at most one
  call in six is a retry while traffic is steady);
- the floor: fewer than `min_concurrent` retries are in flight now (Envoy's
  `min_retry_concurrency`). Without it, a ratio over a window leaves a quiet service's lone
  request no retry when another request retried a few seconds before; a floor on retries *in
  flight* cannot add up during an outage, because each retry ends within its call's deadline.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class RetryBudget:
    def __init__(
        self,
        ratio: float,
        window: float,
        min_concurrent: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio = ratio
        self.window = window
        self.min_concurrent = min_concurrent
        self._clock = clock
        self._attempts: deque[float] = deque()
        self._retries: deque[float] = deque()
        self.in_flight = 0  # retries spent and not yet finished

    def record_attempt(self) -> None:
        now = self._clock()
        self._attempts.append(now)
        # Forget attempts older than the window here too: with no retries `try_spend` never runs,
        # and the deque grew by one float per call for ever (about 4 MiB a minute at 2,000/s).
        while now - self._attempts[0] > self.window:
            self._attempts.popleft()

    def try_spend(self) -> bool:
        """Take a retry if either rule allows one; `finished()` must follow when it ends."""
        now = self._clock()
        for times in (self._attempts, self._retries):
            while times and now - times[0] > self.window:
                times.popleft()
        within_ratio = len(self._retries) + 1 <= self.ratio * len(self._attempts)
        if not within_ratio and self.in_flight >= self.min_concurrent:
            return False
        self._retries.append(now)
        self.in_flight += 1
        return True

    def finished(self) -> None:
        """A retry taken with `try_spend()` is over (answered, failed, or never started)."""
        self.in_flight = max(0, self.in_flight - 1)
