"""OrchestratorCircuitBreakerOpen stays silent for a backend that recovered while nobody called it.

A real Prometheus scrapes a real aiorch whose Kimi fails until its breaker opens; then the traffic
stops and the upstream is healthy again (the faults were in the prompts). The breaker must leave
"open" by itself, about `reset_seconds` later, without a request to notice: an idle service's
gauge that stays at 2 keeps the alert's expression true, and after its `for` the alert pages
someone about a backend that is fine.
"""

from __future__ import annotations

import time
import urllib.error
from collections.abc import Iterator

import pytest

from tests.monitoring.exprs import alert_rules
from tests.monitoring.live import Prometheus, http_json, stack

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]

RESET_SECONDS = 10.0
PROBE_SECONDS = 2.0  # the default probe interval
CONFIG = (
    f"[breaker]\nminimum_calls = 2\nreset_seconds = {RESET_SECONDS}\n"
    f"probe_interval = {PROBE_SECONDS}\n"
)
FAILING_KIMI = "[[mock: fault=http_503 fault_models=kimi]]"
# Issue 14: an idle, recovered backend's breaker is closed again within reset_seconds plus one
# probe interval of its opening; the slack is probe jitter and two scrapes.
SLACK_SECONDS = 4.0


def breaker_alert_expr() -> str:
    [rule] = [r for r in alert_rules() if r["alert"] == "OrchestratorCircuitBreakerOpen"]
    expr: str = rule["expr"].strip()
    return expr


@pytest.fixture(scope="module")
def opened(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Prometheus, float]]:
    tmp = tmp_path_factory.mktemp("live-breaker")
    with stack(tmp, config=CONFIG) as (aiorch, prometheus):
        prometheus.wait_for('up{job="aiorch"} == 1')
        for i in range(4):  # Kimi fails (retried, then Qwen answers) until its breaker opens
            body = {"query": f"breaker {i} {FAILING_KIMI}", "query_type": "reasoning"}
            try:
                http_json(f"{aiorch.url}/api/ai/query", body)
            except urllib.error.HTTPError as error:  # an open breaker may leave no one to ask
                error.close()
        # The alert's expression, without its `for`: the breaker is open and Prometheus saw it.
        prometheus.wait_for(breaker_alert_expr(), timeout=10)
        yield prometheus, time.monotonic()


def test_the_alert_expression_sees_an_open_breaker(opened: tuple[Prometheus, float]) -> None:
    prometheus, _ = opened
    [series] = prometheus.query('orchestrator_circuit_breaker_state{service="kimi"}')
    assert series["value"][1] in ("1", "2")  # open, or already probing


def test_the_breaker_alert_stays_silent_for_a_recovered_idle_backend(
    opened: tuple[Prometheus, float],
) -> None:
    """No request reaches the service after its breaker opened: the probes alone close it."""
    prometheus, seen_open = opened
    deadline = seen_open + RESET_SECONDS + PROBE_SECONDS + SLACK_SECONDS
    state = "2"
    while time.monotonic() < deadline:
        [series] = prometheus.query('orchestrator_circuit_breaker_state{service="kimi"}')
        state = series["value"][1]
        if state == "0":
            break
        time.sleep(0.5)
    assert state == "0", "the breaker of the recovered, idle Kimi is not closed in time"
    # And it stays closed without traffic: nothing for the alert's `for` to accumulate.
    time.sleep(3)
    assert prometheus.query(breaker_alert_expr()) == []
    [series] = prometheus.query('orchestrator_circuit_breaker_state{service="kimi"}')
    assert series["value"][1] == "0"
