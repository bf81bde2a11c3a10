"""Circuit breakers shared by replicas, so that they skip a dead backend together.

Each replica keeps its own `CircuitBreaker`, consulted synchronously on every call; `BreakerSync`
keeps it in step with a `BreakerStore` (Redis with `AIORCH_REDIS_URL`), driven in the background
by `breaker_supervisor.BreakerSupervisor`, so no query waits on the store:

- a transition this replica makes itself (open, half-open, closed) is published at once, as a
  record with a fresh event id; an open record expires when the breaker turns half-open by its
  timer (`reset_seconds`), the others after `reset_seconds`;
- every `SYNC_INTERVAL` the others' records are read, and each new one is adopted once: open for
  the time the record has left, half-open (another replica's probe succeeded), or closed;
- while a breaker is not closed, one replica at a time probes the backend: before each probe a
  replica takes the store's probe lock for one probe interval (`SET NX PX`); a replica without
  it skips that round and adopts the verdict of the one that probed, which reaches it as a
  published transition (a failed probe changes nothing, so there is nothing to publish).

When the store fails, the breakers work alone (each replica probes for itself); the store is
skipped and tried again as `remote.RemoteDependency` says, logged once per incident.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Protocol

from aiorch.breaker import BreakerState, CircuitBreaker
from aiorch.remote import RETRY_INTERVAL, RemoteDependency

log = logging.getLogger(__name__)

SYNC_INTERVAL = 0.5  # seconds between reads of the others' state: how late a replica may learn
STORE_TIMEOUT = 1.0  # one pass's wait on the store; it runs in the background, off every query


class BreakerRecord(NamedTuple):
    """One replica's verdict on a backend, `remaining` seconds to live."""

    state: BreakerState
    event: str  # unique per transition: a replica applies each one once
    remaining: float


class BreakerStore(Protocol):
    """Where replicas share breaker state. Any method may raise; the sync then works alone."""

    async def publish(self, service: str, record: BreakerRecord) -> None:
        """Replace the service's record; it expires after `record.remaining` seconds."""
        ...

    async def read(self, services: Sequence[str]) -> dict[str, BreakerRecord | None]:
        """Each service's record, `remaining` being the time it has left."""
        ...

    async def acquire_probe(self, service: str, owner: str, ttl: float) -> bool:
        """Take the service's probe lock for `ttl` seconds unless someone holds it."""
        ...

    async def close(self) -> None: ...


class MemoryBreakerStore:
    """The store in this process: for several orchestrators in one process, and for tests."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._records: dict[str, tuple[BreakerState, str, float]] = {}
        self._locks: dict[str, tuple[str, float]] = {}

    async def publish(self, service: str, record: BreakerRecord) -> None:
        expires = self._clock() + record.remaining
        self._records[service] = (record.state, record.event, expires)

    async def read(self, services: Sequence[str]) -> dict[str, BreakerRecord | None]:
        now = self._clock()
        found: dict[str, BreakerRecord | None] = {}
        for service in services:
            kept = self._records.get(service)
            if kept is None or kept[2] <= now:
                found[service] = None
            else:
                found[service] = BreakerRecord(kept[0], kept[1], kept[2] - now)
        return found

    async def acquire_probe(self, service: str, owner: str, ttl: float) -> bool:
        now = self._clock()
        held = self._locks.get(service)
        if held is not None and held[1] > now:
            return False
        self._locks[service] = (owner, now + ttl)
        return True

    async def close(self) -> None:
        return None


class BreakerSync:
    """Keeps `breakers` (by service name) in step with the other replicas through `store`."""

    def __init__(
        self,
        store: BreakerStore,
        breakers: Mapping[str, CircuitBreaker],
        *,
        retry_interval: float = RETRY_INTERVAL,
        interval: float = SYNC_INTERVAL,
        timeout: float = STORE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.breakers = breakers
        self.interval = interval
        self.timeout = timeout
        self.remote = RemoteDependency(
            "circuit breakers",
            "Redis",
            "breakers are per process",
            retry_interval=retry_interval,
            clock=clock,
            logger=log,
        )
        self.owner = os.urandom(8).hex()  # this replica, as the holder of probe locks
        self.wake = asyncio.Event()  # set when an own transition waits to be published
        self._events = itertools.count(1)
        self._seen: dict[str, str] = {}  # the last record applied or published, per service
        self._pending: dict[str, str] = {}  # own transitions not yet published
        for service, breaker in breakers.items():
            breaker.listen(functools.partial(self.changed, service))

    @property
    def degraded(self) -> bool:
        return self.remote.degraded

    def changed(self, service: str, state: BreakerState, adopted: bool) -> None:
        """A breaker's transition: publish it soon, unless it came from another replica."""
        if not adopted:
            self._pending[service] = f"{self.owner}-{next(self._events)}"
            self.wake.set()

    def next_wait(self) -> float:
        """Seconds until the next pass is due."""
        return self.remote.retry_interval if self.degraded else self.interval

    async def sync_once(self) -> bool:
        """One bounded pass; False if the store failed or is resting (breakers work alone)."""
        if not self.remote.usable():
            return False
        try:
            async with asyncio.timeout(self.timeout):
                await self._exchange()
        except Exception as error:  # the store's trouble must never reach a query
            self.remote.failed(error)
            return False
        self.remote.succeeded()
        return True

    async def may_probe(self, service: str, ttl: float) -> bool:
        """Whether this replica probes `service` this round: it holds the store's probe lock,
        or the store is failing and every replica probes for itself."""
        if not self.remote.usable():
            return True
        try:
            async with asyncio.timeout(self.timeout):
                held = await self.store.acquire_probe(service, self.owner, ttl)
        except Exception as error:
            self.remote.failed(error)
            return True
        self.remote.succeeded()
        return held

    async def _exchange(self) -> None:
        """Publish own transitions, then adopt what is new from the others."""
        store = self.store
        for service, event in list(self._pending.items()):
            await store.publish(service, self._own_record(service, event))
            self._seen[service] = event
            if self._pending.get(service) == event:  # not replaced while we waited
                del self._pending[service]
        found = await store.read(list(self.breakers))
        for service, other in found.items():
            if other is None or other.event == self._seen.get(service):
                continue  # nothing new
            if service in self._pending:
                continue  # our own transition since is newer than anything read meanwhile
            self._seen[service] = other.event
            self.breakers[service].adopt(other.state, other.remaining)

    def _own_record(self, service: str, event: str) -> BreakerRecord:
        breaker = self.breakers[service]
        state = breaker.state
        if state is BreakerState.OPEN:
            return BreakerRecord(state, event, breaker.retry_after() or 0.0)
        # Kept as long as an open record would be: every replica reads it meanwhile.
        return BreakerRecord(state, event, breaker.settings.reset_seconds)

    async def close(self) -> None:
        await self.store.close()
