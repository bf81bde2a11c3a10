"""Metric children are cached per label tuple; what is exported stays exactly the same."""

from __future__ import annotations

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest

from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.types import Mode, Usage


def _series(registry: CollectorRegistry, name: str) -> list[str]:
    return [
        line for line in generate_latest(registry).decode().splitlines() if line.startswith(name)
    ]


def test_labels_returns_one_child_per_label_tuple_however_asked() -> None:
    metrics = Metrics(CollectorRegistry())
    child = metrics.orchestrator_queries.labels("code", "qwen")
    assert metrics.orchestrator_queries.labels("code", "qwen") is child
    assert metrics.orchestrator_queries.labels(query_type="code", selected_service="qwen") is child
    assert metrics.orchestrator_queries.labels("code", "kimi") is not child
    assert isinstance(child, prometheus_client.Counter)


def test_cached_children_export_like_plain_ones() -> None:
    cached, plain = CollectorRegistry(), CollectorRegistry()
    metrics = Metrics(cached)
    counter = prometheus_client.Counter(
        "orchestrator_queries_total", "x", ["query_type", "selected_service"], registry=plain
    )
    for _ in range(3):
        metrics.orchestrator_queries.labels("code", "qwen").inc()
        counter.labels("code", "qwen").inc()
    metrics.record_call("qwen", "m", Mode.INSTANT, 0.2, usage=Usage(1, 2, 0))
    assert _series(cached, "orchestrator_queries_total{") == _series(
        plain, "orchestrator_queries_total{"
    )
    assert 'qwen_tokens_used_total{mode="instant",token_type="completion"} 2.0' in _series(
        cached, "qwen_tokens_used_total{"
    )


def test_removed_children_are_not_served_from_the_cache() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    old = metrics.breaker_state.labels("qwen")
    metrics.breaker_state.remove("qwen")
    fresh = metrics.breaker_state.labels("qwen")
    assert fresh is not old
    fresh.set(2)
    metrics.breaker_state.clear()
    assert metrics.breaker_state.labels("qwen") is not fresh
    assert _series(registry, 'orchestrator_circuit_breaker_state{service="qwen"}') == [
        'orchestrator_circuit_breaker_state{service="qwen"} 0.0'
    ]
