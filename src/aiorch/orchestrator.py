"""`AIOrchestrator`: classify, look in the cache, route, call with fallback, record, store.

It knows nothing of HTTP: the server, the CLI, the agents and the benchmarks all call it.
Identical concurrent queries (same cache key) share one upstream call. `unknown` queries go to
every service at once and are answered by whichever succeed ("multi-service").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import msgspec

from aiorch.answers import SharedCall, build_messages, merge_answers, replay
from aiorch.backends import Backend, Readiness, build_backend
from aiorch.cache import Cache, MemoryCache
from aiorch.classifier import classify
from aiorch.config import Settings, load_settings
from aiorch.dispatch import Answer, Dispatcher, all_failed
from aiorch.errors import AllBackendsFailed, BackendError
from aiorch.guard import CacheGuard
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.monitoring.tracing import SCOPE, trace_exemplar, traced
from aiorch.planning import Plan, Planner, QueryOptions
from aiorch.routing import Route, Router, parse_agent_type, parse_query_type
from aiorch.shared_breakers import BreakerStore
from aiorch.types import (
    AgentType,
    Attempt,
    Completion,
    CompletionRequest,
    Message,
    QueryResult,
    QueryType,
    SelectedService,
    Service,
    Status,
    StreamChunk,
    StreamStart,
    Usage,
)

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
_decode_result = msgspec.json.Decoder(QueryResult).decode


class AIOrchestrator:
    def __init__(
        self,
        settings: Settings,
        *,
        backends: Mapping[Service, Backend] | None = None,
        cache: Cache | None = None,
        breaker_store: BreakerStore | None = None,
        metrics: Metrics | None = None,
        classifier: Callable[[str], QueryType] = classify,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        if tracer_provider is not None and self.metrics.exemplars is None:
            self.metrics.exemplars = trace_exemplar  # latency buckets point at traces
        self.backends = traced(
            backends or {s: build_backend(settings.backend(s)) for s in Service}, tracer_provider
        )
        self._tracer = tracer_provider.get_tracer(SCOPE) if tracer_provider else None
        self.cache: Cache = cache if cache is not None else default_cache(settings)
        self.router = Router(settings)
        models = {service: backend.settings.model_id for service, backend in self.backends.items()}
        self.planner = Planner(settings, self.router, models, classifier)
        self.dispatcher = Dispatcher(
            settings,
            self.backends,
            self.metrics,
            breaker_store if breaker_store is not None else default_breaker_store(settings),
        )
        self._cache_guard = CacheGuard(self.cache, self.metrics, settings.cache.redis_timeout)
        self._in_flight: dict[str, SharedCall] = {}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AIOrchestrator:
        """Settings from the environment (and `AIORCH_CONFIG`), everything else by default."""
        return cls(load_settings(environ))

    async def process_query(
        self,
        query: str,
        query_type: str | QueryType | None = None,
        *,
        agent_type: str | AgentType | None = None,
        context: str | None = None,
        use_cache: bool = True,
        max_tokens: int | None = None,
        temperature: float | None = None,
        thinking: bool | None = None,
        tenant: str = "",
        request_id: str | None = None,
        accept: Callable[[str], bool] | None = None,
    ) -> QueryResult:
        """Answer one query: the guide's entry point. `accept`, when given, must return True
        for the answer's text before the answer is cached (see `complete`)."""
        messages = build_messages(query, context)
        options = QueryOptions(
            query_type=parse_query_type(query_type),
            agent_type=parse_agent_type(agent_type),
            use_cache=use_cache,
            max_tokens=max_tokens,
            temperature=temperature,
            thinking=thinking,
            tenant=tenant,
            request_id=request_id or "",
        )
        return await self.complete(messages, options, accept=accept)

    async def complete(
        self,
        messages: Sequence[Message],
        options: QueryOptions,
        *,
        accept: Callable[[str], bool] | None = None,
    ) -> QueryResult:
        """`accept` is the caller's judgement of an answer's text (an agent: "I can parse it").
        An answer it rejects is still returned, but never cached, so the next identical query
        asks the model again instead of replaying a useless answer for the cache's lifetime."""
        started = time.perf_counter()
        plan = self.planner.plan(messages, options)
        self._log_prompt(plan.request)
        key = plan.key
        self.metrics.in_flight.inc()
        try:
            if key is None:
                return await self._answer(plan, accept)
            hit = await self._cache_guard.get(key)
            if hit is not None:
                return self._from_cache(hit, plan, started)
            self.metrics.cache_misses.inc()
            shared = self._in_flight.get(key)
            if shared is not None:
                self.metrics.coalesced.inc()
                result = await shared.join()
                return msgspec.structs.replace(result, request_id=plan.request.request_id)
            task = asyncio.ensure_future(self._answer(plan, accept))
            shared = self._in_flight[key] = SharedCall(task)
            task.add_done_callback(lambda done: self._settled(key, done))
            return await shared.join()
        finally:
            self.metrics.in_flight.dec()

    def _settled(self, key: str, task: asyncio.Task[QueryResult]) -> None:
        self._in_flight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have left before it failed

    async def _answer(self, plan: Plan, accept: Callable[[str], bool] | None) -> QueryResult:
        if self._tracer is None:
            return await self._answer_untraced(plan, accept)
        attributes = {
            "aiorch.query_type": plan.query_type.value,
            "aiorch.agent_type": plan.options.agent_type.value,
            "aiorch.route": plan.route.selected.value,
            "aiorch.request_id": plan.request.request_id,
        }
        with self._tracer.start_as_current_span("aiorch query", attributes=attributes):
            return await self._answer_untraced(plan, accept)

    async def _answer_untraced(
        self, plan: Plan, accept: Callable[[str], bool] | None
    ) -> QueryResult:
        started = time.perf_counter()
        route = plan.route
        try:
            if route.multi:
                answer = await self._multi(route, plan.request)
            else:
                answer = await self.dispatcher.chain(route, plan.request)
        except AllBackendsFailed:
            self._record_failure(plan)
            raise
        elapsed = time.perf_counter() - started
        result = self._result(answer, plan, elapsed)
        self._record(result, elapsed, answer.backend_seconds)
        if (
            plan.key is not None
            and answer.completion.finish_reason in ("stop", "length", None)
            and (accept is None or accept(result.answer))
        ):
            await self._store(plan.key, result)
        return result

    def _record_failure(self, plan: Plan) -> None:
        model = self.backends[plan.route.services[0]].settings.model_id
        self.metrics.ai_queries.labels(
            plan.options.agent_type.value, Status.ERROR.value, model
        ).inc()

    async def _store(self, key: str, result: QueryResult) -> None:
        await self._cache_guard.set(key, _encode(result), self.settings.cache.ttl_seconds)

    async def _multi(self, route: Route, request: CompletionRequest) -> Answer:
        """Ask every service at once; answer with whichever succeed, tolerating failures."""
        started = time.perf_counter()
        outcomes = await asyncio.gather(
            *(self.dispatcher.call(s, request) for s in route.services), return_exceptions=True
        )
        attempts: list[Attempt] = []
        answered: list[tuple[Service, Completion]] = []
        for service, outcome in zip(route.services, outcomes, strict=True):
            model = self.backends[service].settings.model_id
            if isinstance(outcome, BackendError):
                attempts.append(
                    Attempt(
                        service,
                        model,
                        outcome.error_type,
                        outcome.message,
                        retry_after=outcome.retry_after,
                    )
                )
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                attempts.append(Attempt(service, model))
                answered.append((service, outcome))
        if not answered:
            raise all_failed(attempts)
        answers = {s.value: c.content for s, c in answered}
        completion = msgspec.structs.replace(
            answered[0][1],
            content=merge_answers(answers),
            usage=sum((c.usage for _, c in answered), Usage()),
            model="+".join(c.model for _, c in answered),
        )
        return Answer(
            completion,
            answered[0][0],
            None,
            tuple(attempts),
            time.perf_counter() - started,
            answers,
        )

    def _result(self, answer: Answer, plan: Plan, elapsed: float) -> QueryResult:
        completion = answer.completion
        return QueryResult(
            answer=completion.content,
            query_type=plan.query_type,
            selected_service=(
                SelectedService.MULTI if plan.route.multi else SelectedService(answer.service.value)
            ),
            model=completion.model,
            cached=False,
            fallback=answer.fallback,
            usage=completion.usage,
            latency_ms=round(elapsed * 1000, 3),
            request_id=plan.request.request_id,
            agent_type=plan.options.agent_type,
            reasoning_content=completion.reasoning_content,
            offline=completion.offline,
            attempts=answer.attempts,
            answers=answer.answers,
        )

    def _record(self, result: QueryResult, elapsed: float, backend_seconds: float) -> None:
        m = self.metrics
        m.orchestrator_queries.labels(result.query_type.value, result.selected_service.value).inc()
        agent = result.agent_type.value
        models = [a.model for a in result.attempts if a.error_type is None]
        exemplar = m.exemplars() if m.exemplars is not None else None
        for model in models:
            m.ai_queries.labels(agent, Status.SUCCESS.value, model).inc()
            m.ai_duration.labels(agent, model).observe(elapsed, exemplar)
        m.request_duration.labels(
            result.query_type.value, result.selected_service.value, "false"
        ).observe(elapsed)
        m.overhead.observe(max(0.0, elapsed - backend_seconds))

    def _from_cache(self, raw: bytes, plan: Plan, started: float) -> QueryResult:
        cached = _decode_result(raw)
        query_type = plan.query_type
        elapsed = time.perf_counter() - started
        m = self.metrics
        m.cache_hits.inc()
        m.orchestrator_queries.labels(query_type.value, cached.selected_service.value).inc()
        m.request_duration.labels(query_type.value, cached.selected_service.value, "true").observe(
            elapsed
        )
        m.overhead.observe(elapsed)
        return msgspec.structs.replace(
            cached,
            cached=True,
            fallback=None,
            attempts=(),
            request_id=plan.request.request_id,
            latency_ms=round(elapsed * 1000, 3),
        )

    async def stream(
        self, messages: Sequence[Message], options: QueryOptions
    ) -> AsyncGenerator[StreamStart | StreamChunk, None]:
        """A `StreamStart`, then chunks as the backend sends them; the last has usage.

        Falls back while nothing has been yielded; after that a failure raises
        `StreamInterrupted`. A cached answer, or a multi-service one, comes as one chunk.
        """
        started = time.perf_counter()
        plan = self.planner.plan(messages, options)
        self._log_prompt(plan.request)
        self.metrics.in_flight.inc()
        try:
            hit = await self._cache_guard.get(plan.key) if plan.key is not None else None
            if plan.key is not None and hit is None:
                self.metrics.cache_misses.inc()
            if hit is not None or plan.route.multi:
                result = (
                    self._from_cache(hit, plan, started)
                    if hit is not None
                    else await self._answer(plan, None)
                )
                async for event in replay(result):
                    yield event
                return
            async for event in self._stream_chain(plan):
                yield event
        finally:
            self.metrics.in_flight.dec()

    async def _stream_chain(self, plan: Plan) -> AsyncIterator[StreamStart | StreamChunk]:
        started = time.perf_counter()
        request = plan.request
        parts: list[str] = []
        reasoning: list[str] = []
        final: StreamChunk | None = None
        service: Service | None = None
        fallback = None
        try:
            async for item in self.dispatcher.stream(plan.route, request):
                if isinstance(item, tuple):
                    service, fallback = item
                    model = self.backends[service].settings.model_id
                    yield StreamStart(
                        plan.query_type,
                        SelectedService(service.value),
                        model,
                        request.request_id,
                        fallback=fallback,
                        offline=self.backends[service].settings.kind.value == "offline",
                    )
                    continue
                parts.append(item.content)
                reasoning.append(item.reasoning_content)
                if item.finish_reason is not None:
                    final = item
                yield item
        except AllBackendsFailed:
            self._record_failure(plan)
            raise
        if service is None or final is None:
            return
        elapsed = time.perf_counter() - started
        settings = self.backends[service].settings
        completion = Completion(
            content="".join(parts),
            model=settings.model_id,
            usage=final.usage or Usage(),
            reasoning_content="".join(reasoning) or None,
            finish_reason=final.finish_reason,
            offline=settings.kind.value == "offline",
        )
        answer = Answer(
            completion, service, fallback, (Attempt(service, settings.model_id),), elapsed
        )
        result = self._result(answer, plan, elapsed)
        # Time spent waiting on the backend is most of the stream; overhead is measured per call.
        self._record(result, elapsed, elapsed)
        if plan.key is not None:
            await self._store(plan.key, result)

    async def readiness(self) -> list[Readiness]:
        """Each backend's probe; a backend whose breaker is open is not ready, whatever it says."""
        probes = await asyncio.gather(*(b.probe() for b in self.backends.values()))
        return [
            self._with_breaker(service, probe)
            for service, probe in zip(self.backends, probes, strict=True)
        ]

    def _with_breaker(self, service: Service, probe: Readiness) -> Readiness:
        state = self.dispatcher.breakers[service].state
        if state.value == "closed":
            return probe
        detail = f"circuit breaker {state.value.replace('_', '-')} after repeated failures"
        return msgspec.structs.replace(
            probe, ready=probe.ready and state.value != "open", detail=f"{probe.detail}; {detail}"
        )

    async def close(self) -> None:
        for shared in list(self._in_flight.values()):
            shared.task.cancel()
        await asyncio.gather(*(b.close() for b in self.backends.values()))
        await self.dispatcher.close()
        await self.cache.close()

    def _log_prompt(self, request: CompletionRequest) -> None:
        """Prompt text reaches the log only when the operator opted in (AIORCH_LOG_PROMPTS)."""
        if self.settings.server.log_prompts:
            for message in request.messages:
                log.info("prompt %s %s: %r", request.request_id, message.role, message.content)


def default_cache(settings: Settings) -> Cache:
    """Redis when `AIORCH_REDIS_URL` is set (shared by replicas), else an in-process LRU."""
    if settings.server.redis_url:
        from aiorch.redis_store import RedisCache  # redis is a heavy import: only when used

        return RedisCache.from_url(settings.server.redis_url)
    return MemoryCache(settings.cache.max_entries, settings.cache.max_bytes)


def default_breaker_store(settings: Settings) -> BreakerStore | None:
    """Redis when `AIORCH_REDIS_URL` is set (breaker state shared by replicas), else none."""
    if settings.server.redis_url:
        from aiorch.redis_store import RedisBreakerStore  # redis is a heavy import: only when used

        return RedisBreakerStore.from_url(settings.server.redis_url)
    return None


# QueryOptions and build_messages are part of calling the orchestrator: served from here too.
__all__ = ["AIOrchestrator", "QueryOptions", "build_messages", "default_cache"]
