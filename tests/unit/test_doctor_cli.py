"""`aiorch doctor` as a command, against a stand-in aiorch serving recorded answers over HTTP."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aiorch.cli import main
from aiorch.doctor import sources
from tests.support.procs import free_port

DATA = Path(__file__).parent / "data" / "doctor"


@dataclass
class Stand:
    """What the stand-in answers: path -> (status, body)."""

    url: str = ""
    routes: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    seen_auth: list[str | None] = field(default_factory=list)

    def serve(self, metrics: str = "healthy.prom", readyz: str = "readyz_ready.json") -> None:
        self.routes["/metrics"] = (200, (DATA / metrics).read_bytes())
        self.routes["/readyz"] = (200, (DATA / readyz).read_bytes())


@pytest.fixture
def stand() -> Iterator[Stand]:
    state = Stand()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.seen_auth.append(self.headers.get("Authorization"))
            status, body = state.routes.get(self.path, (404, b"not found"))
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
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# The developer's shell must not configure the command under test.
UNSET: dict[str, str | None] = {
    f"AIORCH_DOCTOR_{name}": None
    for name in ("URL", "PROMETHEUS_URL", "JOB", "WINDOW", "KIMI_SLO", "QWEN_SLO", "TIMEOUT")
} | {"AIORCH_DOCTOR_METRICS_TOKEN": None, "AIORCH_METRICS_TOKEN": None}


def doctor(*args: str) -> Any:
    return CliRunner().invoke(main, ["doctor", "--interval", "0", *args], env=UNSET)


def test_healthy_json_exits_zero(stand: Stand) -> None:
    stand.serve()
    result = doctor("--url", stand.url, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["findings"][0]["check"] == "healthy"
    assert report["source"]["note"].startswith("One scrape: totals since aiorch started")


def test_the_text_report_leads_with_the_top_finding(stand: Stand) -> None:
    stand.serve("cold_cache.prom")
    result = doctor("--url", stand.url)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert any("WARNINGS" in line for line in lines[:3])
    first = next(i for i, line in enumerate(lines) if "WARNING " in line)
    assert "Cache hit rate is 0 %" in lines[first]


def test_the_slo_options_reach_the_checks(stand: Stand) -> None:
    stand.serve("kimi_74s.prom")
    assert doctor("--url", stand.url).exit_code == 2
    relaxed = doctor("--url", stand.url, "--kimi-slo", "120", "--json")
    assert relaxed.exit_code == 1  # the fallbacks are still a warning
    assert json.loads(relaxed.output)["findings"][0]["check"] == "fallback"


def test_the_metrics_token_is_sent_as_a_bearer_token(stand: Stand) -> None:
    stand.serve()
    assert doctor("--url", stand.url, "--metrics-token", "s3cret").exit_code == 0
    assert "Bearer s3cret" in stand.seen_auth


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (404, b"not found", "/metrics answered HTTP 404"),
        (401, b"{}", "needs the metrics token (HTTP 401): pass --metrics-token"),
        (200, b"<html>hello</html>", "not a Prometheus text exposition"),
    ],
)
def test_a_bad_metrics_endpoint_is_critical(
    stand: Stand, status: int, body: bytes, message: str
) -> None:
    stand.serve()
    stand.routes["/metrics"] = (status, body)
    result = doctor("--url", stand.url, "--json")
    assert result.exit_code == 2
    top = json.loads(result.output)["findings"][0]
    assert top["check"] == "metrics"
    assert message in top["summary"]


def test_a_readyz_that_is_not_aiorchs_is_critical(stand: Stand) -> None:
    stand.serve()
    stand.routes["/readyz"] = (200, b'{"hello": "world"}')
    result = doctor("--url", stand.url, "--json")
    assert result.exit_code == 2
    summaries = [f["summary"] for f in json.loads(result.output)["findings"]]
    assert any("did not answer with aiorch's readiness JSON" in s for s in summaries)


def test_nothing_listening_is_a_clear_exit_2_without_traceback() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = doctor("--url", url)
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "connection refused" in result.output
    assert "Traceback" not in result.output


def test_a_bad_prometheus_window_is_a_usage_error() -> None:
    result = doctor("--prometheus-url", "http://127.0.0.1:9", "--window", "soon")
    assert result.exit_code == 2
    assert "not a Prometheus duration" in result.output


def test_two_scrapes_wait_between_them(stand: Stand) -> None:
    stand.serve("slow_kimi_before.prom")
    waited: list[float] = []

    def wait(seconds: float) -> None:
        waited.append(seconds)
        stand.serve("slow_kimi_after.prom")  # what the service exposes a moment later

    observation = sources.observe(stand.url, interval=3.0, wait=wait)
    assert waited == [3.0]
    assert observation.window.since_start is False
    assert observation.window.queries == 6
    assert observation.view is not None
    assert observation.view.total("kimi_queries_total") == 6


def test_a_port_that_does_not_speak_http_is_a_clear_exit_2() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def answer_garbage() -> None:
            for _ in range(2):  # /metrics, then /readyz
                connection, _ = listener.accept()
                with connection:
                    connection.recv(4096)
                    connection.sendall(b"-ERR unknown command\r\n")

        thread = threading.Thread(target=answer_garbage, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        result = doctor("--url", url, "--json")
        thread.join(timeout=10)
    assert result.exit_code == 2
    top = json.loads(result.output)["findings"][0]
    assert top["check"] == "metrics"
    assert f"cannot read {url}/metrics" in top["summary"]  # ours; http.client's words follow
