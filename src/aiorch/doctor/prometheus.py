"""Reading aiorch through a Prometheus server's HTTP API, into the same `View` as two scrapes.

For every family a fresh `Metrics` registers, one instant query: `increase(<counter>[W])` and
`increase(<histogram>_bucket[W])` for what happened in the window, the gauges as they are. With
no queries in the window the same queries run without `increase`: totals since each instance
started. Quantiles are then computed here with PromQL's own interpolation (`series.Histogram`),
so the figures equal `histogram_quantile(q, sum by (le) (increase(...[W])))`.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from aiorch.doctor.exposition import expected_families, traffic
from aiorch.doctor.findings import count
from aiorch.doctor.observation import Observation, Targets, Window
from aiorch.doctor.series import Labels, View, labels_of
from aiorch.doctor.sources import SourceError, fetch, read_readiness

# Histograms whose `_sum` a check reads: the mean phase per request, the time spent per service.
SUMS_READ = frozenset({"aiorch_phase_duration_seconds", "ai_backend_call_duration_seconds"})
WINDOW = re.compile(r"^\d+(ms|s|m|h|d|w|y)$")


class PrometheusAPI:
    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query; each result's labels and value."""
        url = f"{self.base_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        response = fetch(url, timeout=self.timeout, headers={"Accept": "application/json"})
        try:
            body: Any = json.loads(response.body)
        except ValueError:
            raise SourceError(
                f"{self.base_url} is not a Prometheus API (HTTP {response.status}, not JSON)"
            ) from None
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else None
            raise SourceError(f"Prometheus refused `{expr}`: {error or f'HTTP {response.status}'}")
        data = body.get("data", {})
        if data.get("resultType") != "vector":
            raise SourceError(f"Prometheus answered `{expr}` with {data.get('resultType')}")
        out = []
        for item in data.get("result", []):
            try:
                out.append((dict(item["metric"]), float(item["value"][1])))
            except (KeyError, IndexError, TypeError, ValueError):
                raise SourceError(f"Prometheus answered `{expr}` in an unknown shape") from None
        return out


def _selector(job: str) -> str:
    escaped = job.replace("\\", "\\\\").replace('"', '\\"')
    return f'{{job="{escaped}"}}'


def _samples(api: PrometheusAPI, job: str, window: str | None) -> dict[str, dict[Labels, float]]:
    """Every aiorch sample the checks may read: increases over `window`, or totals if None."""
    selector = _selector(job)
    out: dict[str, dict[Labels, float]] = {}
    for family in expected_families():
        for sample in family.sample_names:
            if sample.endswith("_sum") and family.name not in SUMS_READ:
                continue  # only the phase check reads sums
            cumulative = family.type != "gauge"
            expr = f"{sample}{selector}"
            if cumulative and window is not None:
                expr = f"increase({expr}[{window}])"
            series: dict[Labels, float] = {}
            for labels, value in api.query(expr):
                labels.pop("__name__", None)
                series[labels_of(labels)] = value
            out[sample] = series
    return out


def _targets(api: PrometheusAPI, job: str) -> Targets:
    up: list[str] = []
    down: list[str] = []
    for labels, value in api.query(f"up{_selector(job)}"):
        (up if value >= 1 else down).append(labels.get("instance", "?"))
    return Targets(job, tuple(sorted(up)), tuple(sorted(down)))


def _present(api: PrometheusAPI, job: str) -> set[str]:
    return {
        labels.get("__name__", "")
        for labels, _ in api.query(f"group by (__name__) ({_selector(job)})")
    }


def observe(
    prometheus_url: str,
    *,
    aiorch_url: str | None,
    job: str = "aiorch",
    window: str = "5m",
    timeout: float = 10.0,
) -> Observation:
    if not WINDOW.match(window):
        raise ValueError(f"window {window!r} is not a Prometheus duration such as 5m or 1h")
    api = PrometheusAPI(prometheus_url, timeout=timeout)
    expected = expected_families()
    ready, ready_error = (
        read_readiness(aiorch_url.rstrip("/"), timeout) if aiorch_url else (None, "no --url given")
    )
    where = f"{api.base_url} (job {job!r}, last {window})"
    try:
        targets = _targets(api, job)
        if not targets.up and not targets.down:
            raise SourceError(
                f"Prometheus at {api.base_url} has no up{_selector(job)} series: it is not "
                "scraping aiorch (check the job name and its scrape config)"
            )
        present = _present(api, job)
        samples = _samples(api, job, window)
        view = View(samples)
        since_start = traffic(view) <= 0
        if since_start:
            view = View(_samples(api, job, None))
    except SourceError as error:
        return Observation(
            Window("prometheus", where, 0.0, False, "no figures: see below"),
            None,
            metrics_error=str(error),
            expected_families=len(expected),
            readiness=ready,
            readiness_error=ready_error,
        )
    # Prometheus only stores series that exist, so only families with a series from start-up
    # can be missed for certain.
    missing = tuple(
        f.name
        for f in expected
        if f.always_sampled and not any(name in present for name in f.sample_names)
    )
    queries = view.total("orchestrator_queries_total")
    note = (
        f"No queries in the last {window}: the figures are totals since each instance started "
        f"({count(queries)} queries)."
        if since_start
        else f"{count(queries)} queries in the last {window}, from Prometheus"
    )
    return Observation(
        Window("prometheus", where, _seconds(window), since_start, note, queries, window),
        view,
        missing_families=missing,
        expected_families=sum(1 for f in expected if f.always_sampled),
        readiness=ready,
        readiness_error=ready_error,
        targets=targets,
    )


UNITS: Mapping[str, float] = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
    "y": 31536000,
}


def _seconds(window: str) -> float:
    match = re.match(r"^(\d+)(ms|s|m|h|d|w|y)$", window)
    return float(match[1]) * UNITS[match[2]] if match else 0.0
