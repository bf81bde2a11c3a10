"""`/readyz` without amplification: the backends' probes run at most once per `ttl` seconds,
however many callers ask, and concurrent callers share the one probe in flight.

Each probe is a call (or three) to every upstream; uncached, anyone who can reach `/readyz`
(no key needed: load balancers ask it) could make us call upstreams at their request rate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiorch.backends.base import Readiness

Probe = Callable[[], Awaitable[list[Readiness]]]


class ReadinessCache:
    def __init__(
        self, probe: Probe, ttl: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._probe = probe
        self.ttl = ttl
        self._clock = clock
        self._value: list[Readiness] | None = None
        self._expires = 0.0
        self._running: asyncio.Task[list[Readiness]] | None = None

    async def get(self) -> list[Readiness]:
        if self._value is not None and self._clock() < self._expires:
            return self._value
        if self._running is None:
            self._running = asyncio.ensure_future(self._refresh())
        # Shielded: a caller that goes away must not cancel the probe the others wait on.
        return await asyncio.shield(self._running)

    async def _refresh(self) -> list[Readiness]:
        try:
            value = await self._probe()
        finally:
            self._running = None
        self._value, self._expires = value, self._clock() + self.ttl
        return value


__all__ = ["ReadinessCache"]
