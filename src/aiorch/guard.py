"""A cache that may fail without failing the query.

A remote cache (Redis) can be slow or gone. Every operation gets a bounded wait; a failure is
counted in `orchestrator_cache_errors_total`, logged once per incident (not once per request),
and the query goes on without the cache. While an incident lasts, the cache is tried again at
most every `probe_interval` seconds, so that a hung Redis does not add its timeout to every
request; the first success after an incident logs the recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from aiorch.cache import Cache, MemoryCache
from aiorch.monitoring.prometheus_metrics import Metrics

log = logging.getLogger(__name__)

PROBE_INTERVAL = 1.0  # seconds between attempts while the cache is failing
_NO_WAIT = contextlib.nullcontext()  # stateless, so one serves every operation


class CacheGuard:
    def __init__(
        self,
        cache: Cache,
        metrics: Metrics,
        timeout: float,
        probe_interval: float = PROBE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache = cache
        self.metrics = metrics
        self.timeout = timeout
        self.probe_interval = probe_interval
        self._clock = clock
        self.degraded = False
        self._failed_at = 0.0
        # The in-process cache answers without ever waiting: a timer per operation (about 4 us
        # on uvloop, two per cache miss) would bound nothing.
        self._in_process = isinstance(cache, MemoryCache)

    def _bounded(self) -> AbstractAsyncContextManager[object]:
        return _NO_WAIT if self._in_process else asyncio.timeout(self.timeout)

    async def get(self, key: str) -> bytes | None:
        if self._resting():
            return None
        try:
            async with self._bounded():
                value = await self.cache.get(key)
        except Exception as error:  # any cache failure must not fail the query
            self._failed("get", error)
            return None
        self._ok()
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if self._resting():
            return
        try:
            async with self._bounded():
                await self.cache.set(key, value, ttl)
        except Exception as error:
            self._failed("set", error)
            return
        self._ok()

    def _resting(self) -> bool:
        """During an incident, skip the cache between probes."""
        return self.degraded and self._clock() - self._failed_at < self.probe_interval

    def _failed(self, operation: str, error: BaseException) -> None:
        self.metrics.cache_errors.labels(operation).inc()
        self._failed_at = self._clock()
        if not self.degraded:
            self.degraded = True
            log.warning(
                "cache %s failed (%s: %s); answering without the cache until it recovers",
                operation,
                type(error).__name__,
                error,
            )

    def _ok(self) -> None:
        if self.degraded:
            self.degraded = False
            log.warning("cache recovered")
