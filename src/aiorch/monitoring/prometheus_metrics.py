"""Every Prometheus family aiorch exports, on an injectable registry, and `metrics_endpoint`.

The guide's families keep the guide's names and label names verbatim; ours follow the same
scheme. All label values come from the closed enums in `aiorch.types`, `aiorch.errors.ERROR_TYPES`
or the configured model ids and flow names. Latency histograms have boundaries at exactly 15 s and
60 s, the Qwen and Kimi SLO thresholds, so `le="15.0"` and `le="60.0"` buckets are ratio SLIs.

With `PROMETHEUS_MULTIPROC_DIR` set (several workers), prometheus_client keeps the values in
per-process files and `metrics_endpoint` merges every worker's into one exposition.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics

from aiorch.monitoring.families import Counter, Gauge, Histogram
from aiorch.monitoring.multiprocess import WorkerFilesCollector
from aiorch.types import Mode, Status, TokenType, Usage

if TYPE_CHECKING:
    from aiorch.catalog import Catalog

# About 5 ms to 300 s, with the SLO thresholds (15 s for Qwen, 60 s for Kimi) as exact boundaries.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    15.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
# The orchestrator's own share of a request: tens of microseconds to a second.
OVERHEAD_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)

# A request's phases: from a tenth of a millisecond (a cache lookup) to minutes (a thinking stream).
PHASE_BUCKETS: tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, *LATENCY_BUCKETS)

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class CallObserver(Protocol):
    """Another sink for each upstream call's record (OpenTelemetry's GenAI metrics)."""

    def call(
        self,
        service: str,
        model: str,
        mode: Mode,
        seconds: float,
        *,
        error_type: str | None,
        usage: Usage | None,
        first_token_seconds: float | None,
    ) -> None: ...


# The guide's per-model families, named after the two default services: `kimi_*` and ours,
# `qwen_*`. Every service, these two included, is also counted in the shared `ai_backend_*`
# families under its own `service` label.
GUIDE_FAMILIES = {"kimi": "Kimi-K2-Thinking", "qwen": "Qwen Coder"}


class ServiceMetrics:
    """The per-model family (`kimi_*` or `qwen_*`): queries, latency and tokens by mode."""

    def __init__(self, name: str, label: str, registry: CollectorRegistry) -> None:
        self.queries = Counter(
            f"{name}_queries_total",
            f"{label} calls by mode and outcome.",
            ["mode", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            f"{name}_response_duration_seconds",
            f"{label} call latency, request to last token.",
            ["mode"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            f"{name}_tokens_used_total",
            f"{label} tokens by mode and type (reasoning is a part of completion).",
            ["mode", "token_type"],
            registry=registry,
        )


class Metrics:
    """All of aiorch's metric families, registered on one registry.

    Tests build a fresh `CollectorRegistry` for each instance; the service uses one per process.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        exemplars: Callable[[], dict[str, str] | None] | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        # Labels of the exemplar for a latency observation (the current trace id), when tracing
        # is on: exemplars link a slow bucket to the trace of a request that landed there.
        self.exemplars = exemplars
        # Fed the same record as the families below by `record_call`: never a second measurement.
        self.observers: list[CallObserver] = []
        r = self.registry

        # The guide's orchestrator families.
        self.orchestrator_queries = Counter(
            "orchestrator_queries_total",
            "Queries answered, by query type and serving service.",
            ["query_type", "selected_service"],
            registry=r,
        )
        self.cache_hits = Counter(
            "orchestrator_cache_hits_total", "Queries answered from the cache.", registry=r
        )
        self.cache_misses = Counter(
            "orchestrator_cache_misses_total", "Cache lookups that found nothing.", registry=r
        )
        self.fallbacks = Counter(
            "orchestrator_fallback_total",
            "Moves from a failing service to the next one.",
            ["from_service", "to_service", "reason"],
            registry=r,
        )

        # The guide's per-model family for Kimi, and ours for Qwen.
        self.services = {
            name: ServiceMetrics(name, label, r) for name, label in GUIDE_FAMILIES.items()
        }

        # The guide's agent-level families.
        self.ai_queries = Counter(
            "ai_queries_total",
            "Queries by agent, outcome and answering model.",
            ["agent_type", "status", "model"],
            registry=r,
        )
        self.ai_duration = Histogram(
            "ai_response_duration_seconds",
            "End-to-end answer latency by agent and model.",
            ["agent_type", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ai_errors = Counter(
            "ai_errors_total",
            "Failed backend calls by service, model and error type.",
            ["service", "model", "error_type"],
            registry=r,
        )

        # Ours.
        self.backend_calls = Counter(
            "ai_backend_calls_total",
            "Upstream calls by service, model and outcome (every service, retries included).",
            ["service", "model", "status"],
            registry=r,
        )
        self.backend_duration = Histogram(
            "ai_backend_call_duration_seconds",
            "Upstream call latency, request to last byte, by service and model.",
            ["service", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.backend_tokens = Counter(
            "ai_backend_tokens_total",
            "Tokens by service, model and type (reasoning is a part of completion).",
            ["service", "model", "token_type"],
            registry=r,
        )
        self.skipped_events = Counter(
            "aiorch_stream_events_skipped_total",
            "Malformed upstream stream events skipped (the stream went on).",
            ["service"],
            registry=r,
        )
        self.phase_duration = Histogram(
            "aiorch_phase_duration_seconds",
            "Where each request's time went: queue, parse, classify, cache, connect, first_byte, "
            "stream, gateway and total (the Server-Timing header's phases).",
            ["phase"],
            buckets=PHASE_BUCKETS,
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "ai_time_to_first_token_seconds",
            "Time from request to the first streamed token.",
            ["service", "model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cost = Counter(
            "ai_cost_usd_total",
            "Spend in US dollars: tokens times the configured prices.",
            ["service", "model"],
            registry=r,
        )
        self.request_duration = Histogram(
            "orchestrator_request_duration_seconds",
            "End-to-end orchestrator latency per query, cache hits included.",
            ["query_type", "selected_service", "cached"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "orchestrator_overhead_seconds",
            "The orchestrator's own time per query: total minus time waiting on backends.",
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "orchestrator_in_flight_requests",
            "Queries being answered right now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.coalesced = Counter(
            "orchestrator_coalesced_total",
            "Queries that shared an identical in-flight query's upstream call.",
            registry=r,
        )
        self.retries = Counter(
            "orchestrator_retries_total",
            "Backend calls repeated after a retryable error.",
            ["service", "reason"],
            registry=r,
        )
        self.retry_budget_exhausted = Counter(
            "orchestrator_retry_budget_exhausted_total",
            "Retries not made because the retry budget was spent.",
            ["service"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "orchestrator_circuit_breaker_state",
            "Circuit breaker per service: 0 closed, 1 half-open, 2 open.",
            ["service"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.cache_errors = Counter(
            "orchestrator_cache_errors_total",
            "Cache operations that failed or timed out (the query went on without the cache).",
            ["operation"],
            registry=r,
        )
        self.rate_limited = Counter(
            "aiorch_rate_limited_total", "Requests refused by the per-key rate limit.", registry=r
        )
        self.http_requests = Counter(
            "aiorch_http_requests_total",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "aiorch_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.flow_runs = Counter(
            "ai_flow_runs_total",
            "Agent flow runs by flow and outcome.",
            ["flow", "status"],
            registry=r,
        )
        self.flow_stage_duration = Histogram(
            "ai_flow_stage_duration_seconds",
            "Agent flow stage latency.",
            ["flow", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def initialise(self, catalog: Catalog) -> None:
        """Create every label combination the configuration can produce, at zero, so that
        `rate()` sees the first requests (`aiorch.monitoring.initial`). Call once, at start-up."""
        from aiorch.monitoring.initial import initialise

        initialise(self, catalog)

    def initialise_routes(self, routes: Iterable[tuple[str, str]]) -> None:
        """The HTTP families' series for each (route template, method) served, at zero."""
        from aiorch.monitoring.initial import initialise_routes

        initialise_routes(self, routes)

    # One-line recorders for the call sites.

    def record_call(
        self,
        service: str,
        model: str,
        mode: Mode,
        seconds: float,
        *,
        error_type: str | None = None,
        usage: Usage | None = None,
        cost_usd: float = 0.0,
        first_token_seconds: float | None = None,
    ) -> None:
        """One upstream call, as `GuardedService` records it: once, when it ends."""
        status = Status.SUCCESS if error_type is None else Status.ERROR
        self.backend_calls.labels(service, model, status).inc()
        # The enums are StrEnums: passed as they are, they label as their values (`str()`), and
        # the child cache finds them without the enum `.value` lookups (about 0.3 us each).
        exemplar = self.exemplars() if self.exemplars is not None else None
        self.backend_duration.labels(service, model).observe(seconds, exemplar)
        family = self.services.get(service)
        if family is not None:
            family.queries.labels(mode, status).inc()
            family.duration.labels(mode).observe(seconds, exemplar)
        if error_type is not None:
            self.ai_errors.labels(service, model, error_type).inc()
        if usage is not None:
            for token_type, count in (
                (TokenType.PROMPT, usage.prompt_tokens),
                (TokenType.COMPLETION, usage.completion_tokens),
                (TokenType.REASONING, usage.reasoning_tokens),
            ):
                self.backend_tokens.labels(service, model, token_type).inc(count)
                if family is not None:
                    family.tokens.labels(mode, token_type).inc(count)
        if cost_usd:
            self.cost.labels(service, model).inc(cost_usd)
        if first_token_seconds is not None:
            self.time_to_first_token.labels(service, model).observe(first_token_seconds, exemplar)
        for observer in self.observers:
            observer.call(
                service,
                model,
                mode,
                seconds,
                error_type=error_type,
                usage=usage,
                first_token_seconds=first_token_seconds,
            )

    def record_phases(self, phases: dict[str, float]) -> None:
        for phase, seconds in phases.items():
            self.phase_duration.labels(phase).observe(seconds)

    def set_breaker_state(self, service: str, state: str) -> None:
        self.breaker_state.labels(service).set(BREAKER_STATES[state])


def metrics_endpoint(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """Render the exposition for a scrape: (body, content type).

    OpenMetrics (with exemplars) when the scraper asks for it, the text format otherwise. In
    multiprocess mode the registry's live values are ignored and every worker's files are merged.
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        registry = CollectorRegistry()
        WorkerFilesCollector(registry, directory)
    if accept and "application/openmetrics-text" in accept:
        return openmetrics.generate_latest(registry), openmetrics.CONTENT_TYPE_LATEST  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST
