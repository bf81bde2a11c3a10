"""Every metric name the dashboard, the rules and the runbook read exists: in
`aiorch.monitoring.prometheus_metrics.Metrics`, or as one of our recording rules. Renaming a
metric without updating them fails here, not on a dashboard at 3 a.m."""

from __future__ import annotations

import re
from functools import cache

import pytest
from prometheus_client import CollectorRegistry

from aiorch.monitoring.prometheus_metrics import Metrics
from tests.monitoring.exprs import (
    RUNBOOK,
    Expr,
    all_exprs,
    metric_names,
    range_windows,
    recording_rule_names,
)

# Prometheus's own series about a scrape.
SCRAPE_SERIES = {"up"}

SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gauge": ("",),
}


@cache
def exported_families() -> dict[str, str]:
    """Family name as a user writes it (counters with _total) -> type."""
    families = {}
    for family in Metrics(CollectorRegistry()).registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        families[name] = family.type
    return families


@cache
def exported_series_names() -> frozenset[str]:
    """The sample names a scrape of aiorch can contain."""
    names = set()
    for family in Metrics(CollectorRegistry()).registry.collect():
        names |= {family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type]}
    return frozenset(names)


def known_names() -> set[str]:
    return set(exported_series_names()) | recording_rule_names() | SCRAPE_SERIES


def test_the_guides_families_are_exported_with_the_guides_names() -> None:
    names = exported_series_names()
    for name in [
        "orchestrator_queries_total", "orchestrator_cache_hits_total",
        "orchestrator_cache_misses_total", "orchestrator_fallback_total", "kimi_queries_total",
        "kimi_response_duration_seconds_bucket", "kimi_tokens_used_total", "ai_queries_total",
        "ai_response_duration_seconds_bucket", "ai_errors_total",
    ]:  # fmt: skip
        assert name in names


@pytest.mark.parametrize("expr", all_exprs(), ids=str)
def test_every_metric_an_expression_reads_exists(expr: Expr) -> None:
    names = metric_names(expr.expr)
    assert names, f"no metric found in {expr.expr!r}: the tokenizer or the expression is wrong"
    unknown = names - known_names()
    assert not unknown, f"{expr} reads unknown metrics {sorted(unknown)}"


def test_every_metric_named_in_the_runbooks_prose_exists() -> None:
    # Backticked names outside the PromQL blocks (`kimi_queries_total` by `mode`, ...).
    text = re.sub(r"```.*?```", "", RUNBOOK.read_text(encoding="utf-8"), flags=re.DOTALL)
    allowed = (
        known_names()
        | set(exported_families())
        | {name.removesuffix("_total") for name in exported_families()}
    )
    prefixes = ("orchestrator_", "kimi_", "qwen_", "ai_", "aiorch_", "slo:")
    mentioned = set()
    for span in re.findall(r"`([^`]+)`", text):
        span = re.sub(r"[\w./-]+\.(?:py|ya?ml|md|json|toml)\b", "", span)  # file names
        mentioned |= {n for n in metric_names(span) if n.startswith(prefixes)}
    assert mentioned, "the tokenizer found no metric names in the runbook's prose"
    assert sorted(mentioned - allowed) == []


def test_the_slo_rules_read_the_exact_slo_buckets() -> None:
    # The ratio SLIs only work while the histograms have these exact boundaries.
    from aiorch.monitoring.prometheus_metrics import LATENCY_BUCKETS

    assert {15.0, 60.0} <= set(LATENCY_BUCKETS)
    slo = {e.where: e.expr for e in all_exprs() if e.source == "rules"}
    assert (
        'kimi_response_duration_seconds_bucket{le="60.0"}'
        in slo["slo:kimi_latency:error_ratio_rate1h"]
    )
    assert (
        'qwen_response_duration_seconds_bucket{le="15.0"}'
        in slo["slo:qwen_latency:error_ratio_rate1h"]
    )


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (le, mode) (rate(kimi_x_bucket{le="60.0",mode=~"a|b"}[$__rate_interval]))',
         {"kimi_x_bucket"}),
        ("a_total / on () group_left () (sum(b_total) > 0) and c offset 5m",
         {"a_total", "b_total", "c"}),
        ('label_replace(x, "service", "$1", "from_service", "(.+)") > 1e3', {"x"}),
        ("slo:kimi_latency:error_ratio_rate1h / 0.05 > 14.4",
         {"slo:kimi_latency:error_ratio_rate1h"}),
        ("histogram_quantile(0.95, sum(rate(h_bucket[5m])) by (le)) # p95", {"h_bucket"}),
    ],
)  # fmt: skip
def test_the_tokenizer_finds_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_range_windows() -> None:
    assert range_windows("rate(a[5m]) + rate(b[$__rate_interval])") == ["5m", "$__rate_interval"]
