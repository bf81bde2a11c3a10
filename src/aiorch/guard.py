"""A cache that may fail without failing the query.

A remote cache (Redis) can be slow or gone. Every operation gets a bounded wait; a failure is
counted in `orchestrator_cache_errors_total`, logged once per incident (not once per request),
and the query goes on without the cache. The first success after an incident logs the recovery.
"""

from __future__ import annotations

import asyncio
import logging

from aiorch.cache import Cache
from aiorch.monitoring.prometheus_metrics import Metrics

log = logging.getLogger(__name__)


class CacheGuard:
    def __init__(self, cache: Cache, metrics: Metrics, timeout: float) -> None:
        self.cache = cache
        self.metrics = metrics
        self.timeout = timeout
        self.degraded = False

    async def get(self, key: str) -> bytes | None:
        try:
            async with asyncio.timeout(self.timeout):
                value = await self.cache.get(key)
        except Exception as error:  # any cache failure must not fail the query
            self._failed("get", error)
            return None
        self._ok()
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.cache.set(key, value, ttl)
        except Exception as error:
            self._failed("set", error)
            return
        self._ok()

    def _failed(self, operation: str, error: BaseException) -> None:
        self.metrics.cache_errors.labels(operation).inc()
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
