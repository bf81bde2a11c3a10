"""A remote dependency that may fail without failing the query: skip it, and try it now and then.

Redis serves the answer cache, the rate limits and the breakers' shared state; each of them can
do without it (no cache, per-process buckets, per-process breakers). `RemoteDependency` is the
one policy they share: after a failure the dependency is skipped for `retry_interval` seconds
(`[server] redis_retry_interval`), so that a hung Redis does not add its timeout to every request;
then one operation tries it again. The first failure of an incident is logged, and so is the
first success after it: one line each per incident, never one per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

RETRY_INTERVAL = 1.0  # seconds: the default of `[server] redis_retry_interval`


class RemoteDependency:
    """Whether `user` should use `dependency` now, and the log lines of its incidents.

    `consequence` completes "...; <consequence> until it recovers" in the incident's log line.
    """

    def __init__(
        self,
        user: str,
        dependency: str,
        consequence: str,
        *,
        retry_interval: float,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:
        self.user = user
        self.dependency = dependency
        self.consequence = consequence
        self.retry_interval = retry_interval
        self._clock = clock
        self._log = logger
        self.degraded = False
        self._failed_at = 0.0

    def usable(self) -> bool:
        """False while resting after a failure; True when healthy or when a retry is due."""
        return not self.degraded or self._clock() - self._failed_at >= self.retry_interval

    def failed(self, error: BaseException) -> None:
        """An operation failed: rest for `retry_interval`; log it if an incident starts."""
        self._failed_at = self._clock()
        if not self.degraded:
            self.degraded = True
            self._log.warning(
                "%s: %s failed (%s: %s); %s until it recovers",
                self.user,
                self.dependency,
                type(error).__name__,
                error,
                self.consequence,
            )

    def succeeded(self) -> None:
        """An operation succeeded: the incident, if any, is over."""
        if self.degraded:
            self.degraded = False
            self._log.warning("%s: %s recovered", self.user, self.dependency)
