"""The Grafana dashboard (monitoring/grafana/dashboards/ai_services.json) and its provisioning."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests.monitoring.exprs import (
    DASHBOARD,
    MONITORING,
    REPO,
    load_dashboard,
    metric_names,
    panels,
    range_windows,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# The guide's panel titles (section 6), then the panels the on-call needs.
REQUIRED_TITLES = [
    "Kimi Response Duration",
    "AIHighResponseTime",
    "Orchestrator Fallbacks",
    "Cache Hit Rate",
    "Queries by Type and Service",
    "Qwen Response Duration",
    "AI Response Duration by Agent",
    "Time to First Token",
    "Kimi Tokens",
    "Qwen Tokens",
    "Cost per Hour",
    "Errors by Type",
    "In-flight Requests",
    "Circuit Breaker State",
    "Orchestrator Overhead",
    "HTTP Requests by Route and Status",
    "SLO Error Budget Left",
    "Request Phases",
    "Phase p95",
    "Backend Call Duration",
]

# Metric -> the panel that must show it.
REQUIRED_METRICS = {
    "kimi_response_duration_seconds_bucket": "Kimi Response Duration",
    "qwen_response_duration_seconds_bucket": "Qwen Response Duration",
    "ai_response_duration_seconds_bucket": "AIHighResponseTime",
    "orchestrator_fallback_total": "Orchestrator Fallbacks",
    "orchestrator_queries_total": "Queries by Type and Service",
    "ai_time_to_first_token_seconds_bucket": "Time to First Token",
    "kimi_tokens_used_total": "Kimi Tokens",
    "qwen_tokens_used_total": "Qwen Tokens",
    "ai_cost_usd_total": "Cost per Hour",
    "ai_errors_total": "Errors by Type",
    "orchestrator_in_flight_requests": "In-flight Requests",
    "orchestrator_circuit_breaker_state": "Circuit Breaker State",
    "orchestrator_overhead_seconds_bucket": "Orchestrator Overhead",
    "aiorch_http_requests_total": "HTTP Requests by Route and Status",
    "slo:kimi_latency:error_budget_remaining": "SLO Error Budget Left",
    "slo:qwen_latency:error_budget_remaining": "SLO Error Budget Left",
    "aiorch_phase_duration_seconds_sum": "Request Phases",
    "aiorch_phase_duration_seconds_bucket": "Phase p95",
    "ai_backend_call_duration_seconds_bucket": "Backend Call Duration",
}

GUIDE_CACHE_HIT_RATE = (
    "rate(orchestrator_cache_hits_total[5m])\n"
    "/\n"
    "(rate(orchestrator_cache_hits_total[5m]) + rate(orchestrator_cache_misses_total[5m]))\n"
    "* 100"
)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


def graph_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in panels(dashboard) if p["type"] != "row"]


def by_title(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["title"]: p for p in graph_panels(dashboard)}


def test_dashboard_is_current_schema_with_a_stable_uid(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "aiorch-ai-services"
    assert dashboard["schemaVersion"] >= 39
    assert "id" not in dashboard  # provisioning assigns it; a fixed id clashes across instances


def test_datasource_is_a_template_variable(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_required_panels_are_present(dashboard: dict[str, Any]) -> None:
    titles = by_title(dashboard)
    assert [t for t in REQUIRED_TITLES if t not in titles] == []


def test_panel_ids_are_unique_and_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    all_panels = list(panels(dashboard))
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for panel in all_panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_every_panel_and_target_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    for panel in graph_panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_rate_windows_are_rate_interval_or_documented(dashboard: dict[str, Any]) -> None:
    for panel in graph_panels(dashboard):
        for target in panel["targets"]:
            expr = target["expr"]
            if re.search(r"\b(?:rate|increase|irate)\s*\(", expr):
                assert range_windows(expr), f"{panel['title']}: rate() without a window"
            for window in range_windows(expr):
                if window == "$__rate_interval":
                    continue
                assert f"Explicit window: {window}" in panel["description"], (
                    f"{panel['title']} uses [{window}]: use $__rate_interval or say why in the "
                    f"description ('Explicit window: {window}, ...')"
                )


def test_required_metrics_are_on_their_panels(dashboard: dict[str, Any]) -> None:
    titles = by_title(dashboard)
    for metric, title in REQUIRED_METRICS.items():
        names = set().union(*(metric_names(t["expr"]) for t in titles[title]["targets"]))
        assert metric in names, f"{title} does not show {metric}"


def test_cache_hit_rate_panel_is_the_guides_query(dashboard: dict[str, Any]) -> None:
    panel = by_title(dashboard)["Cache Hit Rate"]
    assert [t["expr"] for t in panel["targets"]] == [GUIDE_CACHE_HIT_RATE]


def test_slo_thresholds_are_drawn_on_the_latency_panels(dashboard: dict[str, Any]) -> None:
    titles = by_title(dashboard)
    for title, ceiling in [
        ("Kimi Response Duration", 60),
        ("AIHighResponseTime", 60),
        ("Qwen Response Duration", 15),
    ]:
        defaults = titles[title]["fieldConfig"]["defaults"]
        assert defaults["unit"] == "s"
        assert ceiling in [s["value"] for s in defaults["thresholds"]["steps"]], title


def test_dashboard_json_is_what_the_generator_writes() -> None:
    script = REPO / "scripts/monitoring/build_dashboard.py"
    result = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_grafana_provisioning_loads_the_dashboard_and_the_datasource() -> None:
    provisioning = MONITORING / "grafana/provisioning"
    datasources = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())
    [source] = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["isDefault"] is True
    providers = yaml.safe_load((provisioning / "dashboards/aiorch.yml").read_text())
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]
    assert DASHBOARD.parent.name == "dashboards"
