"""Every shipped PromQL expression, run by a real Prometheus against a real aiorch.

`aiorch mock-upstream` stands in for both models, `aiorch serve` answers a short load whose
shape is known, and a private `prometheus` scrapes it every second with our rule files loaded.
Then every expression of the dashboard, the rules and the runbook is queried over the HTTP API:
none may fail, and every one that the load must feed must return data. The guide's cache
hit-rate query must equal the share of repeated queries the load sent.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiorch.config import ENV_KEYS
from tests.monitoring.conftest import require_binary
from tests.monitoring.exprs import Expr, all_exprs, rule_files
from tests.support.procs import AIORCH, Server, free_port, run_server

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

UPSTREAM_KEY = "sk-live-monitoring"
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

# Expressions that may rightly be empty after a healthy load: a threshold nothing crosses.
MAY_BE_EMPTY = {"max by (service) (orchestrator_circuit_breaker_state) > 0"}
# Alerts that must not fire on a fast, healthy service (their expressions must be empty).
MUST_BE_SILENT = {
    "AIHighResponseTime", "KimiHighResponseTime", "QwenHighResponseTime",
    "KimiLatencySLOBurn1h", "KimiLatencySLOBurn6h", "KimiLatencySLOBurn3d",
    "QwenLatencySLOBurn1h", "QwenLatencySLOBurn6h", "QwenLatencySLOBurn3d",
    "OrchestratorCircuitBreakerOpen", "AiorchMetricsDown", "AiorchMetricsAbsent",
}  # fmt: skip
GUIDE_QUERIES_WHERE = ("runbook", "The guide's queries")


def http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read().decode()
    # /api/ai/query with "stream": true answers server-sent events, not JSON.
    return json.loads(raw) if raw.lstrip().startswith("{") else raw


class Prometheus:
    def __init__(self, server: Server) -> None:
        self.url = server.url

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            answer = http_json(url)
        except urllib.error.HTTPError as error:
            with error:
                detail = error.read().decode()
            raise AssertionError(f"{expr!r}: HTTP {error.code} {detail}") from None
        assert answer["status"] == "success", f"{expr!r}: {answer}"
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.25)
        raise AssertionError(f"{expr!r} still empty after {timeout} s")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Prometheus]]:
    prometheus_bin = require_binary("prometheus")
    tmp = tmp_path_factory.mktemp("live-prometheus")
    mock_port, aiorch_port, prom_port = free_port(), free_port(), free_port()

    config = tmp / "aiorch.toml"
    # Prices, so that ai_cost_usd_total moves; everything else at its defaults.
    config.write_text(
        "[kimi]\nprice_input_per_mtok = 0.6\nprice_output_per_mtok = 2.5\n"
        "[qwen]\nprice_input_per_mtok = 0.1\nprice_output_per_mtok = 0.3\n"
    )
    env = {
        **dict.fromkeys(ENV_KEYS, ""),  # nothing from the developer's shell leaks in
        "AIORCH_API_KEYS": "",
        "AIORCH_WORKERS": "",
        "AIORCH_CONFIG": str(config),
        "KIMI_BASE_URL": f"http://127.0.0.1:{mock_port}/v1",
        "KIMI_API_KEY": UPSTREAM_KEY,
        "QWEN_OLLAMA_URL": f"http://127.0.0.1:{mock_port}",
    }
    with (
        run_server(
            [*AIORCH, "mock-upstream", "--port", str(mock_port), "--api-key", UPSTREAM_KEY,
             "--seed", "1", "--model-config", f"kimi-k2-thinking:latency_ms={KIMI_LATENCY_MS}"],
            port=mock_port, ready_path="/healthz", tmp_path=tmp, name="mock-upstream",
        ),
        run_server(
            [*AIORCH, "serve", "--port", str(aiorch_port)],
            port=aiorch_port, ready_path="/healthz", tmp_path=tmp, env=env, name="aiorch",
        ) as aiorch,
        run_server(
            [prometheus_bin, f"--config.file={prometheus_config(tmp, aiorch_port)}",
             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}",
             "--log.level=warn"],
            port=prom_port, ready_path="/-/ready", tmp_path=tmp, name="prometheus",
        ) as prometheus,
    ):  # fmt: skip
        yield aiorch, Prometheus(prometheus)


def prometheus_config(tmp: Path, aiorch_port: int) -> Path:
    """Our scrape job and rules, at one-second scrapes and evaluations.

    The rule files are copied without their groups' own `interval` (one minute for the day-long
    windows), so that every recording rule has a value within seconds.
    """
    rules = []
    for path in rule_files():
        content = yaml.safe_load(path.read_text())
        for group in content["groups"]:
            group.pop("interval", None)
        copy = tmp / path.name
        copy.write_text(yaml.safe_dump(content, sort_keys=False))
        rules.append(str(copy))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": rules,
        "scrape_configs": [{
            "job_name": "aiorch",
            "metrics_path": "/metrics",
            "static_configs": [{"targets": [f"127.0.0.1:{aiorch_port}"]}],
        }],
    }  # fmt: skip
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def send_cached_load(base: str) -> None:
    """DISTINCT prompts per type, each sent 1 + REPEATS times, one at a time (no coalescing)."""
    for _ in range(1 + REPEATS):
        for query_type, count in DISTINCT.items():
            for i in range(count):
                body = {"query": f"live {query_type} prompt {i}", "query_type": query_type}
                http_json(f"{base}/api/ai/query", body)


def send_uncached_load(base: str) -> None:
    """Every other kind of traffic, bypassing the cache so that the hit rate stays as planned."""
    query = f"{base}/api/ai/query"
    for agent in ("ba", "dev", "qa"):
        http_json(query, {"query": f"live {agent} task", "agent_type": agent, "use_cache": False})
    http_json(query, {"query": "live unclassified", "query_type": "unknown", "use_cache": False})
    for query_type in ("code", "reasoning"):  # time to first token for both services
        http_json(query, {"query": f"live stream {query_type}", "query_type": query_type,
                          "stream": True, "use_cache": False})  # fmt: skip
    # Kimi answers 503: retried, then answered by Qwen (a fallback, errors, retries).
    http_json(query, {
        "query": "live fallback [[mock: fault=http_503 fault_models=kimi]]",
        "query_type": "reasoning", "use_cache": False,
    })  # fmt: skip
    # Both answer 503: the user gets an error (ai_queries_total{status="error"}).
    with pytest.raises(urllib.error.HTTPError) as failure:
        http_json(query, {"query": "live outage [[mock: fault=http_503]]", "use_cache": False})
    failure.value.close()  # the error holds the response open
    assert failure.value.code >= 500


@pytest.fixture(scope="module")
def loaded(stack: tuple[Server, Prometheus]) -> Prometheus:
    aiorch, prometheus = stack
    # The first scrape must see the cache counters at zero, so that rate() over the whole run
    # equals the load's own counts (no extrapolation from an unseen start).
    prometheus.wait_for('up{job="aiorch"} == 1')
    # A labelled series appears with its first use; a scrape of every one before the measured
    # load, so that rate() sees that load as an increase and not as the series' first value.
    send_uncached_load(aiorch.url)
    prometheus.wait_for('sum(ai_queries_total{status="error"}) == 1')
    time.sleep(1.5)
    send_cached_load(aiorch.url)
    send_uncached_load(aiorch.url)
    expected_lookups = sum(DISTINCT.values()) * (1 + REPEATS)
    lookups = "orchestrator_cache_hits_total + orchestrator_cache_misses_total"
    prometheus.wait_for(f"{lookups} == {expected_lookups}")
    prometheus.wait_for('sum(ai_queries_total{status="error"}) == 2')
    time.sleep(3)  # a few more scrapes and rule evaluations after the last request
    return prometheus


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

    answered_by_kimi = [
        float(s["value"][1])
        for s in loaded.query(ai_p95.expr)
        if s["metric"].get("model") == "kimi-k2-thinking"
    ]
    assert answered_by_kimi  # direct queries and the BA agent
    assert answered_by_kimi == pytest.approx([within_bucket(0.95)] * len(answered_by_kimi))
