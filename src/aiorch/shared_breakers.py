"""Circuit breakers shared by replicas, so that they skip a dead backend together.

Each replica keeps its own `CircuitBreaker`, consulted synchronously on every call as before;
`BreakerSync` keeps it in step with a `BreakerStore` (Redis with `AIORCH_REDIS_URL`) in the
background, so no query waits on the store:

- a breaker this replica opens or closes is published at once, as a record with a fresh event
  id; an open record expires when the breaker turns half-open (`reset_seconds`);
- every `SYNC_INTERVAL` the others' records are read, and each new one is adopted once: open
  for the time the record has left, or closed;
- a half-open breaker may probe only with a permit: the store's probe lock (`SET NX PX`), held
  by one replica at a time and given back with the verdict; a holder that vanishes loses it
  after `reset_seconds`.

When the store fails, the breakers work alone (half-open probes need no permit), the incident is
logged once, and the store is tried again once a second; the first success logs the recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Protocol

from aiorch.resilience import BreakerState, CircuitBreaker

log = logging.getLogger(__name__)

SYNC_INTERVAL = 0.5  # seconds between reads of the others' state: how late a replica may learn
PROBE_INTERVAL = 1.0  # seconds between attempts while the store is failing
STORE_TIMEOUT = 1.0  # one pass's wait on the store; it runs in the background, off every query


class BreakerRecord(NamedTuple):
    """One replica's verdict on a backend: open or closed, `remaining` seconds to live."""

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

    async def release_probe(self, service: str, owner: str) -> None:
        """Give the lock back, if `owner` still holds it."""
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

    async def release_probe(self, service: str, owner: str) -> None:
        held = self._locks.get(service)
        if held is not None and held[0] == owner:
            del self._locks[service]

    async def close(self) -> None:
        return None


class BreakerSync:
    """Keeps `breakers` (by service name) in step with the other replicas through `store`."""

    def __init__(
        self,
        store: BreakerStore,
        breakers: Mapping[str, CircuitBreaker],
        *,
        interval: float = SYNC_INTERVAL,
        probe_interval: float = PROBE_INTERVAL,
        timeout: float = STORE_TIMEOUT,
    ) -> None:
        self.store = store
        self.breakers = breakers
        self.interval = interval
        self.probe_interval = probe_interval
        self.timeout = timeout
        self.owner = os.urandom(8).hex()  # this replica, as the holder of probe locks
        self.degraded = False
        self._events = itertools.count(1)
        self._seen: dict[str, str] = {}  # the last record applied or published, per service
        self._pending: dict[str, str] = {}  # own transitions not yet published
        self._holding: set[str] = set()  # probe locks this replica holds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        for service, breaker in breakers.items():
            breaker.share(functools.partial(self.changed, service))

    def changed(self, service: str, state: BreakerState) -> None:
        """A breaker's own transition: publish it, or ask for a probe permit, soon."""
        if state is not BreakerState.HALF_OPEN:
            self._pending[service] = f"{self.owner}-{next(self._events)}"
        self._wake.set()

    def ensure_running(self) -> None:
        """Start the background sync if an event loop runs here and it is not running yet."""
        if self._closed or (self._task is not None and not self._task.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not in the loop yet: the first call will start it
        self._task = loop.create_task(self._run(), name="aiorch-breaker-sync")

    async def _run(self) -> None:
        while True:
            await self.sync_once()
            wait = self.probe_interval if self.degraded else self.interval
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self._wake.clear()

    async def sync_once(self) -> bool:
        """One bounded pass; False if the store failed (the breakers then work alone)."""
        try:
            async with asyncio.timeout(self.timeout):
                await self._exchange()
        except Exception as error:  # the store's trouble must never reach a query
            self._failed(error)
            return False
        self._recovered()
        return True

    async def _exchange(self) -> None:
        """Publish own transitions, give back spent permits, adopt others', ask for permits."""
        store = self.store
        for service, event in list(self._pending.items()):
            record = self._own_record(service, event)
            if record is not None:
                await store.publish(service, record)
            self._seen[service] = event
            if self._pending.get(service) == event:  # not replaced while we waited
                del self._pending[service]
        for service in list(self._holding):
            if not self.breakers[service].has_permit:
                await store.release_probe(service, self.owner)
                self._holding.discard(service)
        records = await store.read(list(self.breakers))
        for service, record in records.items():
            if record is None or record.event == self._seen.get(service):
                continue  # nothing new
            if service in self._pending:
                continue  # our own transition since is newer than anything read meanwhile
            self._seen[service] = record.event
            breaker = self.breakers[service]
            if record.state is BreakerState.OPEN:
                breaker.adopt_open(record.remaining)
            else:
                breaker.adopt_close()
        for service, breaker in self.breakers.items():
            if service in self._holding or not breaker.wants_probe:
                continue
            reset = breaker.settings.reset_seconds
            if await store.acquire_probe(service, self.owner, reset):
                self._holding.add(service)
                breaker.grant_probe()

    def _own_record(self, service: str, event: str) -> BreakerRecord | None:
        breaker = self.breakers[service]
        state = breaker.state
        if state is BreakerState.OPEN:
            return BreakerRecord(state, event, breaker.open_remaining())
        if state is BreakerState.CLOSED:
            # Kept as long as an open record would be: every replica reads it meanwhile.
            return BreakerRecord(state, event, breaker.settings.reset_seconds)
        return None  # half-open already: the open has run out, nothing worth telling

    def _failed(self, error: BaseException) -> None:
        if not self.degraded:
            self.degraded = True
            log.warning(
                "circuit breakers: Redis failed (%s: %s); breakers are per process until it "
                "recovers",
                type(error).__name__,
                error,
            )
        self._holding.clear()  # unknown: the locks expire by themselves
        for breaker in self.breakers.values():
            breaker.coordinate(False)

    def _recovered(self) -> None:
        if self.degraded:
            self.degraded = False
            log.warning("circuit breakers: Redis recovered; breaker state is shared again")
        for breaker in self.breakers.values():
            breaker.coordinate(True)

    async def close(self) -> None:
        """Stop syncing, give back held probe locks (best effort) and close the store."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.timeout):
                for service in list(self._holding):
                    await self.store.release_probe(service, self.owner)
        await self.store.close()
