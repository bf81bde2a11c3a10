"""`AIOrchestrator`: the core, assembled from the configuration, behind three calls.

`complete(request, options)` answers a Chat Completions request whole; `stream(...)` answers it
as it is generated; `process_query(...)` is the guide's entry point, a query and its context in,
a `QueryResult` out. It knows nothing of HTTP: the server, the CLI, the agents and the benchmarks
all call it. The path of a request is `planning` -> `pipeline` (cache, coalescing) ->
`strategies` (chain, hedge, fan-out) -> `services` (one guarded upstream call) -> `backends`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import TYPE_CHECKING

import msgspec

from aiorch.answer import Answer, Delta
from aiorch.backends import Backend, Readiness, build_backend
from aiorch.breaker import BreakerState
from aiorch.cache import Cache, MemoryCache
from aiorch.catalog import Catalog
from aiorch.classifier import RecentVerdicts, Verdict, classify_explained
from aiorch.config import Settings, load_settings
from aiorch.errors import RequestError
from aiorch.failsafe_cache import FailSafeCache
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.monitoring.tracing import SCOPE, trace_exemplar, traced
from aiorch.pipeline import Head, Pipeline
from aiorch.planning import Options, Plan, Planner
from aiorch.request import ChatMessage, ChatRequest, Thinking
from aiorch.services import Services
from aiorch.shared_breakers import BreakerStore
from aiorch.strategies import Chain, FanOut, HedgeDelay
from aiorch.types import AgentType, QueryResult, QueryType

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

log = logging.getLogger(__name__)


class AIOrchestrator:
    def __init__(
        self,
        settings: Settings,
        *,
        backends: Mapping[str, Backend] | None = None,
        cache: Cache | None = None,
        breaker_store: BreakerStore | None = None,
        metrics: Metrics | None = None,
        classifier: Callable[[str], Verdict] = classify_explained,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        if tracer_provider is not None and self.metrics.exemplars is None:
            self.metrics.exemplars = trace_exemplar  # latency buckets point at traces
        self._tracer = tracer_provider.get_tracer(SCOPE) if tracer_provider else None
        self.catalog = Catalog(settings)
        given = backends or {}
        built = {
            name: given.get(name) or build_backend(service)
            for name, service in settings.services.items()
        }
        store = breaker_store if breaker_store is not None else default_breaker_store(settings)
        self.services = Services(settings, self.metrics, traced(built, tracer_provider), store)
        self.metrics.initialise(self.catalog)  # every series at zero: rate() sees the first burst
        self.cache: Cache = cache if cache is not None else default_cache(settings)
        # `classifier` must be a pure function of the text: its recent verdicts are reused.
        self.planner = Planner(settings, self.catalog, self.services, RecentVerdicts(classifier))
        hedge = settings.hedge
        delay = (
            HedgeDelay(hedge.quantile, hedge.min_samples, hedge.min_delay)
            if hedge.enabled
            else None
        )
        chain = Chain(self.services, self.metrics, delay, self.catalog.on_refusal)
        self.pipeline = Pipeline(
            self.metrics,
            FailSafeCache.build(
                self.cache,
                self.metrics,
                settings.cache.redis_timeout,
                settings.server.redis_retry_interval,
            ),
            chain,
            FanOut(chain),
            settings.cache.ttl_seconds,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AIOrchestrator:
        """Settings from the environment (and `AIORCH_CONFIG`), everything else by default."""
        return cls(load_settings(environ))

    def plan(self, request: ChatRequest, options: Options) -> Plan:
        self.services.start()  # a no-op once running
        plan = self.planner.plan(request, options)
        if self.settings.server.log_prompts:
            for message in request.messages:
                log.info("prompt %s %s: %r", plan.request_id, message.role, message.text())
        return plan

    async def complete(self, request: ChatRequest, options: Options) -> Answer:
        """The whole answer to a Chat Completions request."""
        plan = self.plan(request, options)
        if self._tracer is None:
            return await self.pipeline.answer(plan)
        with self._tracer.start_as_current_span("aiorch query", attributes=_span(plan)):
            return await self.pipeline.answer(plan)

    def stream(
        self, request: ChatRequest, options: Options
    ) -> AsyncGenerator[Head | Delta | Answer, None]:
        """`Head` (who answers), the deltas as they come, then the whole `Answer`."""
        return self.pipeline.stream(self.plan(request, options))

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
        model: str = "auto",
        tenant: str = "",
        request_id: str | None = None,
        accept: Callable[[str], bool] | None = None,
    ) -> QueryResult:
        """Answer one query: the guide's entry point. `accept`, when given, must return True for
        the answer's text before the answer is cached (an agent: "I can parse it"); an answer it
        rejects is still returned, but the next identical query asks the model again."""
        request = query_request(
            query,
            context,
            model=model,
            max_tokens=max_tokens,
            temperature=temperature,
            thinking=thinking,
        )
        options = Options(
            query_type=parse_query_type(query_type),
            agent_type=parse_agent_type(agent_type),
            cache="on" if use_cache else "off",
            tenant=tenant,
            request_id=request_id or "",
            accept=accept,
            text_field="query",
        )
        answer = await self.complete(request, options)
        return query_result(answer, options.agent_type)

    async def readiness(self) -> list[Readiness]:
        """Each service's probe; a service whose breaker is open is not ready, whatever it says."""
        services = self.services.all()
        probes = await asyncio.gather(*(s.probe() for s in services))
        ready = []
        for service, probe in zip(services, probes, strict=True):
            state = service.breaker.state
            if state is not BreakerState.CLOSED:
                detail = f"circuit breaker {state.value.replace('_', '-')} after repeated failures"
                probe = msgspec.structs.replace(
                    probe,
                    ready=probe.ready and state is not BreakerState.OPEN,
                    detail=f"{probe.detail}; {detail}",
                )
            ready.append(probe)
        return ready

    async def close(self) -> None:
        await self.pipeline.close()
        await self.services.close()
        await self.cache.close()


def query_request(
    query: str,
    context: str | None = None,
    *,
    model: str = "auto",
    max_tokens: int | None = None,
    temperature: float | None = None,
    thinking: bool | None = None,
    stream: bool = False,
) -> ChatRequest:
    """The Chat Completions request a guide-style query stands for: the context as a system
    message, the query as the user's."""
    if not isinstance(query, str):
        raise RequestError("query must be a string", param="query")
    if not query.strip():
        raise RequestError("query must not be empty", param="query")
    messages = [ChatMessage(role="system", content=f"Context:\n{context}")] if context else []
    messages.append(ChatMessage(role="user", content=query))
    return ChatRequest(
        messages=tuple(messages),
        model=model,
        stream=stream,
        max_tokens=max_tokens,
        temperature=temperature,
        thinking=None if thinking is None else Thinking("enabled" if thinking else "disabled"),
    )


def query_result(answer: Answer, agent_type: AgentType) -> QueryResult:
    """An answer as the guide's `/api/ai/query` reports it."""
    choice = answer.choices[0]
    return QueryResult(
        answer=answer.text,
        query_type=answer.query_type,
        selected_service=answer.selected,
        model=answer.model,
        cached=answer.cached,
        fallback=answer.fallback,
        usage=answer.usage,
        latency_ms=answer.latency_ms,
        request_id=answer.request_id,
        agent_type=agent_type,
        finish_reason=choice.finish_reason,
        reasoning_content=choice.reasoning,
        offline=answer.offline,
        attempts=answer.attempts,
        answers=answer.answers,
        adjustments=answer.adjustments,
        routing=answer.routing,
    )


def parse_query_type(value: str | QueryType | None) -> QueryType | None:
    if value is None or isinstance(value, QueryType):
        return value
    try:
        return QueryType(value.strip().lower())
    except ValueError:
        valid = ", ".join(t.value for t in QueryType)
        raise RequestError(
            f"query_type {_show(value)} is not one of: {valid}", param="query_type"
        ) from None


def parse_agent_type(value: str | AgentType | None) -> AgentType:
    if value is None:
        return AgentType.DIRECT
    if isinstance(value, AgentType):
        return value
    try:
        return AgentType(value.strip().lower())
    except ValueError:
        valid = ", ".join(t.value for t in AgentType)
        raise RequestError(
            f"agent_type {_show(value)} is not one of: {valid}", param="agent_type"
        ) from None


def _show(value: str) -> str:
    """Quote caller input for an error message, clipped so a huge value stays readable."""
    return repr(value if len(value) <= 60 else value[:60] + "...")


def _span(plan: Plan) -> dict[str, str]:
    return {
        "aiorch.query_type": plan.query_type.value,
        "aiorch.agent_type": plan.options.agent_type.value,
        "aiorch.route": plan.route.selected,
        "aiorch.request_id": plan.request_id,
    }


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


__all__ = ["AIOrchestrator", "Options", "query_request", "query_result"]
