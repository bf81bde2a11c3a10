"""`aiorch bench` and the guide's two scripts, run as users run them, against real servers.

The figures are printed, never asserted against a time: only their shape and sanity (counts add
up, percentiles are ordered, every request is accounted for) are checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aiorch.bench.mix import MixError, load_mix
from aiorch.bench.stats import latency_stats, percentile
from tests.integration.service_support import UPSTREAM_KEY, Mock, Service, service_env
from tests.support.procs import AIORCH, REPO

KIMI_SCRIPT = [sys.executable, "scripts/testing/kimi_benchmark.py"]
SMOKE_SCRIPT = [sys.executable, "scripts/testing/orchestrator_latency_smoke.py"]
MIX = str(REPO / "loadtest" / "queries.jsonl")


def bench(*args: str) -> list[str]:
    return [*AIORCH, "bench", *args]


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        argv,
        cwd=REPO,
        env={**os.environ, **service_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    print(result.stdout, result.stderr)  # the figures, shown by pytest -s or on failure
    return result


def run_json(argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    result = run(argv, env)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def assert_sane(summary: dict[str, Any], requests: int | None = None) -> None:
    """Counts add up and the percentiles are ordered."""
    assert summary["ok"] + summary["errors"] == summary["requests"]
    assert sum(summary["errors_by_type"].values()) == summary["errors"]
    if requests is not None:
        assert summary["requests"] == requests
    lat = summary["latency_ms"]
    assert lat["count"] == summary["ok"]
    order = [lat[k] for k in ("min", "p50", "p95", "p99", "p999", "max")]
    assert order == sorted(order)
    assert 0 < lat["min"] <= lat["avg"] <= lat["max"]
    assert summary["achieved_rate"] > 0


# The guide's section 3: python scripts/testing/kimi_benchmark.py --requests 10 --concurrency 2


def test_kimi_benchmark_says_it_is_skipped_without_kimi_settings() -> None:
    result = run([*KIMI_SCRIPT, "--requests", "10", "--concurrency", "2"])
    assert result.returncode == 0
    assert "skipped" in result.stdout
    assert "KIMI_API_KEY" in result.stdout
    assert "KIMI_OLLAMA_URL" in result.stdout
    as_json = run_json([*KIMI_SCRIPT, "--json"])
    assert as_json["skipped"] is True
    assert "KIMI_API_KEY" in as_json["reason"]


def test_kimi_benchmark_prints_the_table_against_the_moonshot_style_api(
    mock_upstream: Mock,
) -> None:
    env = {"KIMI_BASE_URL": f"{mock_upstream.url}/v1", "KIMI_API_KEY": UPSTREAM_KEY}
    result = run([*KIMI_SCRIPT, "--requests", "10", "--concurrency", "2"], env)
    assert result.returncode == 0, result.stderr
    for heading in ("min", "avg", "p50", "p95", "max"):
        assert heading in result.stdout
    assert "kimi-k2-thinking" in result.stdout
    assert "ok 10, errors 0" in result.stdout
    assert "errors by type: none" in result.stdout


@pytest.mark.parametrize("transport", ["api", "ollama"])
def test_kimi_benchmark_json_against_the_mock(mock_upstream: Mock, transport: str) -> None:
    env = (
        {"KIMI_BASE_URL": f"{mock_upstream.url}/v1", "KIMI_API_KEY": UPSTREAM_KEY}
        if transport == "api"
        else {"KIMI_OLLAMA_URL": mock_upstream.url}
    )
    summary = run_json([*KIMI_SCRIPT, "--requests", "10", "--concurrency", "2", "--json"], env)
    assert summary["skipped"] is False
    assert_sane(summary, requests=10)
    assert summary["errors"] == 0
    assert summary["concurrency"] == 2
    assert ("ollama" in summary["target"]) == (transport == "ollama")


def test_kimi_benchmark_counts_errors_by_type(dead_port: int) -> None:
    env = {"KIMI_BASE_URL": f"http://127.0.0.1:{dead_port}/v1", "KIMI_API_KEY": "k"}
    result = run([*KIMI_SCRIPT, "--requests", "4", "--concurrency", "2", "--json"], env)
    assert result.returncode == 1  # nothing succeeded
    summary = json.loads(result.stdout)
    assert summary["errors_by_type"] == {"connection_error": 4}
    assert summary["latency_ms"] is None


# The guide's section 4: python scripts/testing/orchestrator_latency_smoke.py --requests 10


def test_latency_smoke_is_offline_whatever_the_environment_says(dead_port: int) -> None:
    # A configured but unreachable backend: a smoke test that called it would fail or hang.
    env = {"KIMI_BASE_URL": f"http://127.0.0.1:{dead_port}/v1", "KIMI_API_KEY": "k"}
    result = run([*SMOKE_SCRIPT, "--requests", "10"], env)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip().startswith("#")]
    assert len(lines) == 10
    assert all(line.rstrip().endswith("ms") for line in lines)
    assert "cache hit" in result.stdout  # the second round repeats the first
    assert "mean" in result.stdout
    assert "p50" in result.stdout
    assert "p95" in result.stdout
    as_json = run_json([*SMOKE_SCRIPT, "--requests", "6", "--json"], env)
    assert as_json["offline"] is True
    assert [r["index"] for r in as_json["requests"]] == [1, 2, 3, 4, 5, 6]
    assert as_json["requests"][5]["cached"] is True
    assert as_json["mean_ms"] > 0


# aiorch bench


def test_bench_closed_loop_over_http(kimi_api_service: Service) -> None:
    summary = run_json(
        bench("--url", kimi_api_service.url, "-n", "200", "-c", "8", "--mix", MIX, "--json")
    )
    assert_sane(summary, requests=200)
    assert summary["mode"] == "closed"
    assert summary["concurrency"] == 8
    assert summary["errors"] == 0
    assert set(summary["by_service"]) <= {"kimi", "qwen", "multi"}
    assert len(summary["by_service"]) >= 2
    assert summary["cached"] > 0  # the mix repeats its queries


def test_bench_open_loop_over_http(kimi_api_service: Service) -> None:
    summary = run_json(
        bench(
            "--url",
            kimi_api_service.url,
            "--rate",
            "100",
            "--duration",
            "1",
            "--unique",
            "--query-type",
            "code",
            "--json",
        )
    )
    assert_sane(summary)
    assert summary["mode"] == "open"
    assert summary["target_rate"] == 100
    assert summary["latency_measured_from"] == "intended send"
    assert 95 <= summary["requests"] <= 100  # one second at 100/s, all sent on schedule
    assert summary["cached"] == 0  # --unique: every query misses the cache
    assert summary["errors"] == 0
    assert summary["service_time_ms"]["count"] == summary["ok"]
    assert summary["generator_lag_ms"] is not None
    assert set(summary["by_service"]) == {"qwen"}


def test_bench_streamed_chat_reports_time_to_first_text(kimi_api_service: Service) -> None:
    summary = run_json(
        bench(
            "--url",
            kimi_api_service.url,
            "--endpoint",
            "chat",
            "--stream",
            "-n",
            "20",
            "-c",
            "4",
            "--unique",
            "--json",
        )
    )
    assert_sane(summary, requests=20)
    assert summary["errors"] == 0
    ttft = summary["ttft_ms"]
    assert ttft["count"] == 20
    assert ttft["p50"] <= summary["latency_ms"]["max"]


def test_bench_in_process_offline_with_table_and_plot(tmp_path: Path) -> None:
    plot = tmp_path / "latency.png"
    out = tmp_path / "summary.json"
    result = run(
        bench(
            "--target",
            "orchestrator",
            "--offline",
            "-n",
            "300",
            "-c",
            "4",
            "--plot",
            str(plot),
            "--output",
            str(out),
            "--no-progress",
        )
    )
    assert result.returncode == 0, result.stderr
    for heading in ("p50", "p95", "p99", "p99.9", "max", "errors by type"):
        assert heading in result.stdout
    assert "in-process" in result.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(out.read_text())
    assert_sane(summary, requests=300)
    assert summary["errors"] == 0


def test_bench_counts_failures_by_error_type(dead_port: int) -> None:
    result = run(bench("--url", f"http://127.0.0.1:{dead_port}", "-n", "5", "--json"))
    assert result.returncode == 1  # no request succeeded
    summary = json.loads(result.stdout)
    assert summary["errors_by_type"] == {"connection_error": 5}


def test_bench_rejects_bad_options_clearly() -> None:
    both = run(bench("-n", "5", "-d", "1"))
    assert both.returncode == 2
    assert "not both" in both.stderr
    bad_type = run(bench("--query-type", "poetry"))
    assert bad_type.returncode == 2
    assert "query_type" in bad_type.stderr


def test_percentiles_interpolate_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 100.0
    stats = latency_stats([v / 1000 for v in values])  # seconds in, milliseconds out
    assert stats is not None
    assert stats.p999 == pytest.approx(99.901)
    assert latency_stats([]) is None


def test_mix_file_errors_name_the_line(tmp_path: Path) -> None:
    assert len(load_mix(MIX)) >= 30
    bad = tmp_path / "mix.jsonl"
    bad.write_text('{"query": "fine"}\n\n{"query": "x", "query_type": "poetry"}\n')
    with pytest.raises(MixError, match=r"mix\.jsonl:3"):
        load_mix(bad)
