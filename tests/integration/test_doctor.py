"""`aiorch doctor` against the real service in front of the mock upstream, scenario by scenario.

Each scenario gets a new `aiorch serve` (its metrics start at zero), sends traffic whose shape it
knows, then runs `python -m aiorch doctor --json` as a user would and checks the top finding and
the exit code. Upstream behaviour comes from `[[mock: ...]]` directives in the prompts, so the
one mock serves every scenario unchanged. Latency SLOs are lowered with --kimi-slo so that a
half-second call can stand for a minutes-long one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aiorch.config import ENV_KEYS
from aiorch.doctor import Severity, diagnose, sources
from aiorch.doctor.observation import Thresholds
from tests.support.procs import AIORCH, REPO, Server, free_port, run_server

# Nothing from the developer's shell may configure the service or the doctor.
BLANK = {
    **dict.fromkeys(ENV_KEYS, ""),
    "AIORCH_API_KEYS": "",
    "AIORCH_CONFIG": "",
    "AIORCH_WORKERS": "",
    "AIORCH_DOCTOR_URL": "",
    "AIORCH_DOCTOR_METRICS_TOKEN": "",
}
SLOW_KIMI = "[[mock: latency_ms=500]]"
FAILING_KIMI = "[[mock: fault=http_503 fault_models=kimi]]"


def http_json(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    with run_server(
        [*AIORCH, "mock-upstream", "--port", str(port), "--seed", "1"],
        port=port,
        ready_path="/healthz",
        tmp_path=tmp_path_factory.mktemp("doctor-mock"),
        name="mock-upstream",
    ) as server:
        yield server


@dataclass
class Aiorch:
    server: Server

    @property
    def url(self) -> str:
        return self.server.url

    def ask(self, query: str, query_type: str, *, use_cache: bool = True) -> dict[str, Any]:
        body = {"query": query, "query_type": query_type, "use_cache": use_cache}
        answer: dict[str, Any] = http_json(f"{self.url}/api/ai/query", body)
        return answer

    def ask_all(self, queries: Sequence[tuple[str, str]], *, use_cache: bool = True) -> None:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda q: self.ask(q[0], q[1], use_cache=use_cache), queries))


@pytest.fixture
def aiorch(tmp_path: Path, mock: Server) -> Iterator[Aiorch]:
    port = free_port()
    env = {
        **BLANK,
        "KIMI_BASE_URL": f"{mock.url}/v1",
        "KIMI_API_KEY": "x",
        "QWEN_OLLAMA_URL": mock.url,
    }
    with run_server(
        [*AIORCH, "serve", "--port", str(port)],
        port=port,
        ready_path="/healthz",
        tmp_path=tmp_path,
        env=env,
        name="aiorch",
    ) as server:
        yield Aiorch(server)


def tag() -> str:
    return uuid.uuid4().hex[:8]


@dataclass
class Run:
    code: int
    report: dict[str, Any]
    stderr: str

    @property
    def top(self) -> dict[str, Any]:
        finding: dict[str, Any] = self.report["findings"][0]
        return finding

    def severities(self, severity: str) -> list[str]:
        return [f["check"] for f in self.report["findings"] if f["severity"] == severity]


def doctor(url: str, *args: str, as_json: bool = True) -> subprocess.CompletedProcess[str]:
    argv = [*AIORCH, "doctor", "--url", url, "--interval", "0.5", *args]
    return subprocess.run(
        argv + (["--json"] if as_json else []),
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **BLANK},
        timeout=60,
    )


def run_doctor(url: str, *args: str) -> Run:
    done = doctor(url, *args)
    assert done.stdout.strip(), done.stderr
    return Run(done.returncode, json.loads(done.stdout), done.stderr)


# The scenarios


def test_slow_kimi(aiorch: Aiorch) -> None:
    t = tag()
    aiorch.ask_all([(f"why {i} {t} {SLOW_KIMI}", "reasoning") for i in range(4)], use_cache=False)
    aiorch.ask_all([(f"code {i} {t}", "code") for i in range(4)], use_cache=False)
    run = run_doctor(aiorch.url, "--kimi-slo", "0.2")
    assert run.code == 2, run.report
    assert run.top["check"] == "latency.kimi"
    assert run.top["severity"] == "critical"
    assert "above its 200 ms SLO" in run.top["summary"]
    assert run.top["evidence"]["calls"] == 4
    assert run.top["evidence"]["p50_seconds"] >= 0.5  # every Kimi call waited 500 ms
    # Qwen answered fast: its own latency passes.
    qwen = next(f for f in run.report["findings"] if f["check"] == "latency.qwen")
    assert qwen["severity"] == "ok"


def test_kimi_failing_with_fallbacks_to_qwen(aiorch: Aiorch) -> None:
    t = tag()
    answers = [aiorch.ask(f"why {i} {t} {FAILING_KIMI}", "reasoning") for i in range(8)]
    assert all(a["selected_service"] == "qwen" for a in answers)  # the fallback answered
    run = run_doctor(aiorch.url)
    assert run.code == 1, run.report
    assert run.top["check"] == "fallback"
    assert run.top["severity"] == "warning"
    assert "of queries (8 of 8) fell back from Kimi to Qwen" in run.top["summary"]
    assert {(p["from"], p["to"]) for p in run.top["evidence"]["top"]} == {("kimi", "qwen")}
    assert "errors.kimi" in run.severities("warning")
    assert not run.severities("critical")


def test_cold_cache(aiorch: Aiorch) -> None:
    t = tag()
    aiorch.ask_all([(f"one-off question {i} {t}", "code") for i in range(25)])
    run = run_doctor(aiorch.url)
    assert run.code == 1, run.report
    assert run.top["check"] == "cache"
    assert run.top["summary"].startswith("Cache hit rate is 0 % (0 hits of 25 lookups")
    assert run.report["source"]["since_start"] is True  # the traffic came before the window
    assert "totals since aiorch started" in run.report["source"]["note"]


def test_healthy(aiorch: Aiorch) -> None:
    t = tag()
    distinct = [(f"sort a list {i} {t}", "code") for i in range(3)]
    distinct += [(f"why is {i} prime {t}", "reasoning") for i in range(2)]
    for query in distinct:  # each once (a miss), then three more times (hits): 75 %
        aiorch.ask(*query)
    aiorch.ask_all(distinct * 3)
    run = run_doctor(aiorch.url)
    assert run.code == 0, run.report
    assert run.top["check"] == "healthy"
    assert "cache hit rate 75 %" in run.top["summary"]
    assert not run.severities("critical")
    assert not run.severities("warning")


def test_window_sees_only_traffic_between_its_scrapes(aiorch: Aiorch) -> None:
    t = tag()
    aiorch.ask_all([(f"fast code {i} {t}", "code") for i in range(6)], use_cache=False)

    def traffic_in_window(seconds: float) -> None:
        aiorch.ask_all([(f"slow {i} {t} {SLOW_KIMI}", "reasoning") for i in range(3)])

    observation = sources.observe(aiorch.url, interval=0.1, wait=traffic_in_window)
    assert observation.window.since_start is False
    assert observation.window.queries == 3
    report = diagnose(observation, Thresholds(slo_seconds={"kimi": 0.2, "qwen": 15.0}))
    top = report.top
    assert top is not None
    assert (top.check, top.severity, report.exit_code) == ("latency.kimi", Severity.CRITICAL, 2)
    assert top.evidence["calls"] == 3
    qwen = next(f for f in report.findings if f.check == "latency.qwen")
    assert "No Qwen calls in the last" in qwen.summary  # the six before the window are not in it


# Which phase grew


def test_a_slow_first_byte_is_named_with_its_service(aiorch: Aiorch) -> None:
    t = tag()
    aiorch.ask_all([(f"why fast {i} {t}", "reasoning") for i in range(4)], use_cache=False)

    def slow_first_bytes(seconds: float) -> None:  # the mock waits before its headers
        aiorch.ask_all([(f"why {i} {t} {SLOW_KIMI}", "reasoning") for i in range(4)])

    observation = sources.observe(aiorch.url, interval=0.1, wait=slow_first_bytes)
    assert observation.baseline is not None  # the four fast queries before the window
    report = diagnose(observation)
    [phases] = [f for f in report.findings if f.check == "phases"]
    print("\n" + phases.summary)
    assert (phases.evidence["phase"], phases.evidence["service"]) == ("first_byte", "kimi")
    assert "Kimi's first token is slow (first_byte)" in phases.summary
    per_request = phases.evidence["seconds_per_request"]
    assert isinstance(per_request, dict)
    first_byte = per_request["first_byte"]
    assert isinstance(first_byte, float)
    assert first_byte >= 0.5


# A busy event loop: 24 requests at once, each with 12,000 messages (under the 100,000-character
# limit), on the single worker, which decodes, keys and translates each while the others wait.
# Their wait shows before the handler (`queue`: received by the server -> the handler started),
# and in whatever else awaits the loop (`parse` reading the bodies, `gateway`). The mock decodes
# the same bodies on the same two cores, so how far the gateway's share exceeds the default
# threshold (50 ms, AiorchGatewaySlow's) depends on the machine: 16 requests gave 44 to 54 ms,
# and failed one full run in three. The doctor is asked with a 20 ms threshold, ten times the
# 2 ms the same requests cost before the window, so the verdict is about the finding, not the
# machine's speed.
MANY_MESSAGES = [{"role": "user", "content": f"m{i % 100:02d}"} for i in range(12_000)]
HEAVY = 24
BUSY = Thresholds(gateway_seconds=0.020)


def test_a_busy_event_loop_is_named_as_the_gateways_own_queue(aiorch: Aiorch) -> None:
    t = tag()
    aiorch.ask_all([(f"code {i} {t}", "code") for i in range(4)], use_cache=False)
    bodies = [
        json.dumps(
            {"model": "qwen", "messages": [*MANY_MESSAGES, {"role": "user", "content": f"{t} {i}"}]}
        ).encode()
        for i in range(HEAVY)
    ]

    def post(body: bytes) -> int:
        request = urllib.request.Request(
            f"{aiorch.url}/v1/chat/completions",
            data=body,
            headers={"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            with error:
                return error.code

    def busy_loop(seconds: float) -> None:
        with ThreadPoolExecutor(len(bodies)) as pool:
            assert list(pool.map(post, bodies)) == [200] * HEAVY

    report = diagnose(sources.observe(aiorch.url, interval=0.1, wait=busy_loop), BUSY)
    [phases] = [f for f in report.findings if f.check == "phases"]
    print("\n" + phases.summary, phases.evidence["seconds_per_request"])
    top = report.top
    assert top is not None
    assert (top.check, top.severity) == ("phases", Severity.WARNING)
    assert top.summary.startswith("The gateway itself adds ")
    assert top.evidence["owner"] == "gateway"
    # Reading the bodies and aiorch's other work wait for the loop too; the wait before the
    # handler is among what grew, by name.
    named = top.evidence["phases"]
    assert isinstance(named, list)
    assert "queue" in named
    assert "waiting before the handler (queue)" in top.summary
    own = top.evidence["gateway_seconds_per_request"]
    assert isinstance(own, float)
    assert own > BUSY.gateway_seconds


# Endpoints down


def test_unreachable_aiorch_is_a_clear_exit_2() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    text = doctor(url, as_json=False)
    assert text.returncode == 2
    assert "Traceback" not in text.stdout + text.stderr
    assert "connection refused" in text.stdout
    assert "CRITICAL" in text.stdout
    run = run_doctor(url)
    assert run.code == 2
    assert run.top["check"] == "metrics"
    assert run.top["runbook"].endswith("#aiorchmetricsdown")


def test_unreachable_prometheus_is_a_clear_exit_2() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = doctor(url, "--prometheus-url", url, as_json=False)
    assert done.returncode == 2
    assert "Traceback" not in done.stdout + done.stderr
    assert "cannot reach" in done.stdout


def test_metrics_token_and_offline_mode(tmp_path: Path) -> None:
    port = free_port()
    env = {**BLANK, "AIORCH_METRICS_TOKEN": "s3cret"}  # no backend: offline
    with run_server(
        [*AIORCH, "serve", "--port", str(port)],
        port=port,
        ready_path="/healthz",
        tmp_path=tmp_path,
        env=env,
        name="aiorch-token",
    ) as server:
        refused = run_doctor(server.url)
        allowed = run_doctor(server.url, "--metrics-token", "s3cret")
    assert refused.code == 2
    assert "needs the metrics token (HTTP 401)" in refused.top["summary"]
    assert allowed.code == 1
    assert allowed.top["check"] == "offline"
    assert "OFFLINE" in allowed.top["summary"]


# Through Prometheus


@dataclass
class Prometheus:
    url: str

    @classmethod
    @contextlib.contextmanager
    def scraping(cls, target: str, tmp_path: Path) -> Iterator[Prometheus]:
        """A private Prometheus scraping `target` every second as job "aiorch"."""
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("`prometheus` is not on PATH (apt-get install prometheus)", pytrace=False)
        port = free_port()
        config = tmp_path / "prometheus.yml"
        host = urllib.parse.urlsplit(target).netloc
        config.write_text(
            "global: {scrape_interval: 1s}\n"
            f"scrape_configs: [{{job_name: aiorch, static_configs: [{{targets: ['{host}']}}]}}]\n"
        )
        argv = [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        with run_server(
            argv, port=port, ready_path="/-/ready", tmp_path=tmp_path, name="prometheus"
        ) as server:
            yield cls(server.url)

    def value(self, expr: str) -> float | None:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        result = http_json(url)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def wait_for_value(self, expr: str, expected: float, timeout: float = 30.0) -> None:
        """Until Prometheus has scraped what the test sent (a wait, not an assertion on time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.value(expr) == expected:
                return
            time.sleep(0.2)
        raise AssertionError(f"{expr} never reached {expected}: last {self.value(expr)}")


@pytest.mark.prometheus
def test_slow_kimi_through_prometheus(aiorch: Aiorch, tmp_path: Path) -> None:
    t = tag()
    with Prometheus.scraping(aiorch.url, tmp_path) as prometheus:
        # One slow call before, so that Kimi's series exist when the window's calls arrive.
        aiorch.ask(f"why first {t} {SLOW_KIMI}", "reasoning", use_cache=False)
        prometheus.wait_for_value('sum(kimi_queries_total{job="aiorch"})', 1)
        aiorch.ask_all(
            [(f"why {i} {t} {SLOW_KIMI}", "reasoning") for i in range(4)], use_cache=False
        )
        prometheus.wait_for_value('sum(kimi_queries_total{job="aiorch"})', 5)
        run = run_doctor(
            aiorch.url, "--prometheus-url", prometheus.url, "--window", "1m", "--kimi-slo", "0.2"
        )
    assert run.code == 2, run.report
    assert run.report["source"]["kind"] == "prometheus"
    assert run.report["source"]["since_start"] is False
    assert run.top["check"] == "latency.kimi"
    assert run.top["evidence"]["p50_seconds"] >= 0.5
    # Every family that exists from start-up reached Prometheus: the completeness check passes.
    assert "metrics" in run.severities("ok")
