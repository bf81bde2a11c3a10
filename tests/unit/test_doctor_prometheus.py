"""Doctor through a Prometheus HTTP API: the queries it sends and what it makes of the answers.

A small stand-in answers `/api/v1/query` over real HTTP from recorded scrapes: `increase(X[w])`
with the window's deltas, `X` with the totals. The real Prometheus is exercised by
tests/integration/test_doctor.py.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from aiorch.doctor import Severity, Thresholds, diagnose, parse
from aiorch.doctor.exposition import between
from aiorch.doctor.prometheus import observe
from aiorch.doctor.series import Labels

DATA = Path(__file__).parent / "data" / "doctor"
SAMPLE = re.compile(r'^(?:increase\()?(\w+)\{job="aiorch"\}(?:\[(\w+)\]\))?$')


class FakePrometheus:
    def __init__(self) -> None:
        self.window: Mapping[str, Mapping[Labels, float]] = {}
        self.totals: Mapping[str, Mapping[Labels, float]] = {}
        self.up: dict[str, float] = {"127.0.0.1:8000": 1.0}
        self.queries: list[str] = []
        self.broken = False

    def load(self, before: str, after: str) -> None:
        first, second = parse((DATA / before).read_text()), parse((DATA / after).read_text())
        delta = between(first, second)
        self.window = {name: dict(delta.series(name)) for name in delta.names()}
        self.totals = second.samples

    def answer(self, expr: str) -> dict[str, Any]:
        self.queries.append(expr)
        if self.broken:
            return {"status": "error", "errorType": "bad_data", "error": "parse error"}
        if expr.startswith("up{"):
            result = [
                {"metric": {"instance": i, "job": "aiorch"}, "value": [0, str(v)]}
                for i, v in self.up.items()
            ]
        elif expr.startswith("group by (__name__)"):
            names = set(self.totals)
            result = [{"metric": {"__name__": n}, "value": [0, "1"]} for n in sorted(names)]
        else:
            match = SAMPLE.match(expr)
            assert match, f"unexpected query {expr!r}"
            source = self.window if match[2] else self.totals
            result = [
                {"metric": {**dict(labels), "instance": "127.0.0.1:8000"}, "value": [0, str(v)]}
                for labels, v in source.get(match[1], {}).items()
            ]
        return {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.fixture
def prometheus() -> Iterator[tuple[FakePrometheus, str]]:
    fake = FakePrometheus()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            if url.path != "/api/v1/query":
                body, status = b"<html>not here</html>", 404
            else:
                expr = urllib.parse.parse_qs(url.query)["query"][0]
                body, status = json.dumps(fake.answer(expr)).encode(), 200
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_window_queries_use_increase_and_the_job(prometheus: tuple[FakePrometheus, str]) -> None:
    fake, url = prometheus
    fake.load("slow_kimi_before.prom", "slow_kimi_after.prom")
    observation = observe(url, aiorch_url=None, window="2m")
    assert 'increase(kimi_response_duration_seconds_bucket{job="aiorch"}[2m])' in fake.queries
    assert 'orchestrator_circuit_breaker_state{job="aiorch"}' in fake.queries  # a gauge: as is
    assert observation.window.since_start is False
    assert observation.window.length == "2m"
    assert observation.missing_families == ()
    tight = Thresholds(slo_seconds={"kimi": 0.2, "qwen": 15.0})
    report = diagnose(observation, tight)
    top = report.top
    assert top is not None
    assert (top.check, top.evidence["calls"]) == ("latency.kimi", 6)
    assert "in the last 2m" in top.summary
    # No --url: readiness is unknown, a warning through Prometheus rather than a failure.
    readiness = next(f for f in report.findings if f.check == "readiness")
    assert readiness.severity is Severity.WARNING


def test_an_idle_window_falls_back_to_totals(prometheus: tuple[FakePrometheus, str]) -> None:
    fake, url = prometheus
    fake.load("healthy.prom", "healthy.prom")
    observation = observe(url, aiorch_url=None)
    assert observation.window.since_start is True
    assert "No queries in the last 5m" in observation.window.note
    assert 'orchestrator_queries_total{job="aiorch"}' in fake.queries
    assert observation.view is not None
    assert observation.view.total("orchestrator_cache_hits_total") == 30


def test_an_instance_down_is_critical(prometheus: tuple[FakePrometheus, str]) -> None:
    fake, url = prometheus
    fake.load("healthy.prom", "healthy.prom")
    fake.up["127.0.0.1:8001"] = 0.0
    report = diagnose(observe(url, aiorch_url=None))
    assert report.exit_code == 2
    top = report.top
    assert top is not None
    assert top.check == "metrics.targets"
    assert "127.0.0.1:8001" in top.summary


def test_no_aiorch_job_is_critical(prometheus: tuple[FakePrometheus, str]) -> None:
    fake, url = prometheus
    fake.up.clear()
    report = diagnose(observe(url, aiorch_url=None, job="aiorch"))
    top = report.top
    assert top is not None
    assert (top.check, report.exit_code) == ("metrics", 2)
    assert "not scraping aiorch" in top.summary


def test_a_refused_query_is_reported(prometheus: tuple[FakePrometheus, str]) -> None:
    fake, url = prometheus
    fake.broken = True
    report = diagnose(observe(url, aiorch_url=None))
    top = report.top
    assert top is not None
    assert report.exit_code == 2
    assert "Prometheus refused" in top.summary


def test_not_a_prometheus(prometheus: tuple[FakePrometheus, str]) -> None:
    _, url = prometheus
    report = diagnose(observe(f"{url}/elsewhere", aiorch_url=None))
    top = report.top
    assert top is not None
    assert "is not a Prometheus API" in top.summary


def test_a_bad_window_is_refused_before_any_query() -> None:
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        observe("http://127.0.0.1:9", aiorch_url=None, window="five minutes")
