"""Doctor: reading expositions, windows between scrapes, and PromQL's histogram_quantile."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from aiorch.doctor import ExpositionError, Histogram, View, between, parse, totals
from aiorch.doctor.exposition import expected_families, missing_families, traffic
from aiorch.doctor.series import labels_of
from aiorch.monitoring.prometheus_metrics import Metrics

DATA = Path(__file__).parent / "data" / "doctor"
INF = math.inf


def fixture(name: str) -> str:
    return (DATA / name).read_text()


# Parsing


def test_fresh_exposition_has_every_expected_family() -> None:
    scrape = parse(fixture("fresh.prom"))
    assert missing_families(scrape) == ()
    assert scrape.types["orchestrator_queries"] == "counter"
    assert scrape.types["kimi_response_duration_seconds"] == "histogram"
    assert scrape.types["orchestrator_circuit_breaker_state"] == "gauge"


def test_created_samples_are_dropped() -> None:
    scrape = parse(fixture("healthy.prom"))
    assert not [name for name in scrape.samples if name.endswith("_created")]
    assert not [name for name in scrape.types if name.endswith("_created")]


def test_counters_are_read_under_their_total_name() -> None:
    view = totals(parse(fixture("healthy.prom")))
    assert view.total("orchestrator_cache_hits_total") == 30
    assert view.total("orchestrator_cache_misses_total") == 10
    assert view.by("orchestrator_queries_total", ("selected_service",)) == {
        ("kimi",): 20,
        ("qwen",): 20,
    }


def test_expected_families_follow_the_metrics_module() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    names = {f.name for f in expected_families()}
    # The guide's families, by their names without the counter suffix.
    assert {
        "orchestrator_queries",
        "orchestrator_cache_hits",
        "orchestrator_cache_misses",
        "orchestrator_fallback",
        "kimi_queries",
        "kimi_response_duration_seconds",
        "kimi_tokens_used",
        "ai_queries",
        "ai_response_duration_seconds",
        "ai_errors",
    } <= names
    # Families with no series yet are still announced (HELP/TYPE), and parsed as present.
    assert names == set(parse(generate_latest(registry).decode()).types)
    by_name = {f.name: f for f in expected_families()}
    assert by_name["orchestrator_fallback"].sample_names == ("orchestrator_fallback_total",)
    assert by_name["orchestrator_in_flight_requests"].always_sampled
    assert not by_name["orchestrator_fallback"].always_sampled


def test_a_missing_family_is_named() -> None:
    text = "\n".join(
        line for line in fixture("fresh.prom").splitlines() if "orchestrator_fallback" not in line
    )
    assert missing_families(parse(text)) == ("orchestrator_fallback",)


@pytest.mark.parametrize("text", ["<html><body>Not found</body></html>", 'x{a="b"} not-a-number\n'])
def test_text_that_is_not_an_exposition_is_refused(text: str) -> None:
    with pytest.raises(ExpositionError, match="not a Prometheus text exposition"):
        parse(text)


# Windows between two scrapes


def test_window_counts_only_what_happened_between_the_scrapes() -> None:
    before, after = parse(fixture("slow_kimi_before.prom")), parse(fixture("slow_kimi_after.prom"))
    view = between(before, after)
    # Four Qwen queries before the first scrape, six streamed Kimi queries between the two.
    assert totals(after).total("qwen_queries_total") == 4
    assert view.total("qwen_queries_total") == 0
    assert view.total("kimi_queries_total") == 6
    assert view.total("orchestrator_queries_total") == 6
    assert traffic(view) == 6
    kimi = view.histogram("kimi_response_duration_seconds")[()]
    assert kimi.count == 6
    assert view.histogram("qwen_response_duration_seconds")[()].count == 0


def test_a_window_without_traffic_is_recognised() -> None:
    scrape = parse(fixture("healthy.prom"))
    assert traffic(between(scrape, scrape)) == 0
    assert traffic(totals(scrape)) == 40


def test_gauges_keep_the_second_scrapes_value() -> None:
    first = parse("# TYPE g gauge\ng 5\n# TYPE c counter\nc_total 10\n")
    second = parse("# TYPE g gauge\ng 3\n# TYPE c counter\nc_total 14\n")
    view = between(first, second)
    assert view.total("g") == 3
    assert view.total("c_total") == 4


def test_a_counter_that_went_down_was_reset() -> None:
    first = parse('# TYPE c counter\nc_total{s="a"} 10\nc_total{s="b"} 2\n')
    second = parse('# TYPE c counter\nc_total{s="a"} 3\nc_total{s="b"} 5\nc_total{s="c"} 1\n')
    assert between(first, second).by("c_total", ("s",)) == {("a",): 3, ("b",): 3, ("c",): 1}


# histogram_quantile, as PromQL computes it


def hist(*buckets: tuple[float, float]) -> Histogram:
    return Histogram(tuple(buckets))


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        # 10 observations: 2 up to 1 s, 8 more up to 2 s, none above.
        (0.5, 1.0 + (5 - 2) / 8),  # rank 5 in (1, 2]
        (0.95, 1.0 + (9.5 - 2) / 8),
        (0.1, 0.0 + 1.0 * (1 / 2)),  # the first bucket starts at 0
        (1.0, 2.0),
    ],
)
def test_quantile_interpolates_inside_the_bucket(q: float, expected: float) -> None:
    h = hist((1.0, 2), (2.0, 10), (INF, 10))
    assert h.quantile(q) == pytest.approx(expected)


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound() -> None:
    assert hist((60.0, 1), (300.0, 2), (INF, 10)).quantile(0.95) == 300.0


def test_quantile_without_observations_is_none() -> None:
    assert hist((1.0, 0), (INF, 0)).quantile(0.5) is None
    assert hist((1.0, 3)).quantile(0.5) is None  # no +Inf bucket: PromQL gives NaN


def test_quantile_out_of_range() -> None:
    h = hist((1.0, 2), (INF, 2))
    assert h.quantile(-0.1) == -INF
    assert h.quantile(1.1) == INF


def test_quantile_repairs_non_monotonic_buckets() -> None:
    # A window across a restart can make a higher bucket smaller; PromQL treats it as equal.
    assert hist((1.0, 4), (2.0, 3), (INF, 4)).quantile(0.5) == pytest.approx(0.5)


def test_share_within_is_exact_on_a_bucket_boundary() -> None:
    h = hist((15.0, 90), (60.0, 97), (INF, 100))
    assert h.share_within(60.0) == pytest.approx(0.97)
    assert h.is_boundary(60.0)
    assert h.share_within(37.5) == pytest.approx((90 + 7 * 0.5) / 100)
    # Past the highest finite bound only a lower bound is known: the +Inf bucket is unknown.
    assert h.share_within(1000.0) == pytest.approx(0.97)
    assert hist((1.0, 0), (INF, 0)).share_within(1.0) is None


def test_view_groups_and_takes_maxima() -> None:
    view = View(
        {
            "s": {
                labels_of({"service": "kimi", "instance": "a"}): 0,
                labels_of({"service": "kimi", "instance": "b"}): 2,
                labels_of({"service": "qwen", "instance": "a"}): 1,
            }
        }
    )
    assert view.by("s", ("service",)) == {("kimi",): 2, ("qwen",): 1}
    assert view.by("s", ("service",), combine=max) == {("kimi",): 2, ("qwen",): 1}
    assert view.total("s", {"instance": "a"}) == 1
    assert view.total("absent") == 0


def test_histograms_sum_over_labels_not_asked_for() -> None:
    view = totals(parse(fixture("healthy.prom")))
    by_model = view.histogram("ai_response_duration_seconds", ("model",))
    assert set(by_model) == {("kimi-k2-thinking",), ("qwen2.5-coder:7b",)}
    whole = view.histogram("ai_response_duration_seconds")[()]
    assert whole.count == sum(h.count for h in by_model.values()) == 10
