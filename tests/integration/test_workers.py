"""`aiorch serve --workers 2`: one `/metrics` that sums every worker's observations.

Real processes: the mock upstream, and aiorch with two uvicorn workers sharing one port. The
tests read the multiprocess directory only to learn which worker served what (and to find the
workers' pids); every claim about the metrics is checked on `/metrics` over HTTP.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from tests.integration.scale_support import (
    metric,
    mock_upstream,
    query,
    scrape,
    serve,
    unique,
    wait_until,
)
from tests.support.procs import Server

pytestmark = pytest.mark.slow

BATCH = 8  # concurrent requests, each on its own connection, so both workers accept some
MAX_REQUESTS = 200


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with mock_upstream(tmp_path_factory.mktemp("mock")) as server:
        yield server


def workers_env(mock: Server, directory: Path) -> dict[str, str]:
    return {
        "QWEN_OLLAMA_URL": mock.url,
        "KIMI_OLLAMA_URL": mock.url,
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
    }


def live_pids(directory: Path) -> set[int]:
    """Workers that hold live-gauge files: every running worker writes its in-flight gauge."""
    pattern = re.compile(r"gauge_livesum_(\d+)\.db")
    return {int(m.group(1)) for p in directory.iterdir() if (m := pattern.fullmatch(p.name))}


def per_worker(directory: Path, tmp_path: Path, name: str) -> dict[int, float]:
    """`name`'s total in each worker's own counter file, merged the way a scrape merges them."""
    shares = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.removeprefix("counter_"))
        alone = tmp_path / f"worker-{pid}"
        alone.mkdir(exist_ok=True)
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        shares[pid] = metric(generate_latest(registry).decode(), name)
    return shares


def send(url: str, count: int) -> None:
    texts = [unique("write a python function") for _ in range(count)]
    with ThreadPoolExecutor(BATCH) as pool:
        statuses = list(pool.map(lambda t: query(url, t, query_type="code").status_code, texts))
    assert statuses == [200] * count


def children(parent: int) -> set[int]:
    path = Path(f"/proc/{parent}/task/{parent}/children")
    return {int(pid) for pid in path.read_text().split()}


def test_metrics_sum_every_workers_observations(mock: Server, tmp_path: Path) -> None:
    directory = tmp_path / "prom"
    with serve(tmp_path, workers_env(mock, directory), workers=2) as aiorch:
        wait_until(lambda: len(live_pids(directory)) == 2, "both workers to start")
        # Until both workers have answered some queries, the test would prove nothing.
        sent = 0
        while sent < MAX_REQUESTS:
            send(aiorch.url, BATCH)
            sent += BATCH
            shares = per_worker(directory, tmp_path, "orchestrator_queries_total")
            if len(shares) == 2 and all(shares.values()):
                break
        assert len(shares) == 2, shares
        assert all(shares.values()), f"one worker served all {sent} queries: {shares}"
        assert sum(shares.values()) == sent

        # Whichever worker answers the scrape, it reports every worker's observations.
        for _ in range(6):
            text = scrape(aiorch.url)
            assert metric(text, "orchestrator_queries_total") == sent
            assert metric(text, "orchestrator_queries_total", query_type="code") == sent
            assert metric(text, "orchestrator_request_duration_seconds_count") == sent
            assert metric(text, "orchestrator_request_duration_seconds_bucket", le="+Inf") == sent
            assert metric(text, "qwen_response_duration_seconds_count") == sent
            assert metric(text, "orchestrator_cache_misses_total") == sent
            route = {"route": "/api/ai/query"}
            assert metric(text, "aiorch_http_requests_total", **route) == sent
            assert metric(text, "aiorch_http_request_duration_seconds_count", **route) == sent
            assert metric(text, "orchestrator_in_flight_requests") == 0


def test_dead_workers_are_marked_and_their_counts_kept(mock: Server, tmp_path: Path) -> None:
    directory = tmp_path / "prom"
    with serve(tmp_path, workers_env(mock, directory), workers=2) as aiorch:
        wait_until(lambda: len(live_pids(directory)) == 2, "both workers to start")
        send(aiorch.url, BATCH)

        # A query stuck upstream: its worker counts it in flight until the worker dies.
        def stuck() -> None:
            slow = unique("write a python function [[mock: latency_ms=60000]]")
            with contextlib.suppress(httpx.HTTPError):  # its worker is killed under it
                query(aiorch.url, slow, query_type="code")

        thread = threading.Thread(target=stuck, daemon=True)
        thread.start()
        wait_until(
            lambda: metric(scrape(aiorch.url), "orchestrator_in_flight_requests") == 1,
            "the stuck query to be in flight",
        )

        # Kill both workers the hard way: no shutdown code runs in them.
        dead = live_pids(directory)
        assert dead <= children(aiorch.process.pid), "only ever kill our own workers"
        for pid in dead:
            os.kill(pid, signal.SIGKILL)
        # A replacement writes its files after the supervisor round that started it, and every
        # round ends by marking the workers that have gone: no waiting for the marking itself.
        wait_until(lambda: len(live_pids(directory) - dead) == 2, "two replacement workers")
        thread.join(timeout=10)

        text = scrape(aiorch.url)
        assert metric(text, "orchestrator_in_flight_requests") == 0
        assert not live_pids(directory) & dead
        # What the dead workers counted still counts: counters never go backwards.
        assert metric(text, "orchestrator_queries_total") == BATCH
        assert metric(text, "orchestrator_request_duration_seconds_count") == BATCH

        send(aiorch.url, 2)
        assert metric(scrape(aiorch.url), "orchestrator_queries_total") == BATCH + 2


def test_a_restart_does_not_count_the_previous_runs_files(mock: Server, tmp_path: Path) -> None:
    directory = tmp_path / "prom"
    with serve(tmp_path, workers_env(mock, directory), workers=2) as aiorch:
        send(aiorch.url, 5)
        assert metric(scrape(aiorch.url), "orchestrator_queries_total") == 5
    assert list(directory.glob("counter_*.db")), "the first run left no files to go stale"

    with serve(tmp_path, workers_env(mock, directory), workers=2) as aiorch:
        send(aiorch.url, 3)
        text = scrape(aiorch.url)
        assert metric(text, "orchestrator_queries_total") == 3
        assert metric(text, "orchestrator_request_duration_seconds_count") == 3
