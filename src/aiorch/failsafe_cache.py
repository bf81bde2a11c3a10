"""A cache that may fail without failing the query.

A remote cache (Redis) can be slow or gone. Every operation gets a bounded wait; a failure is
counted in `orchestrator_cache_errors_total` and the query goes on without the cache. While an
incident lasts the cache is skipped and tried again now and then (`remote.RemoteDependency`:
logged once per incident, not once per request), so that a hung Redis does not add its timeout
to every request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import AbstractAsyncContextManager

from aiorch.cache import Cache, MemoryCache
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.remote import RemoteDependency

log = logging.getLogger(__name__)

_NO_WAIT = contextlib.nullcontext()  # stateless, so one serves every operation


class FailSafeCache:
    def __init__(
        self, cache: Cache, metrics: Metrics, timeout: float, remote: RemoteDependency
    ) -> None:
        self.cache = cache
        self.metrics = metrics
        self.timeout = timeout
        self.remote = remote
        # The in-process cache answers without ever waiting: a timer per operation (about 4 us
        # on uvloop, two per cache miss) would bound nothing.
        self._in_process = isinstance(cache, MemoryCache)

    @classmethod
    def build(
        cls,
        cache: Cache,
        metrics: Metrics,
        timeout: float,
        retry_interval: float,
        *,
        dependency: str = "Redis",  # the only remote cache there is
    ) -> FailSafeCache:
        remote = RemoteDependency(
            "cache",
            dependency,
            "answering without the cache",
            retry_interval=retry_interval,
            logger=log,
        )
        return cls(cache, metrics, timeout, remote)

    @property
    def degraded(self) -> bool:
        return self.remote.degraded

    def _bounded(self) -> AbstractAsyncContextManager[object]:
        return _NO_WAIT if self._in_process else asyncio.timeout(self.timeout)

    async def get(self, key: str) -> bytes | None:
        if not self.remote.usable():
            return None
        try:
            async with self._bounded():
                value = await self.cache.get(key)
        except Exception as error:  # any cache failure must not fail the query
            self._failed("get", error)
            return None
        self.remote.succeeded()
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if not self.remote.usable():
            return
        try:
            async with self._bounded():
                await self.cache.set(key, value, ttl)
        except Exception as error:
            self._failed("set", error)
            return
        self.remote.succeeded()

    def _failed(self, operation: str, error: BaseException) -> None:
        self.metrics.cache_errors.labels(operation).inc()
        self.remote.failed(error)
