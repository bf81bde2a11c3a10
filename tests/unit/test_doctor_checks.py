"""Doctor checks on recorded expositions and /readyz answers: the right top finding and exit code.

Fixtures in tests/unit/data/doctor/: `fresh`, `healthy`, `cold_cache`, `kimi_failing` and the two
`slow_kimi_*` scrapes were recorded from `aiorch serve` in front of `aiorch mock-upstream`;
`kimi_74s.prom` was written with `Metrics` to model a production hour (Kimi's p95 at 74 s, 31 %
of queries falling back to Qwen on timeout), and the `readyz_*.json` files are recorded answers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from rich.console import Console

from aiorch.doctor import Observation, Report, Severity, Thresholds, Window, diagnose, parse
from aiorch.doctor.exposition import between, expected_families, missing_families, totals
from aiorch.doctor.observation import decode_readiness
from aiorch.doctor.render import render, to_json
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.types import Mode, Usage

DATA = Path(__file__).parent / "data" / "doctor"
EXPECTED = len(expected_families())


def observe(
    metrics: str | None,
    readyz: str | None = "readyz_ready.json",
    *,
    before: str | None = None,
    text: str | None = None,
) -> Observation:
    """An observation from fixture files: totals of one scrape, or a window from two."""
    readiness = decode_readiness((DATA / readyz).read_bytes()) if readyz else None
    readiness_error = None if readyz else "cannot reach http://127.0.0.1:9/readyz"
    if metrics is None and text is None:
        window = Window("metrics", "http://127.0.0.1:9/metrics", 5.0, False, "unreachable")
        return Observation(
            window,
            None,
            metrics_error="cannot reach http://127.0.0.1:9/metrics: connection refused",
            expected_families=EXPECTED,
            readiness=readiness,
            readiness_error=readiness_error,
        )
    after = parse(text if text is not None else (DATA / str(metrics)).read_text())
    if before is not None:
        view = between(parse((DATA / before).read_text()), after)
        window = Window(
            "metrics", "fixture", 5.0, False, "window", view.total("orchestrator_queries_total")
        )
    else:
        view = totals(after)
        queries = view.total("orchestrator_queries_total")
        window = Window("metrics", "fixture", 5.0, True, "totals since start", queries)
    return Observation(
        window,
        view,
        missing_families=missing_families(after),
        expected_families=EXPECTED,
        readiness=readiness,
        readiness_error=readiness_error,
    )


def checks(report: Report, severity: Severity) -> list[str]:
    return [f.check for f in report.findings if f.severity is severity]


# The scenarios


def test_kimi_past_its_slo_is_the_top_finding() -> None:
    report = diagnose(observe("kimi_74s.prom"))
    top = report.top
    assert top is not None
    assert (top.check, top.severity, report.exit_code) == ("latency.kimi", Severity.CRITICAL, 2)
    assert "Kimi p95 is 74 s, above its 60 s SLO" in top.summary
    assert "31 % of queries fall back from Kimi to Qwen, mostly on timeout" in top.summary
    assert "13 calls hit the KIMI_TIMEOUT deadline" in top.summary
    assert top.evidence["p95_seconds"] == pytest.approx(60 + 60 * 3 / 13, abs=1e-3)
    assert top.evidence["share_within_slo"] == pytest.approx(187 / 200)
    assert top.evidence["share_within_slo_exact"] is True
    assert top.runbook == "kimihighresponsetime"
    assert top.panel == "Kimi Response Duration"
    # The fallbacks it explains are a finding of their own, ranked below it.
    assert "fallback" in checks(report, Severity.WARNING)


def test_qwen_within_its_slo_passes_next_to_a_slow_kimi() -> None:
    report = diagnose(observe("kimi_74s.prom"))
    qwen = next(f for f in report.findings if f.check == "latency.qwen")
    assert qwen.severity is Severity.OK
    assert qwen.evidence["p95_seconds"] is not None


def test_kimi_failing_puts_the_fallbacks_on_top() -> None:
    report = diagnose(observe("kimi_failing.prom"))
    top = report.top
    assert top is not None
    assert (top.check, top.severity, report.exit_code) == ("fallback", Severity.WARNING, 1)
    assert top.summary.startswith("100 % of queries (10 of 10) fell back from Kimi to Qwen")
    assert "Kimi's circuit breaker is open" in top.summary
    pairs = top.evidence["top"]
    assert isinstance(pairs, list)
    assert {(p["from"], p["to"]) for p in pairs if isinstance(p, dict)} == {("kimi", "qwen")}
    # What explains it ranks right after: Kimi's errors and its open breaker.
    assert checks(report, Severity.WARNING) == ["fallback", "errors.kimi", "breaker.kimi"]
    assert not checks(report, Severity.CRITICAL)


def test_cold_cache_is_the_top_finding() -> None:
    report = diagnose(observe("cold_cache.prom"))
    top = report.top
    assert top is not None
    assert (top.check, top.severity, report.exit_code) == ("cache", Severity.WARNING, 1)
    assert "Cache hit rate is 0 % (0 hits of 25 lookups" in top.summary
    assert top.runbook == "orchestratorlowcachehitrate"


def test_healthy_has_a_verdict_on_top_and_exit_zero() -> None:
    report = diagnose(observe("healthy.prom"))
    top = report.top
    assert top is not None
    assert (top.check, top.severity, report.exit_code) == ("healthy", Severity.OK, 0)
    assert "cache hit rate 75 %" in top.summary
    assert "Kimi p95" in top.summary
    assert "(SLO 60 s)" in top.summary


def test_a_window_judges_only_its_own_traffic() -> None:
    # Fast Qwen calls before the window, slow streamed Kimi calls inside it.
    slo = Thresholds(slo_seconds={"kimi": 0.2, "qwen": 15.0})
    report = diagnose(observe("slow_kimi_after.prom", before="slow_kimi_before.prom"), slo)
    top = report.top
    assert top is not None
    assert (top.check, report.exit_code) == ("latency.kimi", 2)
    assert top.evidence["calls"] == 6
    assert "Time to first token p50" in top.summary
    qwen = next(f for f in report.findings if f.check == "latency.qwen")
    assert qwen.summary.startswith("No Qwen calls in the last 5.0 s")
    assert any(f.check == "first_token.kimi" for f in report.findings)


def test_the_slo_thresholds_decide() -> None:
    observation = observe("slow_kimi_after.prom", before="slow_kimi_before.prom")
    assert diagnose(observation).exit_code == 0  # 0.5 s calls are far within 60 s
    tight = Thresholds(slo_seconds={"kimi": 0.2, "qwen": 15.0})
    assert diagnose(observation, tight).exit_code == 2


def test_agent_latency_is_judged_against_its_models_service() -> None:
    tight = Thresholds(slo_seconds={"kimi": 0.2, "qwen": 15.0})
    report = diagnose(observe("slow_kimi_after.prom", before="slow_kimi_before.prom"), tight)
    agent = next(f for f in report.findings if f.check == "agent_latency.direct.kimi-k2-thinking")
    assert agent.severity is Severity.WARNING
    assert agent.evidence["service"] == "kimi"
    assert agent.evidence["slo_seconds"] == 0.2


# Endpoints and readiness


def test_unreachable_metrics_is_critical_and_alone() -> None:
    report = diagnose(observe(None, readyz=None))
    assert report.exit_code == 2
    assert [f.check for f in report.findings] == ["metrics", "readiness"]
    top = report.top
    assert top is not None
    assert "connection refused" in top.summary
    assert top.runbook == "aiorchmetricsdown"


def test_missing_families_are_a_warning() -> None:
    text = "\n".join(
        line
        for line in (DATA / "healthy.prom").read_text().splitlines()
        if not line.startswith(("orchestrator_coalesced", "# HELP orchestrator_coalesced"))
        and "TYPE orchestrator_coalesced" not in line
    )
    report = diagnose(observe(None, text=text))
    finding = next(f for f in report.findings if f.check == "metrics")
    assert finding.severity is Severity.WARNING
    assert "orchestrator_coalesced" in finding.summary
    assert report.exit_code == 1


def test_not_aiorch_metrics_is_critical() -> None:
    report = diagnose(observe(None, text="# TYPE up gauge\nup 1\n"))
    top = report.top
    assert top is not None
    assert (top.check, top.severity) == ("metrics", Severity.CRITICAL)
    assert "not aiorch" in top.summary


def test_offline_mode_is_called_out() -> None:
    report = diagnose(observe("fresh.prom", readyz="readyz_offline.json"))
    top = report.top
    assert top is not None
    assert (top.check, top.severity, report.exit_code) == ("offline", Severity.WARNING, 1)
    assert "OFFLINE" in top.summary


def test_no_traffic_is_said_and_a_model_not_loaded_explains_a_cold_start() -> None:
    report = diagnose(observe("fresh.prom", readyz="readyz_model_not_loaded.json"))
    assert report.exit_code == 0
    traffic = next(f for f in report.findings if f.check == "traffic")
    assert "no queries since it started" in traffic.summary
    qwen = next(f for f in report.findings if f.check == "readiness.qwen")
    assert qwen.severity is Severity.INFO
    assert "cold start" in qwen.summary


def test_unreachable_readyz_is_critical() -> None:
    report = diagnose(observe("healthy.prom", readyz=None))
    assert report.exit_code == 2
    assert checks(report, Severity.CRITICAL) == ["readiness"]


def test_no_ready_backend_is_critical() -> None:
    body = json.loads((DATA / "readyz_ready.json").read_text())
    body["status"] = "unavailable"
    for backend in body["backends"]:
        backend.update(ready=False, detail="cannot reach it: connection refused")
    readiness = decode_readiness(json.dumps(body).encode())
    base = observe("healthy.prom")
    report = diagnose(
        Observation(base.window, base.view, expected_families=EXPECTED, readiness=readiness)
    )
    assert report.exit_code == 2
    assert checks(report, Severity.CRITICAL) == ["readiness"]
    assert checks(report, Severity.WARNING) == ["readiness.kimi", "readiness.qwen"]


# Findings built from a registry, for what the recordings do not show


def registry_text(build: str) -> str:
    metrics = Metrics(CollectorRegistry())
    for service in ("kimi", "qwen"):
        metrics.set_breaker_state(service, "closed")
    if build == "failing_users":
        for _ in range(10):
            metrics.ai_queries.labels("direct", "error", "kimi-k2-thinking").inc()
            metrics.record_call(
                "kimi", "kimi-k2-thinking", Mode.THINKING, 0.1, error_type="authentication"
            )
        for _ in range(10):
            metrics.ai_queries.labels("direct", "success", "qwen2.5-coder:7b").inc()
            metrics.orchestrator_queries.labels("code", "qwen").inc()
    elif build == "cache_errors":
        metrics.cache_hits.inc(30)
        metrics.cache_misses.inc(10)
        metrics.cache_errors.labels("get").inc(4)
    elif build == "saturated":
        metrics.in_flight.set(250)
        metrics.set_breaker_state("qwen", "half_open")
        for _ in range(20):
            metrics.overhead.observe(0.4)
        metrics.record_call("qwen", "qwen2.5-coder:7b", Mode.INSTANT, 1.0, usage=Usage())
    return generate_latest(metrics.registry).decode()


def test_queries_failing_for_users_is_critical() -> None:
    report = diagnose(observe(None, text=registry_text("failing_users")))
    top = report.top
    assert top is not None
    assert (top.check, top.severity) == ("user_errors", Severity.CRITICAL)
    assert top.summary.startswith("50 % of queries failed for the user (10 of 20")
    kimi = next(f for f in report.findings if f.check == "errors.kimi")
    assert "authentication will not recover by waiting" in kimi.summary


def test_cache_errors_are_a_warning_even_with_a_good_hit_rate() -> None:
    report = diagnose(observe(None, text=registry_text("cache_errors")))
    assert checks(report, Severity.WARNING) == ["cache.errors"]
    assert "get 4" in report.findings[0].summary


def test_saturation_and_overhead() -> None:
    report = diagnose(observe(None, text=registry_text("saturated")))
    assert checks(report, Severity.WARNING) == ["in_flight", "overhead"]
    assert "breaker.qwen" in checks(report, Severity.INFO)


# Output


def test_json_is_plain_json_with_the_exit_code() -> None:
    report = diagnose(observe("kimi_74s.prom"))
    data = json.loads(to_json(report))
    assert data["exit_code"] == 2
    assert data["status"] == "critical"
    assert data["findings"][0]["check"] == "latency.kimi"
    assert data["findings"][0]["runbook"].endswith("#kimihighresponsetime")
    assert data["source"]["since_start"] is True


def test_json_never_carries_nan_or_infinity() -> None:
    report = diagnose(observe("kimi_74s.prom"))
    finding = report.findings[0]
    patched = type(finding)(finding.check, finding.severity, "x", evidence={"v": math.nan})
    body = json.dumps(patched.to_json(), allow_nan=False)
    assert '"v": null' in body


def test_render_leads_with_the_verdict_and_the_top_problem() -> None:
    console = Console(record=True, width=120)
    render(diagnose(observe("kimi_74s.prom")), console)
    text = console.export_text()
    assert "CRITICAL" in text.splitlines()[1]
    assert text.index("Kimi p95 is 74 s") < text.index("Checks that passed")
    assert "kimihighresponsetime" in text
