"""Write monitoring/grafana/dashboards/ai_services.json, the "AI Services" Grafana dashboard.

The JSON is generated so that two dozen panels stay consistent (datasource, rate windows,
units, ids) and reviewable here instead of in 1,700 lines of JSON. Edit this file, then run

    python scripts/monitoring/build_dashboard.py           # rewrite the JSON
    python scripts/monitoring/build_dashboard.py --check   # exit 1 if the JSON is stale (tests)

Panel ids and the dashboard uid are fixed by hand: links and annotations to a panel survive
regeneration. Every rate window is `$__rate_interval` unless the panel's description says
"Explicit window" and why (tests/monitoring/test_dashboard.py holds both rules).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[2] / "monitoring/grafana/dashboards/ai_services.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
RI = "$__rate_interval"

Panel = dict[str, Any]


def target(expr: str, legend: str, ref: str, **extra: Any) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, **extra}


def quantiles(
    metric: str, by: str, qs: tuple[float, ...] = (0.5, 0.95, 0.99), legend: str = ""
) -> list[dict[str, Any]]:
    """histogram_quantile targets for one histogram, one per quantile."""
    grouping = f"le, {by}" if by else "le"
    out = []
    for i, q in enumerate(qs):
        name = f"p{round(q * 100)}"
        expr = f"histogram_quantile({q}, sum by ({grouping}) (rate({metric}_bucket[{RI}])))"
        out.append(target(expr, f"{name} {legend}".strip(), chr(ord("A") + i)))
    return out


def thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def timeseries(
    pid: int,
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    pos: tuple[int, int, int, int],
    unit: str = "short",
    threshold: float | None = None,
    **options: Any,
) -> Panel:
    x, y, w, h = pos
    defaults: dict[str, Any] = {
        "unit": unit,
        "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"},
    }
    if threshold is not None:
        # A dashed red line at the SLO ceiling or target.
        defaults["thresholds"] = thresholds(("green", None), ("red", threshold))
        defaults["custom"]["thresholdsStyle"] = {"mode": "dashed"}
    defaults.update(options.pop("defaults", {}))
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "calcs": ["lastNotNull", "max"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": targets,
        **options,
    }


def stat(
    pid: int,
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    pos: tuple[int, int, int, int],
    unit: str,
    steps: dict[str, Any],
    mappings: list[dict[str, Any]] | None = None,
) -> Panel:
    x, y, w, h = pos
    return {
        "id": pid,
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": steps, "mappings": mappings or []},
            "overrides": [],
        },
        "options": {
            "colorMode": "background",
            "graphMode": "none",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "value_and_name",
        },
        "targets": targets,
    }


def row(pid: int, title: str, y: int) -> Panel:
    return {
        "id": pid,
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
        "panels": [],
    }


# The guide's cache hit-rate query, character for character (section 5 of the guide).
GUIDE_CACHE_HIT_RATE = (
    "rate(orchestrator_cache_hits_total[5m])\n"
    "/\n"
    "(rate(orchestrator_cache_hits_total[5m]) + rate(orchestrator_cache_misses_total[5m]))\n"
    "* 100"
)

BREAKER_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "closed", "color": "green", "index": 0},
            "1": {"text": "half-open", "color": "yellow", "index": 1},
            "2": {"text": "open", "color": "red", "index": 2},
        },
    }
]


def guide_panels(y: int) -> list[Panel]:
    return [
        row(100, "Guide panels: is the AI slow?", y),
        timeseries(
            1,
            "Kimi Response Duration",
            "Kimi-K2-Thinking call latency (kimi_response_duration_seconds) by mode. The dashed "
            "line is the SLO ceiling: p95 <= 60 s.",
            quantiles("kimi_response_duration_seconds", "mode", legend="{{mode}}"),
            (0, y + 1, 12, 9),
            unit="s",
            threshold=60,
        ),
        timeseries(
            2,
            "AIHighResponseTime",
            "p95 of ai_response_duration_seconds per agent and model: the expression of the "
            "AIHighResponseTime alert, which fires when a line stays above 60 s for 10 minutes.",
            quantiles(
                "ai_response_duration_seconds",
                "agent_type, model",
                (0.95,),
                legend="{{agent_type}} / {{model}}",
            ),
            (12, y + 1, 12, 9),
            unit="s",
            threshold=60,
        ),
        timeseries(
            3,
            "Orchestrator Fallbacks",
            "Moves from a failing service to the next one, per second, by from_service, "
            "to_service and reason (an error_type such as timeout or circuit_open).",
            [
                target(
                    f"sum by (from_service, to_service, reason) "
                    f"(rate(orchestrator_fallback_total[{RI}]))",
                    "{{from_service}} -> {{to_service}} ({{reason}})",
                    "A",
                )
            ],
            (0, y + 10, 12, 8),
            unit="ops",
        ),
        timeseries(
            4,
            "Cache Hit Rate",
            "The guide's cache hit-rate query, verbatim, per instance, in percent; target >= 60-70 "
            "% for repeated queries. Explicit window: 5m, the guide's own, so that the number "
            "matches the runbook and `aiorch doctor`.",
            [target(GUIDE_CACHE_HIT_RATE, "{{instance}}", "A")],
            (12, y + 10, 12, 8),
            unit="percent",
            threshold=60,
            defaults={
                "min": 0,
                "max": 100,
                "thresholds": thresholds(("red", None), ("green", 60)),
            },
        ),
    ]


def traffic_panels(y: int) -> list[Panel]:
    return [
        row(101, "Traffic", y),
        timeseries(
            5,
            "Queries by Type and Service",
            "orchestrator_queries_total per second by query_type and selected_service "
            "(multi = both services answered an unclassified query).",
            [
                target(
                    "sum by (query_type, selected_service) "
                    f"(rate(orchestrator_queries_total[{RI}]))",
                    "{{query_type}} -> {{selected_service}}",
                    "A",
                )
            ],
            (0, y + 1, 12, 8),
            unit="reqps",
        ),
        timeseries(
            6,
            "AI Queries by Agent and Status",
            "ai_queries_total per second by agent_type, status and answering model.",
            [
                target(
                    f"sum by (agent_type, status, model) (rate(ai_queries_total[{RI}]))",
                    "{{agent_type}} {{status}} ({{model}})",
                    "A",
                )
            ],
            (12, y + 1, 12, 8),
            unit="reqps",
        ),
        timeseries(
            7,
            "In-flight Requests",
            "orchestrator_in_flight_requests: queries being answered right now, per instance.",
            [target("sum by (instance) (orchestrator_in_flight_requests)", "{{instance}}", "A")],
            (0, y + 9, 12, 8),
            unit="short",
        ),
        timeseries(
            8,
            "HTTP Requests by Route and Status",
            "aiorch_http_requests_total per second by route template and status code.",
            [
                target(
                    f"sum by (route, status) (rate(aiorch_http_requests_total[{RI}]))",
                    "{{route}} {{status}}",
                    "A",
                )
            ],
            (12, y + 9, 12, 8),
            unit="reqps",
        ),
    ]


def latency_panels(y: int) -> list[Panel]:
    return [
        row(102, "Latency", y),
        timeseries(
            9,
            "Qwen Response Duration",
            "Qwen Coder call latency (qwen_response_duration_seconds) by mode. The dashed line is "
            "the SLO ceiling: p95 <= 15 s.",
            quantiles("qwen_response_duration_seconds", "mode", legend="{{mode}}"),
            (0, y + 1, 12, 8),
            unit="s",
            threshold=15,
        ),
        timeseries(
            10,
            "AI Response Duration by Agent",
            "p50, p95 and p99 of ai_response_duration_seconds per agent_type (direct, ba, dev, "
            "qa), all models together.",
            quantiles("ai_response_duration_seconds", "agent_type", legend="{{agent_type}}"),
            (12, y + 1, 12, 8),
            unit="s",
        ),
        timeseries(
            11,
            "Time to First Token",
            "p50 and p95 of ai_time_to_first_token_seconds per service: how long a streaming "
            "client waits before the first token. Thinking models spend it reasoning.",
            quantiles(
                "ai_time_to_first_token_seconds", "service", (0.5, 0.95), legend="{{service}}"
            ),
            (0, y + 9, 8, 8),
            unit="s",
        ),
        timeseries(
            12,
            "Orchestrator Overhead",
            "p50 and p99 of orchestrator_overhead_seconds: the orchestrator's own time per query "
            "(total minus time waiting on backends). Should stay well under a millisecond.",
            quantiles("orchestrator_overhead_seconds", "", (0.5, 0.99)),
            (8, y + 9, 8, 8),
            unit="s",
        ),
        timeseries(
            13,
            "Orchestrator Request Duration",
            "p95 of orchestrator_request_duration_seconds, end to end, split by cached: cache "
            "hits should be orders of magnitude faster.",
            quantiles(
                "orchestrator_request_duration_seconds",
                "cached",
                (0.95,),
                legend="cached={{cached}}",
            ),
            (16, y + 9, 8, 8),
            unit="s",
        ),
    ]


# Mean seconds each phase adds to one request: phase sums over the number of requests (the
# `total` phase's count), so that stacked they add up to the mean total (aiorch_phases.yml).
PHASE_MEANS = (
    f'sum by (phase) (rate(aiorch_phase_duration_seconds_sum{{phase!="total"}}[{RI}]))\n'
    "  / on () group_left ()\n"
    f'(sum(rate(aiorch_phase_duration_seconds_count{{phase="total"}}[{RI}])) > 0)'
)


def phase_panels(y: int) -> list[Panel]:
    stacked = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 60,
        "showPoints": "never",
        "stacking": {"mode": "normal", "group": "A"},
    }
    return [
        row(106, "Where the time goes", y),
        timeseries(
            24,
            "Request Phases",
            "Mean seconds each phase adds to one request, stacked to the mean total (the "
            "Server-Timing header's phases): queue (waiting before the handler), parse, "
            "classify, cache and gateway are aiorch's own; connect, first_byte and stream are "
            "the upstream's. The AiorchGatewaySlow alert watches aiorch's share.",
            [target(PHASE_MEANS, "{{phase}}", "A")],
            (0, y + 1, 12, 9),
            unit="s",
            defaults={"custom": stacked},
        ),
        timeseries(
            25,
            "Phase p95",
            "p95 of aiorch_phase_duration_seconds per phase, over the requests that went "
            "through it: a phase only some requests have (connect, classify) shows its own "
            "tail here, its cost per request on the left.",
            quantiles("aiorch_phase_duration_seconds", "phase", (0.95,), legend="{{phase}}"),
            (12, y + 1, 12, 9),
            unit="s",
        ),
        timeseries(
            26,
            "Backend Call Duration",
            "p50 and p95 of ai_backend_call_duration_seconds per configured service (kimi, qwen "
            "and any other): upstream call latency, request to last byte, retries included.",
            quantiles(
                "ai_backend_call_duration_seconds", "service", (0.5, 0.95), legend="{{service}}"
            ),
            (0, y + 10, 24, 8),
            unit="s",
        ),
    ]


def cost_panels(y: int) -> list[Panel]:
    return [
        row(103, "Tokens and cost", y),
        timeseries(
            14,
            "Kimi Tokens",
            "kimi_tokens_used_total per second by mode and token_type (reasoning tokens are a "
            "part of completion tokens, counted again on their own).",
            [
                target(
                    f"sum by (mode, token_type) (rate(kimi_tokens_used_total[{RI}]))",
                    "{{mode}} {{token_type}}",
                    "A",
                )
            ],
            (0, y + 1, 8, 8),
            unit="short",
        ),
        timeseries(
            15,
            "Qwen Tokens",
            "qwen_tokens_used_total per second by mode and token_type.",
            [
                target(
                    f"sum by (mode, token_type) (rate(qwen_tokens_used_total[{RI}]))",
                    "{{mode}} {{token_type}}",
                    "A",
                )
            ],
            (8, y + 1, 8, 8),
            unit="short",
        ),
        timeseries(
            16,
            "Cost per Hour",
            "ai_cost_usd_total as US dollars per hour, by service and model (tokens times the "
            "configured prices).",
            [
                target(
                    f"sum by (service, model) (rate(ai_cost_usd_total[{RI}])) * 3600",
                    "{{service}} / {{model}}",
                    "A",
                )
            ],
            (16, y + 1, 8, 4),
            unit="currencyUSD",
        ),
        stat(
            17,
            "Spend, Last 24 Hours",
            "US dollars spent per service over the last day. Explicit window: 24h, a budget "
            "period, independent of the time range picked above.",
            [target("sum by (service) (increase(ai_cost_usd_total[24h]))", "{{service}}", "A")],
            (16, y + 5, 8, 4),
            unit="currencyUSD",
            steps=thresholds(("blue", None)),
        ),
    ]


def reliability_panels(y: int) -> list[Panel]:
    return [
        row(104, "Errors and resilience", y),
        timeseries(
            18,
            "Errors by Type",
            "ai_errors_total per second by service and error_type: failed backend calls, "
            "including the ones a retry or fallback rescued.",
            [
                target(
                    f"sum by (service, error_type) (rate(ai_errors_total[{RI}]))",
                    "{{service}} {{error_type}}",
                    "A",
                )
            ],
            (0, y + 1, 12, 8),
            unit="ops",
        ),
        {
            "id": 19,
            "type": "state-timeline",
            "title": "Circuit Breaker State",
            "description": "orchestrator_circuit_breaker_state per service, worst instance: "
            "closed (0), half-open (1, probing) or open (2, calls skipped).",
            "datasource": DS,
            "gridPos": {"x": 12, "y": y + 1, "w": 12, "h": 8},
            "fieldConfig": {
                "defaults": {
                    "mappings": BREAKER_MAPPINGS,
                    "thresholds": thresholds(("green", None), ("yellow", 1), ("red", 2)),
                    "custom": {"fillOpacity": 80, "lineWidth": 0},
                },
                "overrides": [],
            },
            "options": {
                "showValue": "auto",
                "mergeValues": True,
                "rowHeight": 0.8,
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                "tooltip": {"mode": "single", "sort": "none"},
            },
            "targets": [
                target("max by (service) (orchestrator_circuit_breaker_state)", "{{service}}", "A")
            ],
        },
        timeseries(
            20,
            "Retries and Coalesced Requests",
            "orchestrator_retries_total by service and reason, and orchestrator_coalesced_total: "
            "identical queries that shared one upstream call.",
            [
                target(
                    f"sum by (service, reason) (rate(orchestrator_retries_total[{RI}]))",
                    "retry {{service}} ({{reason}})",
                    "A",
                ),
                target(f"sum(rate(orchestrator_coalesced_total[{RI}]))", "coalesced", "B"),
            ],
            (0, y + 9, 12, 8),
            unit="ops",
        ),
        stat(
            21,
            "Metrics Targets Up",
            'up{job="aiorch"} per instance: 1 when Prometheus scraped /metrics last time. The '
            "AiorchMetricsDown alert pages after 3 minutes at 0.",
            [target('up{job="aiorch"}', "{{instance}}", "A")],
            (12, y + 9, 12, 8),
            unit="none",
            steps=thresholds(("red", None), ("green", 1)),
            mappings=[
                {
                    "type": "value",
                    "options": {
                        "0": {"text": "down", "index": 0},
                        "1": {"text": "up", "index": 1},
                    },
                }
            ],
        ),
    ]


def slo_panels(y: int) -> list[Panel]:
    budget_targets = [
        target("slo:kimi_latency:error_budget_remaining", "Kimi (95 % within 60 s)", "A"),
        target("slo:qwen_latency:error_budget_remaining", "Qwen (95 % within 15 s)", "B"),
    ]
    burn_targets = [
        target(f"slo:{svc}_latency:error_ratio_rate{w} / 0.05", f"{svc} {w}", ref)
        for ref, (svc, w) in zip(
            "ABCDEF",
            [(s, w) for s in ("kimi", "qwen") for w in ("1h", "6h", "3d")],
            strict=True,
        )
    ]
    return [
        row(105, "SLOs", y),
        stat(
            22,
            "SLO Error Budget Left",
            "Share of the 30-day latency error budget (5 % of calls over the threshold) still "
            "unspent, from the slo:*_latency:error_budget_remaining recording rules. Below 0: "
            "overspent.",
            budget_targets,
            (0, y + 1, 8, 8),
            unit="percentunit",
            steps=thresholds(("red", None), ("orange", 0), ("yellow", 0.25), ("green", 0.5)),
        ),
        timeseries(
            23,
            "SLO Burn Rate",
            "Error ratio / 0.05 over 1h, 6h and 3d, from the slo:*_latency:error_ratio_rate* "
            "recording rules. 1 spends the budget in exactly 30 days; the alerts page at 14.4 "
            "(1h) and 6 (6h), and open a ticket at 1 (3d).",
            burn_targets,
            (8, y + 1, 16, 8),
            unit="short",
            defaults={
                "thresholds": thresholds(
                    ("green", None), ("yellow", 1), ("orange", 6), ("red", 14.4)
                ),
                "custom": {
                    "drawStyle": "line",
                    "lineWidth": 1,
                    "fillOpacity": 0,
                    "showPoints": "never",
                    "thresholdsStyle": {"mode": "dashed"},
                },
            },
        ),
    ]


def dashboard() -> dict[str, Any]:
    panels: list[Panel] = []
    y = 0
    for section in (
        guide_panels,
        traffic_panels,
        latency_panels,
        phase_panels,
        cost_panels,
        reliability_panels,
        slo_panels,
    ):
        part = section(y)
        panels += part
        y = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in part)
    return {
        "uid": "aiorch-ai-services",
        "title": "AI Services",
        "description": "aiorch: orchestrator, Kimi-K2-Thinking and Qwen Coder. Runbook: "
        "monitoring/AI_SERVICES_MONITORING.md",
        "tags": ["aiorch", "ai", "llm"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                    "options": [],
                    "includeAll": False,
                    "multi": False,
                }
            ]
        },
        "links": [],
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the JSON is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date: run python {Path(__file__).as_posix()}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
