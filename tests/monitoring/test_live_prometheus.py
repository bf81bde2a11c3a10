"""Every shipped PromQL expression, run by a real Prometheus against a real aiorch, twice.

`aiorch mock-upstream` stands in for both models, `aiorch serve` answers a load whose shape is
known, and a private `prometheus` scrapes it with our rule files loaded. Then every expression of
the dashboard, the rules and the runbook is queried over the HTTP API: none may fail, and every
one that the load must feed must return data. The guide's cache hit-rate query must equal the
share of repeated queries the load sent.

Two deployments, each a fresh aiorch:
- `warm`: scraped every second, the load sent one query at a time after a first round of traffic;
- `burst`: as a first deployment sees it: the whole load sent at once, right after Prometheus's
  first scrape, and over before the next one (scrapes every 10 s). Only series that exist at
  zero before the burst let `rate()` see it (docs/observability.md, zero initialisation).
"""

from __future__ import annotations

import math
import time
import urllib.error
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.monitoring.exprs import Expr, all_exprs
from tests.monitoring.live import Prometheus, http_json, stack

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

# The load's cache traffic: each distinct prompt once (a miss), then REPEATS more times (hits).
DISTINCT = {"code": 3, "reasoning": 2}
REPEATS = 3
EXPECTED_HIT_PERCENT = 100 * REPEATS / (REPEATS + 1)
# Every Kimi attempt, answer or fault, takes this long at the mock, so each answer lands in the
# (0.25, 0.5] bucket, where histogram_quantile interpolates linearly: the guide's AI p95 over
# Kimi's answers has an exact expected value. (A failed call retried once takes two attempts
# and lands above the bucket, so Kimi's p50 is only known to lie inside it.)
KIMI_LATENCY_MS = 300
BUCKET = (0.25, 0.5)
# Prices, so that ai_cost_usd_total moves; everything else at its defaults.
CONFIG = (
    "[kimi]\nprice_input_per_mtok = 0.6\nprice_output_per_mtok = 2.5\n"
    "[qwen]\nprice_input_per_mtok = 0.1\nprice_output_per_mtok = 0.3\n"
)
BURST_SCRAPE_INTERVAL = 10.0

# Expressions that may rightly be empty after a healthy load: a threshold nothing crosses.
MAY_BE_EMPTY = {"max by (service) (orchestrator_circuit_breaker_state) > 0"}
# Alerts that must not fire on a fast, healthy service (their expressions must be empty).
MUST_BE_SILENT = {
    "AIHighResponseTime", "KimiHighResponseTime", "QwenHighResponseTime",
    "KimiLatencySLOBurn1h", "KimiLatencySLOBurn6h", "KimiLatencySLOBurn3d",
    "QwenLatencySLOBurn1h", "QwenLatencySLOBurn6h", "QwenLatencySLOBurn3d",
    "OrchestratorCircuitBreakerOpen", "AiorchMetricsDown", "AiorchMetricsAbsent",
    "AiorchGatewaySlow",
}  # fmt: skip
GUIDE_QUERIES_WHERE = ("runbook", "The guide's queries")


def cached_requests(base: str) -> list[Callable[[], Any]]:
    """Per distinct prompt: it is sent 1 + REPEATS times in a row (a miss, then hits)."""

    def repeat(query_type: str, i: int) -> None:
        body = {"query": f"live {query_type} prompt {i}", "query_type": query_type}
        for _ in range(1 + REPEATS):
            http_json(f"{base}/api/ai/query", body)

    return [lambda t=t, i=i: repeat(t, i) for t, count in DISTINCT.items() for i in range(count)]


def uncached_requests(base: str) -> list[Callable[[], Any]]:
    """Every other kind of traffic, bypassing the cache so that the hit rate stays as planned."""
    query = f"{base}/api/ai/query"

    def ask(body: dict[str, Any]) -> Callable[[], Any]:
        return lambda: http_json(query, {**body, "use_cache": False})

    def outage() -> None:
        # Both answer 503: the user gets an error (ai_queries_total{status="error"}).
        with pytest.raises(urllib.error.HTTPError) as failure:
            http_json(query, {"query": "live outage [[mock: fault=http_503]]", "use_cache": False})
        failure.value.close()  # the error holds the response open
        assert failure.value.code >= 500

    return [
        *(ask({"query": f"live {a} task", "agent_type": a}) for a in ("ba", "dev", "qa")),
        ask({"query": "live unclassified", "query_type": "unknown"}),
        # Streams: time to first token for both services.
        *(ask({"query": f"live stream {t}", "query_type": t, "stream": True})
          for t in ("code", "reasoning")),
        # Kimi answers 503: retried, then answered by Qwen (a fallback, errors, retries).
        ask({"query": "live fallback [[mock: fault=http_503 fault_models=kimi]]",
             "query_type": "reasoning"}),
        outage,
    ]  # fmt: skip


def one_at_a_time(requests: list[Callable[[], Any]]) -> None:
    for request in requests:
        request()


def all_at_once(requests: list[Callable[[], Any]]) -> None:
    with ThreadPoolExecutor(len(requests)) as pool:
        for future in [pool.submit(request) for request in requests]:
            future.result()


EXPECTED_LOOKUPS = sum(DISTINCT.values()) * (1 + REPEATS)
LOOKUPS = "orchestrator_cache_hits_total + orchestrator_cache_misses_total"


def warm(aiorch: str, prometheus: Prometheus) -> None:
    prometheus.wait_for('up{job="aiorch"} == 1')
    # A first round of traffic, scraped, before the measured load: the steady state.
    one_at_a_time(uncached_requests(aiorch))
    prometheus.wait_for('sum(ai_queries_total{status="error"}) == 1')
    time.sleep(1.5)
    one_at_a_time(cached_requests(aiorch) + uncached_requests(aiorch))
    prometheus.wait_for(f"{LOOKUPS} == {EXPECTED_LOOKUPS}")
    prometheus.wait_for('sum(ai_queries_total{status="error"}) == 2')
    time.sleep(3)  # a few more scrapes and rule evaluations after the last request


def burst(aiorch: str, prometheus: Prometheus) -> None:
    # Right after the first scrape of the fresh service, the whole load at once.
    first = prometheus.next_scrape()
    started = time.monotonic()
    all_at_once(cached_requests(aiorch) + uncached_requests(aiorch))
    took = time.monotonic() - started
    during = prometheus.last_scrape()
    print(f"\nburst of the whole load: {took:.2f} s; scrapes every {BURST_SCRAPE_INTERVAL:g} s")
    # The point of this deployment: no scrape between the first one and the burst's end.
    assert during == first, f"a scrape fell inside the {took:.2f} s burst: rerun on a quieter host"
    prometheus.wait_for(f"{LOOKUPS} == {EXPECTED_LOOKUPS}", timeout=3 * BURST_SCRAPE_INTERVAL)
    prometheus.wait_for('sum(ai_queries_total{status="error"}) == 1')
    time.sleep(3)  # rule evaluations (every second) over the scrape that saw the burst


DEPLOYMENTS = {"warm": ("1s", warm), "burst": (f"{BURST_SCRAPE_INTERVAL:g}s", burst)}


@pytest.fixture(scope="module", params=list(DEPLOYMENTS))
def loaded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    interval, send = DEPLOYMENTS[request.param]
    tmp = tmp_path_factory.mktemp(f"live-prometheus-{request.param}")
    model_config = f"kimi-k2-thinking:latency_ms={KIMI_LATENCY_MS}"
    with stack(tmp, config=CONFIG, scrape_interval=interval, model_config=model_config) as (
        aiorch,
        prometheus,
    ):
        send(aiorch.url, prometheus)
        yield prometheus


def test_the_load_reached_aiorch(loaded: Prometheus) -> None:
    [hits] = loaded.query("orchestrator_cache_hits_total")
    assert float(hits["value"][1]) == sum(DISTINCT.values()) * REPEATS


def test_the_guides_cache_hit_rate_is_the_share_of_repeated_queries(loaded: Prometheus) -> None:
    [guide] = [
        e
        for e in all_exprs()
        if (e.source, e.where) == GUIDE_QUERIES_WHERE and e.expr.startswith("rate(")
    ]
    [series] = loaded.query(guide.expr)
    assert float(series["value"][1]) == pytest.approx(EXPECTED_HIT_PERCENT, rel=1e-9)


def test_prometheus_evaluates_every_rule_without_error(loaded: Prometheus) -> None:
    answer = http_json(f"{loaded.url}/api/v1/rules")
    rules = [r for g in answer["data"]["groups"] for r in g["rules"]]
    assert len(rules) == len([e for e in all_exprs() if e.source == "rules"])
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert broken == {}


@pytest.mark.parametrize("expr", all_exprs(), ids=str)
def test_every_expression_runs_and_returns_what_the_load_implies(
    loaded: Prometheus, expr: Expr
) -> None:
    result = loaded.query(expr.for_prometheus(rate_interval="1m"))
    if expr.kind == "alert":
        if expr.where in MUST_BE_SILENT:
            assert result == [], f"{expr} fires on a healthy, fast service: {result}"
    elif expr.expr not in MAY_BE_EMPTY:
        assert result, f"{expr} returned no data after the load:\n{expr.expr}"


def test_slo_recording_rules_see_a_fast_service_within_its_budget(loaded: Prometheus) -> None:
    for service in ("kimi", "qwen"):
        [ratio] = loaded.wait_for(f"slo:{service}_latency:error_ratio_rate5m")
        assert float(ratio["value"][1]) == 0.0
        [budget] = loaded.wait_for(f"slo:{service}_latency:error_budget_remaining")
        assert float(budget["value"][1]) == 1.0


def answered_label_sets(prometheus: Prometheus) -> set[tuple[str, str]]:
    """The (agent_type, model) pairs with answers in the guide's 5-minute window."""
    result = prometheus.query(
        "sum by (agent_type, model) (increase(ai_response_duration_seconds_count[5m])) > 0"
    )
    return {(s["metric"]["agent_type"], s["metric"]["model"]) for s in result}


def within_bucket(quantile: float) -> float:
    low, high = BUCKET
    return low + (high - low) * quantile


def test_the_guides_latency_quantiles_give_the_known_loads_numbers(loaded: Prometheus) -> None:
    guide = [e for e in all_exprs() if (e.source, e.where) == GUIDE_QUERIES_WHERE]
    quantiles = [e for e in guide if e.expr.startswith("histogram_quantile(")]
    [kimi_p50] = [e for e in quantiles if "kimi_response_duration_seconds" in e.expr]
    [ai_p95] = [e for e in quantiles if "ai_response_duration_seconds" in e.expr]

    [kimi] = loaded.query(kimi_p50.expr)
    low, high = BUCKET
    assert low < float(kimi["value"][1]) <= high

    # Every agent's Kimi series exists (at zero from start-up); those with no answer in the
    # window are NaN (0 / 0). The ones with answers are exact.
    answered = answered_label_sets(loaded)
    answered_by_kimi = [
        float(s["value"][1])
        for s in loaded.query(ai_p95.expr)
        if (s["metric"].get("agent_type"), s["metric"].get("model")) in answered
        and s["metric"].get("model") == "kimi-k2-thinking"
    ]
    assert answered_by_kimi  # direct queries at least
    assert answered_by_kimi == pytest.approx([within_bucket(0.95)] * len(answered_by_kimi))


def test_the_guides_three_queries_give_finite_values(loaded: Prometheus) -> None:
    """What the issue found NaN on a fresh service: each query's series that the load fed."""
    guide = [e for e in all_exprs() if (e.source, e.where) == GUIDE_QUERIES_WHERE]
    [hit_rate] = [e for e in guide if e.expr.startswith("rate(")]
    [kimi_p50] = [e for e in guide if "kimi_response_duration_seconds" in e.expr]
    [ai_p95] = [e for e in guide if "ai_response_duration_seconds" in e.expr]

    def values(expr: Expr, **labels: str) -> list[float]:
        result = loaded.query(expr.expr)
        return [
            float(s["value"][1])
            for s in result
            if all(s["metric"].get(k) == v for k, v in labels.items())
        ]

    fed = {
        "cache hit rate": values(hit_rate),
        # kimi-k2-thinking always thinks: the thinking series is Kimi's only one.
        "kimi p50": values(kimi_p50),
    }
    for agent, model in sorted(answered_label_sets(loaded)):
        fed[f"ai p95 {agent}/{model}"] = values(ai_p95, agent_type=agent, model=model)
    assert ("direct", "kimi-k2-thinking") in answered_label_sets(loaded)
    print("\n" + "\n".join(f"{name}: {found}" for name, found in fed.items()))
    for name, found in fed.items():
        assert found, f"{name}: no series"
        assert all(math.isfinite(v) for v in found), f"{name}: {found}"
