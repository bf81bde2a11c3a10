"""Doctor: which phase of a request grew (aiorch_phase_duration_seconds), and every configured
service's latency, not only the guide's two. Views are built from a real `Metrics` registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from aiorch.doctor import Observation, Severity, Thresholds, Window, diagnose, parse
from aiorch.doctor.exposition import between, expected_families, totals
from aiorch.doctor.observation import BackendReadiness, Readiness
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.types import Mode, Usage


def requests(metrics: Metrics, n: int, **phases: float) -> None:
    """`n` requests, each spending `phases` seconds per phase (the rest of the total nowhere)."""
    for _ in range(n):
        metrics.record_phases({**phases, "total": sum(phases.values())})


def scrape(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def window(before: str, after: str) -> Observation:
    first, second = parse(before), parse(after)
    view = between(first, second)
    queries = view.total("orchestrator_queries_total")
    return Observation(
        Window("metrics", "test", 5.0, False, "window", queries),
        view,
        expected_families=len(expected_families()),
        baseline=totals(first),
    )


def since_start(text: str, readiness: Readiness | None = None) -> Observation:
    view = totals(parse(text))
    return Observation(
        Window("metrics", "test", 0.0, True, "totals", view.total("orchestrator_queries_total")),
        view,
        expected_families=len(expected_families()),
        readiness=readiness,
    )


def phases_finding(obs: Observation) -> dict[str, object]:
    report = diagnose(obs)
    [finding] = [f for f in report.findings if f.check == "phases"]
    return {"severity": finding.severity, "summary": finding.summary, **finding.evidence}


def test_a_busy_event_loop_is_named_as_the_gateways_own_queue() -> None:
    metrics = Metrics(CollectorRegistry())
    requests(metrics, 20, queue=0.0002, parse=0.0003, gateway=0.0005, first_byte=0.3)
    before = scrape(metrics)
    requests(metrics, 20, queue=0.060, parse=0.0003, gateway=0.0006, first_byte=0.3)
    found = phases_finding(window(before, scrape(metrics)))
    assert found["severity"] is Severity.WARNING
    assert (found["phase"], found["owner"]) == ("queue", "gateway")
    summary = str(found["summary"])
    assert summary.startswith("The gateway itself adds 61 ms to each request (from 1 ms before")
    assert "waiting before the handler (queue)" in summary


def test_a_slow_first_token_is_named_with_its_service() -> None:
    metrics = Metrics(CollectorRegistry())
    requests(metrics, 10, parse=0.0003, gateway=0.0005, first_byte=0.05, stream=0.2)
    metrics.record_call("kimi", "kimi-k2-thinking", Mode.THINKING, 0.25, usage=Usage(1, 1))
    before = scrape(metrics)
    requests(metrics, 10, parse=0.0003, gateway=0.0005, first_byte=0.9, stream=0.2)
    for _ in range(10):
        metrics.record_call("kimi", "kimi-k2-thinking", Mode.THINKING, 1.1, usage=Usage(1, 1))
        metrics.record_call("qwen", "qwen2.5-coder:7b", Mode.INSTANT, 0.05, usage=Usage(1, 1))
    found = phases_finding(window(before, scrape(metrics)))
    assert found["severity"] is Severity.INFO
    assert (found["phase"], found["owner"], found["service"]) == ("first_byte", "upstream", "kimi")
    summary = str(found["summary"])
    assert "Kimi's first token is slow (first_byte), 900 ms per request" in summary
    assert "up 850 ms per request from before the window" in summary


def test_without_a_baseline_the_largest_phase_is_named() -> None:
    metrics = Metrics(CollectorRegistry())
    requests(metrics, 5, parse=0.0002, gateway=0.0003, first_byte=0.01, stream=2.0)
    metrics.record_call("qwen", "qwen2.5-coder:7b", Mode.INSTANT, 2.0)
    found = phases_finding(since_start(scrape(metrics)))
    assert (found["phase"], found["service"]) == ("stream", "qwen")
    assert "Qwen streams its answers slowly (stream)" in str(found["summary"])


def test_a_fast_gateway_and_no_requests_say_nothing_alarming() -> None:
    metrics = Metrics(CollectorRegistry())
    assert [f for f in diagnose(since_start(scrape(metrics))).findings if f.check == "phases"] == []
    requests(metrics, 5, parse=0.01, gateway=0.01, first_byte=0.1)
    found = phases_finding(since_start(scrape(metrics)))
    assert found["severity"] is Severity.INFO  # 20 ms of its own: under the 50 ms line
    assert found["gateway_seconds_per_request"] == 0.02


def test_a_phase_only_some_requests_have_counts_for_the_average_request() -> None:
    metrics = Metrics(CollectorRegistry())
    requests(metrics, 9, gateway=0.001, first_byte=0.1)
    requests(metrics, 1, connect=0.5, gateway=0.001, first_byte=0.1)
    found = phases_finding(since_start(scrape(metrics)))
    per_request = found["seconds_per_request"]
    assert isinstance(per_request, dict)
    assert per_request["connect"] == 0.05  # 0.5 s once in ten requests
    assert per_request["first_byte"] == 0.1


def test_a_third_service_is_held_to_its_slo_on_the_shared_family() -> None:
    metrics = Metrics(CollectorRegistry())
    for _ in range(10):
        metrics.record_call("local", "llama3", Mode.INSTANT, 4.0, usage=Usage(10, 300))
    readiness = Readiness(
        "ready", backends=(BackendReadiness("local", "openai", "llama3", ready=True),)
    )
    obs = since_start(scrape(metrics), readiness)
    report = diagnose(obs, Thresholds(slo_seconds={"kimi": 60.0, "qwen": 15.0, "local": 2.0}))
    top = report.top
    assert top is not None
    assert (top.check, top.severity) == ("latency.local", Severity.CRITICAL)
    assert "local p95 is 4.9 s, above its 2.0 s SLO" in top.summary
    assert "Answers average 300 completion tokens." in top.summary
    assert top.panel == "Backend Call Duration"
    # Within a looser SLO (the loosest configured, when none is given) it passes.
    relaxed = diagnose(obs)
    local = next(f for f in relaxed.findings if f.check == "latency.local")
    assert local.severity is Severity.OK
