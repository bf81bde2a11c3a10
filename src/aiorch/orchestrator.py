"""`AIOrchestrator`: classify, look in the cache, route, call with fallback, record, store.

It knows nothing of HTTP: the server, the CLI, the agents and the benchmarks all call it.
Identical concurrent queries (same cache key) share one upstream call. `unknown` queries go to
every service at once and are answered by whichever succeed ("multi-service").
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import msgspec

from aiorch.backends import Backend, Readiness, build_backend
from aiorch.cache import Cache, MemoryCache, cache_key
from aiorch.classifier import classify
from aiorch.config import Settings, load_settings
from aiorch.dispatch import Answer, Dispatcher, all_failed
from aiorch.errors import AllBackendsFailed, BackendError, RequestError
from aiorch.guard import CacheGuard
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.monitoring.tracing import SCOPE, trace_exemplar, traced
from aiorch.routing import Route, Router, parse_agent_type, parse_query_type
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


class QueryOptions(msgspec.Struct, frozen=True, kw_only=True):
    query_type: QueryType | None = None  # None: classify
    agent_type: AgentType = AgentType.DIRECT
    service: Service | None = None  # pin one service: no routing, no fallback
    use_cache: bool = True
    max_tokens: int | None = None
    temperature: float | None = None
    thinking: bool | None = None
    tenant: str = ""  # cache partition, e.g. the API key's hash
    request_id: str = ""


class SharedCall:
    """One upstream call awaited by every identical query in flight.

    The call outlives any single waiter (it is shielded), but not all of them: when the last
    waiter is cancelled (its client went away), the call is cancelled too.
    """

    def __init__(self, task: asyncio.Task[QueryResult]) -> None:
        self.task = task
        self.waiters = 0

    async def join(self) -> QueryResult:
        self.waiters += 1
        try:
            return await asyncio.shield(self.task)
        except asyncio.CancelledError:
            self.waiters -= 1
            if self.waiters == 0:
                self.task.cancel()
            raise


class AIOrchestrator:
    def __init__(
        self,
        settings: Settings,
        *,
        backends: Mapping[Service, Backend] | None = None,
        cache: Cache | None = None,
        metrics: Metrics | None = None,
        classifier: Callable[[str], QueryType] = classify,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        self.backends = traced(
            backends or {s: build_backend(settings.backend(s)) for s in Service}, tracer_provider
        )
        self._tracer = tracer_provider.get_tracer(SCOPE) if tracer_provider else None
        self.cache: Cache = cache if cache is not None else default_cache(settings)
        self.router = Router(settings)
        self.dispatcher = Dispatcher(settings, self.backends, self.metrics)
        self._classify = classifier
        self._cache_guard = CacheGuard(self.cache, self.metrics, settings.cache.redis_timeout)
        self._in_flight: dict[str, SharedCall] = {}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: object) -> AIOrchestrator:
        return cls(load_settings(environ), **kwargs)  # type: ignore[arg-type]

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
    ) -> QueryResult:
        """Answer one query: the guide's entry point."""
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
        return await self.complete(messages, options)

    async def complete(self, messages: Sequence[Message], options: QueryOptions) -> QueryResult:
        started = time.perf_counter()
        request = self._request(messages, options)
        self._log_prompt(request)
        query_type = options.query_type or self._classify(messages[-1].content)
        route = self._route(query_type, options)
        key = self._key(request, query_type, route, options)
        self.metrics.in_flight.inc()
        try:
            if key is not None:
                hit = await self._cache_guard.get(key)
                if hit is not None:
                    return self._from_cache(hit, query_type, request.request_id, started)
                self.metrics.cache_misses.inc()
                shared = self._in_flight.get(key)
                if shared is not None:
                    self.metrics.coalesced.inc()
                    result = await shared.join()
                    return msgspec.structs.replace(result, request_id=request.request_id)
                task = asyncio.ensure_future(self._answer(request, query_type, route, options, key))
                shared = self._in_flight[key] = SharedCall(task)
                task.add_done_callback(lambda done: self._settled(key, done))
                return await shared.join()
            return await self._answer(request, query_type, route, options, None)
        finally:
            self.metrics.in_flight.dec()

    def _settled(self, key: str, task: asyncio.Task[QueryResult]) -> None:
        self._in_flight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have left before it failed

    async def _answer(
        self,
        request: CompletionRequest,
        query_type: QueryType,
        route: Route,
        options: QueryOptions,
        key: str | None,
    ) -> QueryResult:
        if self._tracer is None:
            return await self._answer_untraced(request, query_type, route, options, key)
        attributes = {
            "aiorch.query_type": query_type.value,
            "aiorch.agent_type": options.agent_type.value,
            "aiorch.route": route.selected.value,
            "aiorch.request_id": request.request_id,
        }
        with self._tracer.start_as_current_span("aiorch query", attributes=attributes):
            return await self._answer_untraced(request, query_type, route, options, key)

    async def _answer_untraced(
        self,
        request: CompletionRequest,
        query_type: QueryType,
        route: Route,
        options: QueryOptions,
        key: str | None,
    ) -> QueryResult:
        started = time.perf_counter()
        try:
            if route.multi:
                answer = await self._multi(route, request)
            else:
                answer = await self.dispatcher.chain(route, request)
        except AllBackendsFailed:
            model = self.backends[route.services[0]].settings.model_id
            self.metrics.ai_queries.labels(
                options.agent_type.value, Status.ERROR.value, model
            ).inc()
            raise
        elapsed = time.perf_counter() - started
        result = self._result(answer, query_type, route, options, request.request_id, elapsed)
        self._record(result, elapsed, answer.backend_seconds)
        if key is not None and answer.completion.finish_reason in ("stop", "length", None):
            await self._cache_guard.set(key, _encode(result), self.settings.cache.ttl_seconds)
        return result

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
                attempts.append(Attempt(service, model, outcome.error_type, outcome.message))
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

    def _result(
        self,
        answer: Answer,
        query_type: QueryType,
        route: Route,
        options: QueryOptions,
        request_id: str,
        elapsed: float,
    ) -> QueryResult:
        completion = answer.completion
        multi = route.multi
        return QueryResult(
            answer=completion.content,
            query_type=query_type,
            selected_service=(
                SelectedService.MULTI if multi else SelectedService(answer.service.value)
            ),
            model=completion.model,
            cached=False,
            fallback=answer.fallback,
            usage=completion.usage,
            latency_ms=round(elapsed * 1000, 3),
            request_id=request_id,
            agent_type=options.agent_type,
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
        exemplar = trace_exemplar() if self._tracer is not None else None
        for model in models:
            m.ai_queries.labels(agent, Status.SUCCESS.value, model).inc()
            m.ai_duration.labels(agent, model).observe(elapsed, exemplar)
        m.request_duration.labels(
            result.query_type.value, result.selected_service.value, "false"
        ).observe(elapsed)
        m.overhead.observe(max(0.0, elapsed - backend_seconds))

    def _from_cache(
        self, raw: bytes, query_type: QueryType, request_id: str, started: float
    ) -> QueryResult:
        cached = _decode_result(raw)
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
            request_id=request_id,
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
        request = self._request(messages, options)
        self._log_prompt(request)
        query_type = options.query_type or self._classify(messages[-1].content)
        route = self._route(query_type, options)
        key = self._key(request, query_type, route, options)
        self.metrics.in_flight.inc()
        try:
            hit = await self._cache_guard.get(key) if key is not None else None
            if key is not None and hit is None:
                self.metrics.cache_misses.inc()
            if hit is not None or route.multi:
                result = (
                    self._from_cache(hit, query_type, request.request_id, started)
                    if hit is not None
                    else await self._answer(request, query_type, route, options, key)
                )
                async for event in replay(result):
                    yield event
                return
            async for event in self._stream_chain(request, query_type, route, options, key):
                yield event
        finally:
            self.metrics.in_flight.dec()

    async def _stream_chain(
        self,
        request: CompletionRequest,
        query_type: QueryType,
        route: Route,
        options: QueryOptions,
        key: str | None,
    ) -> AsyncIterator[StreamStart | StreamChunk]:
        started = time.perf_counter()
        parts: list[str] = []
        reasoning: list[str] = []
        final: StreamChunk | None = None
        service: Service | None = None
        fallback = None
        try:
            async for item in self.dispatcher.stream(route, request):
                if isinstance(item, tuple):
                    service, fallback = item
                    model = self.backends[service].settings.model_id
                    yield StreamStart(
                        query_type,
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
            model = self.backends[route.services[0]].settings.model_id
            self.metrics.ai_queries.labels(
                options.agent_type.value, Status.ERROR.value, model
            ).inc()
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
        result = self._result(answer, query_type, route, options, request.request_id, elapsed)
        # Time spent waiting on the backend is most of the stream; overhead is measured per call.
        self._record(result, elapsed, elapsed)
        if key is not None:
            await self._cache_guard.set(key, _encode(result), self.settings.cache.ttl_seconds)

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
        await self.cache.close()

    def _request(self, messages: Sequence[Message], options: QueryOptions) -> CompletionRequest:
        limits = self.settings.server
        if not messages or not messages[-1].content.strip():
            raise RequestError("query must not be empty", param="query")
        size = sum(len(m.content) for m in messages)
        if size > limits.max_query_chars:
            raise RequestError(
                f"query is {size} characters; the limit is {limits.max_query_chars}",
                param="query",
            )
        if options.max_tokens is not None and not 1 <= options.max_tokens <= 1_000_000:
            raise RequestError("max_tokens must be between 1 and 1000000", param="max_tokens")
        if options.temperature is not None and not 0 <= options.temperature <= 2:
            raise RequestError("temperature must be between 0 and 2", param="temperature")
        return CompletionRequest(
            messages=tuple(messages),
            max_tokens=options.max_tokens,
            temperature=options.temperature,
            thinking=options.thinking,
            request_id=options.request_id or os.urandom(8).hex(),
        )

    def _log_prompt(self, request: CompletionRequest) -> None:
        """Prompt text reaches the log only when the operator opted in (AIORCH_LOG_PROMPTS)."""
        if self.settings.server.log_prompts:
            for message in request.messages:
                log.info("prompt %s %s: %r", request.request_id, message.role, message.content)

    def _route(self, query_type: QueryType, options: QueryOptions) -> Route:
        if options.service is not None:
            return self.router.pinned(options.service)
        return self.router.route(query_type)

    def _key(
        self, request: CompletionRequest, query_type: QueryType, route: Route, options: QueryOptions
    ) -> str | None:
        if not (options.use_cache and self.settings.cache.enabled):
            return None
        target = ",".join(f"{s.value}={self.backends[s].settings.model_id}" for s in route.services)
        return cache_key(
            messages=tuple((m.role, m.content) for m in request.messages),
            query_type=query_type,
            agent_type=options.agent_type,
            target=f"{route.selected.value}:{target}",
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            thinking=request.thinking,
            tenant=options.tenant if self.settings.cache.per_key else "",
        )


def default_cache(settings: Settings) -> Cache:
    """Redis when `AIORCH_REDIS_URL` is set (shared by replicas), else an in-process LRU."""
    if settings.server.redis_url:
        from aiorch.redis_store import RedisCache  # redis is a heavy import: only when used

        return RedisCache.from_url(settings.server.redis_url)
    return MemoryCache(settings.cache.max_entries, settings.cache.max_bytes)


def build_messages(query: str, context: str | None = None) -> list[Message]:
    if not isinstance(query, str):
        raise RequestError("query must be a string", param="query")
    messages = [Message("system", f"Context:\n{context}")] if context else []
    messages.append(Message("user", query))
    return messages


def merge_answers(answers: Mapping[str, str]) -> str:
    """One text from several services' answers, each under its model family's name."""
    if len(answers) == 1:
        return next(iter(answers.values()))
    titles = {Service.KIMI.value: "Kimi-K2-Thinking", Service.QWEN.value: "Qwen Coder"}
    return "\n\n".join(f"## {titles.get(name, name)}\n\n{text}" for name, text in answers.items())


async def replay(result: QueryResult) -> AsyncIterator[StreamStart | StreamChunk]:
    """A finished answer as a stream: start, the whole text, the end."""
    yield StreamStart(
        result.query_type,
        result.selected_service,
        result.model,
        result.request_id,
        cached=result.cached,
        fallback=result.fallback,
        offline=result.offline,
    )
    yield StreamChunk(
        content=result.answer, reasoning_content=result.reasoning_content or "", model=result.model
    )
    yield StreamChunk(finish_reason="stop", usage=result.usage, model=result.model)
