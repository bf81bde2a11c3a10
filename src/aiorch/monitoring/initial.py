"""Every label combination that can occur, created at zero before the first request.

Prometheus computes `rate()` and `increase()` from the difference between samples. A series
that first appears with its count already at 10 has no earlier sample, so its first burst is
invisible: the guide's `histogram_quantile(0.50, rate(kimi_response_duration_seconds_bucket[5m]))`
was NaN after ten Kimi queries on a fresh service. Prometheus's advice is to create the known
label combinations at zero at start-up; this module lists them.

The sets are closed and small: only what the configuration can produce (configured services and
their configured models, the modes those models can run in, the fallback pairs along configured
chains), the enums of `aiorch.types`, and the error types that each family can really record.
A model a client names as `service/model-id` without it being configured is labelled `other`
and is not created here: list it in the configuration to have its series from the start.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import product
from typing import TYPE_CHECKING

from aiorch.errors import BackendError, CircuitOpen, StreamInterrupted, UpstreamRequestError
from aiorch.timing import PHASES
from aiorch.types import AgentType, Mode, QueryType, Status, TokenType

if TYPE_CHECKING:
    from aiorch.catalog import Catalog
    from aiorch.models import Model
    from aiorch.monitoring.prometheus_metrics import Metrics

MULTI = "multi"  # the `selected_service` of a merged answer (config.MULTI)
HEDGED = "hedged"  # strategies.HEDGED: a hedge, not a failure, moved the query on
CONTINUED = ("stream_cut", "stream_stall")  # a broken stream continued on the next model
CACHE_OPERATIONS = ("get", "set")  # guard.CacheGuard
FLOW_STATUSES = ("completed", "failed", "cancelled")  # agents.flow
CACHED = ("true", "false")


def _backend_errors() -> Iterator[type[BackendError]]:
    pending: list[type[BackendError]] = [BackendError]
    while pending:
        cls = pending.pop()
        yield cls
        pending.extend(cls.__subclasses__())


def call_errors() -> frozenset[str]:
    """The `error_type` a guarded call can end with (`ai_errors_total`): every backend error a
    call can raise, an upstream's refusal, and `internal` for a defect. Not `circuit_open` (no
    call is made) nor `stream_interrupted` (raised by the chain, after the call ended)."""
    never = {CircuitOpen.error_type, StreamInterrupted.error_type}
    types = {cls.error_type for cls in _backend_errors()} - never
    return frozenset(types | {UpstreamRequestError.error_type, "internal"})


def retry_reasons() -> frozenset[str]:
    """The `reason` of `orchestrator_retries_total`: the retryable backend errors."""
    never = {CircuitOpen.error_type, StreamInterrupted.error_type}
    return frozenset(cls.error_type for cls in _backend_errors() if cls.retryable) - never


def fallback_reasons(hedge: bool) -> frozenset[str]:
    """The `reason` of `orchestrator_fallback_total` between two models of a chain: the error
    type of a call that failed before any output (a breaker already open included), a broken
    stream continued on the next model, and a hedge when hedging is on. The refusal reason
    (`upstream_request_error`) only occurs where the configuration names models for a code:
    `refusal_pairs` adds it there alone."""
    types = {cls.error_type for cls in _backend_errors()} - {StreamInterrupted.error_type}
    return frozenset(types | set(CONTINUED) | ({HEDGED} if hedge else set()))


def modes(model: Model) -> tuple[Mode, ...]:
    """The modes a call to this model can run in: its own, or both when a request may switch."""
    if model.rules.thinking_control == "none":
        return (Mode.THINKING if model.thinking else Mode.INSTANT,)
    return (Mode.THINKING, Mode.INSTANT)


def chains(catalog: Catalog) -> list[tuple[str, ...]]:
    """The services of every chain a query can walk, in order: each configured model's own
    chain, each service's chain (for its unlisted models), the routes by query type, and the
    models the configuration names for an upstream's refusal."""
    settings = catalog.settings
    out: list[tuple[str, ...]] = []
    for model in catalog.models():
        out.append(tuple(m.service for m in catalog.chain(model)))
        for code in _refusal_codes(catalog, model):
            instead = catalog.on_refusal(model, code)
            out.append((model.service, *(m.service for m in instead)))
    for name, service in settings.services.items():
        out.append((name, *(catalog.resolve(ref).service for ref in service.fallbacks or ())))
    for query_type in QueryType:
        route = catalog.route(query_type)
        if not route.multi:  # a fan-out asks each model once, without fallbacks
            out.append(tuple(m.service for m in route.targets))
    return out


def _refusal_codes(catalog: Catalog, model: Model) -> set[str]:
    service = catalog.settings.services[model.service]
    return {*service.fallbacks_on, *service.model_settings(model.id).fallbacks_on}


def fallback_pairs(catalog: Catalog) -> set[tuple[str, str]]:
    """Every (from_service, to_service) a chain can move along. Not only neighbours: a model
    that cannot serve a request is dropped from its route, so a chain can skip one."""
    return {
        (a, b) for chain in chains(catalog) for i, a in enumerate(chain) for b in chain[i + 1 :]
    }


def refusal_pairs(catalog: Catalog) -> set[tuple[str, str]]:
    pairs = set()
    for model in catalog.models():
        for code in _refusal_codes(catalog, model):
            instead = catalog.on_refusal(model, code)
            if instead:
                pairs.add((model.service, instead[0].service))
    return pairs


def initialise(metrics: Metrics, catalog: Catalog) -> None:
    """Create every label combination the configuration can produce, at zero."""
    settings = catalog.settings
    m = metrics
    services = list(settings.services)
    models = list(catalog.models())
    labels = sorted({model.label for model in models})
    agents = [agent.value for agent in AgentType]

    selected = [*services, *([MULTI] if settings.multi else [])]
    for query_type, service in product(QueryType, selected):
        m.orchestrator_queries.labels(query_type.value, service)
        for cached in CACHED:
            m.request_duration.labels(query_type.value, service, cached)
    for (source, target), reason in product(
        fallback_pairs(catalog), fallback_reasons(settings.hedge.enabled)
    ):
        m.fallbacks.labels(source, target, reason)
    for source, target in refusal_pairs(catalog):
        m.fallbacks.labels(source, target, UpstreamRequestError.error_type)

    for agent, label in product(agents, labels):
        m.ai_duration.labels(agent, label)
        for status in Status:
            m.ai_queries.labels(agent, status.value, label)

    errors, retries = sorted(call_errors()), sorted(retry_reasons())
    for model in models:
        service, label = model.service, model.label
        for status in Status:
            m.backend_calls.labels(service, label, status.value)
        m.backend_duration.labels(service, label)
        m.time_to_first_token.labels(service, label)
        for token_type in TokenType:
            m.backend_tokens.labels(service, label, token_type.value)
        for error_type in errors:
            m.ai_errors.labels(service, label, error_type)
        if model.price_input_per_mtok or model.price_output_per_mtok:
            m.cost.labels(service, label)
        family = m.services.get(service)
        if family is not None:
            for mode in modes(model):
                family.duration.labels(mode.value)
                for status in Status:
                    family.queries.labels(mode.value, status.value)
                for token_type in TokenType:
                    family.tokens.labels(mode.value, token_type.value)
    for service in services:
        m.skipped_events.labels(service)
        m.retry_budget_exhausted.labels(service)
        for reason in retries:
            m.retries.labels(service, reason)

    for operation in CACHE_OPERATIONS:
        m.cache_errors.labels(operation)
    for phase in PHASES:
        m.phase_duration.labels(phase)
    for flow, spec in settings.flows.items():
        for outcome in FLOW_STATUSES:
            m.flow_runs.labels(flow, outcome)
        for stage in spec.stages:
            m.flow_stage_duration.labels(flow, stage)


def initialise_routes(metrics: Metrics, routes: Iterable[tuple[str, str]]) -> None:
    """The HTTP families for each (route template, method) the server serves. Of the request
    counter only status 200 is created: the error codes a route can answer are many and rare,
    and their series start at their first use."""
    for route, method in routes:
        metrics.http_duration.labels(route)
        metrics.http_requests.labels(route, method, "200")
