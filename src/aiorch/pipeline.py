"""The request pipeline: cache, then coalescing, then the route's strategy; ended twice.

`events(plan)` is the one path a request takes. It yields a `Head` (who answers), the `Delta`s,
and a `Done` with the whole `Answer`. The plain ending (`answer`) collects them; the streamed
ending (`stream`) passes them on as they come. Both therefore share every rule: a cache hit is
replayed with its real finish reasons, identical requests in flight share one upstream run
(plain or streamed, whichever came first), only complete answers are stored, and every query is
counted once, whichever ending it took.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable

import msgspec

from aiorch.answer import Answer, Collector, Delta, deltas
from aiorch.errors import AiorchError
from aiorch.failsafe_cache import FailSafeCache
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.planning import Plan
from aiorch.strategies import Chain, Ended, FanOut, Started
from aiorch.types import Fallback, QueryType, Status

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
_decode_answer = msgspec.json.Decoder(Answer).decode


class Head(msgspec.Struct, frozen=True, kw_only=True):
    """Who answers, sent before the answer's first delta."""

    query_type: QueryType
    selected: str
    service: str
    model: str
    fallback: Fallback | None = None
    offline: bool = False
    cached: bool = False
    routing: str | None = None
    adjustments: tuple[str, ...] = ()


class Done(msgspec.Struct, frozen=True):
    answer: Answer


PipeEvent = Head | Delta | Done


class Flight:
    """One upstream run shared by every identical request in flight, plain or streamed.

    Each follower gets every event from the start, then the rest as they come. The run outlives
    any one follower, but not all of them: when the last one leaves, it is cancelled.
    """

    def __init__(self, source: AsyncIterator[PipeEvent], on_done: Callable[[], None]) -> None:
        self.events: list[PipeEvent] = []
        self.error: BaseException | None = None
        self.done = False
        self.followers = 0
        self.waiting = 0  # followers waiting for the next event
        self._tick = asyncio.Event()
        self._on_done = on_done
        self.task = asyncio.ensure_future(self._pump(source))

    async def _pump(self, source: AsyncIterator[PipeEvent]) -> None:
        try:
            async for event in source:
                self.events.append(event)
                self._wake()
        except BaseException as error:  # every follower sees the run's end, however it came
            self.error = error
            if not isinstance(error, Exception):
                raise
        finally:
            self.done = True
            self._wake()
            self._on_done()

    def _wake(self) -> None:
        if self.waiting:  # most events arrive with nobody waiting: the follower is still busy
            tick, self._tick = self._tick, asyncio.Event()
            tick.set()

    async def follow(self) -> AsyncIterator[PipeEvent]:
        self.followers += 1
        seen = 0
        try:
            while True:
                while seen < len(self.events):
                    seen += 1
                    yield self.events[seen - 1]
                if self.done:
                    if self.error is not None:
                        raise self.error
                    return
                self.waiting += 1
                try:
                    await self._tick.wait()
                finally:
                    self.waiting -= 1
        finally:
            self.followers -= 1
            if self.followers == 0 and not self.done:
                self.task.cancel()


class Pipeline:
    def __init__(
        self,
        metrics: Metrics,
        cache: FailSafeCache,
        chain: Chain,
        fanout: FanOut,
        ttl_seconds: float,
    ) -> None:
        self.metrics = metrics
        self.cache = cache
        self.chain = chain
        self.fanout = fanout
        self.ttl_seconds = ttl_seconds
        self.in_flight: dict[str, Flight] = {}

    # The two endings.

    async def answer(self, plan: Plan) -> Answer:
        """The whole answer."""
        started = time.perf_counter()
        timeline = plan.options.timeline
        self.metrics.in_flight.inc()
        try:
            done: Answer | None = None
            async for event in self.events(plan):
                if isinstance(event, Done):
                    done = event.answer
                    if timeline is not None:
                        timeline.last()
                elif isinstance(event, Head) and timeline is not None:
                    timeline.first()
            assert done is not None
            return self._finish(plan, done, started)
        except AiorchError:
            self._failed(plan)
            raise
        finally:
            self.metrics.in_flight.dec()

    async def stream(self, plan: Plan) -> AsyncGenerator[Head | Delta | Answer, None]:
        """`Head`, the deltas as they come, then the whole `Answer`."""
        started = time.perf_counter()
        timeline = plan.options.timeline
        self.metrics.in_flight.inc()
        try:
            async for event in self.events(plan):
                if isinstance(event, Done):
                    if timeline is not None:
                        timeline.last()
                    yield self._finish(plan, event.answer, started)
                else:
                    if isinstance(event, Head) and timeline is not None:
                        timeline.first()
                    yield event
        except AiorchError:
            self._failed(plan)
            raise
        finally:
            self.metrics.in_flight.dec()

    # The one path.

    async def events(self, plan: Plan) -> AsyncIterator[PipeEvent]:
        key = plan.key
        timeline = plan.options.timeline
        if key is None:
            if timeline is not None:
                timeline.waiting()
            async for event in self._run(plan):
                yield event
            return
        if timeline is None:
            raw = await self.cache.get(key)
        else:
            looked = time.perf_counter()
            raw = await self.cache.get(key)
            timeline.add("cache", time.perf_counter() - looked)
            timeline.waiting()
        if raw is not None:
            self.metrics.cache_hits.inc()
            for event in _replay(_decode_answer(raw), plan):
                yield event
            return
        self.metrics.cache_misses.inc()
        flight = self.in_flight.get(key)
        if flight is None:
            flight = Flight(self._run(plan), lambda: self._landed(key))
            self.in_flight[key] = flight
        else:
            self.metrics.coalesced.inc()
        async for event in flight.follow():
            yield event

    def _landed(self, key: str) -> None:
        self.in_flight.pop(key, None)

    async def _run(self, plan: Plan) -> AsyncIterator[PipeEvent]:
        """Ask the route's models and make the answer whole; store it if it may be stored."""
        started = time.perf_counter()
        strategy = self.fanout if plan.route.multi else self.chain
        collector = Collector()
        ended: Ended | None = None
        timeline = plan.options.timeline
        targets, request, request_id = plan.route.targets, plan.request, plan.request_id
        async for event in strategy.run(targets, request, request_id, timeline):
            if isinstance(event, Delta):
                collector.add(event)
                yield event
            elif isinstance(event, Started):
                yield Head(
                    query_type=plan.query_type,
                    selected=plan.route.selected if plan.route.multi else event.service,
                    service=event.service,
                    model=event.model,
                    fallback=event.fallback,
                    offline=event.offline,
                    routing=plan.routing,
                    adjustments=plan.skipped + event.adjustments,
                )
            else:
                ended = event
        assert ended is not None
        answer = Answer(
            choices=collector.choices(),
            usage=ended.usage,
            model=ended.model,
            service=ended.service,
            selected=plan.route.selected if plan.route.multi else ended.service,
            query_type=plan.query_type,
            request_id=plan.request_id,
            offline=ended.offline,
            fallback=ended.fallback,
            attempts=ended.attempts,
            adjustments=plan.skipped + ended.adjustments,
            answers=ended.answers,
            routing=plan.routing,
            labels=ended.labels,
        )
        elapsed = time.perf_counter() - started
        upstream = sum(a.latency_ms for a in ended.attempts) / 1000
        self.metrics.overhead.observe(max(0.0, elapsed - upstream))
        if plan.key is not None and answer.complete:
            accept = plan.options.accept
            if accept is None or accept(answer.text):
                stored = time.perf_counter()
                await self.cache.set(plan.key, _encode(_stored(answer)), self.ttl_seconds)
                if timeline is not None:
                    timeline.add("cache", time.perf_counter() - stored)
        yield Done(answer)

    # Counting each query once, whichever ending it took.

    def _finish(self, plan: Plan, answer: Answer, started: float) -> Answer:
        elapsed = time.perf_counter() - started
        m = self.metrics
        query_type, selected = plan.query_type.value, answer.selected
        m.orchestrator_queries.labels(query_type, selected).inc()
        m.request_duration.labels(
            query_type, selected, "true" if answer.cached else "false"
        ).observe(elapsed)
        if not answer.cached:
            agent = plan.options.agent_type.value
            exemplar = m.exemplars() if m.exemplars is not None else None
            for label in answer.labels:
                m.ai_queries.labels(agent, Status.SUCCESS.value, label).inc()
                m.ai_duration.labels(agent, label).observe(elapsed, exemplar)
        return msgspec.structs.replace(
            answer, request_id=plan.request_id, latency_ms=round(elapsed * 1000, 3)
        )

    def _failed(self, plan: Plan) -> None:
        label = plan.route.targets[0].label
        self.metrics.ai_queries.labels(
            plan.options.agent_type.value, Status.ERROR.value, label
        ).inc()

    async def close(self) -> None:
        flights = [f.task for f in self.in_flight.values()]
        for task in flights:
            task.cancel()
        await asyncio.gather(*flights, return_exceptions=True)


def _stored(answer: Answer) -> Answer:
    """What the cache keeps: the answer, without what belongs to the request that made it."""
    return msgspec.structs.replace(
        answer, request_id="", latency_ms=0.0, attempts=(), fallback=None
    )


def _replay(answer: Answer, plan: Plan) -> list[PipeEvent]:
    cached = msgspec.structs.replace(answer, cached=True, routing=plan.routing)
    head = Head(
        query_type=plan.query_type,
        selected=answer.selected,
        service=answer.service,
        model=answer.model,
        offline=answer.offline,
        cached=True,
        routing=plan.routing,
        adjustments=answer.adjustments,
    )
    return [head, *deltas(answer.choices), Done(cached)]
