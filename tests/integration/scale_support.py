"""Helpers for the scale-out tests (several workers, several replicas): real processes only."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from aiorch.config import ENV_KEYS
from tests.support.procs import AIORCH, Server, free_port, run_server, stop

# Generous: only there so that a broken build fails instead of hanging the suite.
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
WAIT = 20.0

# Every variable aiorch reads, blanked so that the developer's shell cannot leak into a test.
# Not PROMETHEUS_MULTIPROC_DIR: prometheus_client turns multiprocess mode on when the variable
# exists at all, even empty; the worker tests set it to a directory of their own.
BLANK_ENV: dict[str, str] = {
    **dict.fromkeys(ENV_KEYS, ""),
    "AIORCH_API_KEYS": "",
    "AIORCH_CONFIG": "",
    "AIORCH_WORKERS": "",
}


def unique(text: str) -> str:
    """A prompt no other request sends: it cannot be answered from the cache by accident."""
    return f"{text} (case {uuid.uuid4().hex[:10]})"


@contextlib.contextmanager
def mock_upstream(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    with run_server(
        [*AIORCH, "mock-upstream", "--port", str(port), "--seed", "1"],
        port=port,
        ready_path="/healthz",
        tmp_path=tmp_path,
        name="mock-upstream",
    ) as server:
        yield server


def serve(
    tmp_path: Path, env: Mapping[str, str], *, workers: int = 1, name: str = "aiorch"
) -> contextlib.AbstractContextManager[Server]:
    port = free_port()
    return run_server(
        [*AIORCH, "serve", "--port", str(port), "--workers", str(workers)],
        port=port,
        ready_path="/healthz",
        tmp_path=tmp_path,
        env={**BLANK_ENV, **env},
        name=name,
    )


def query(
    url: str, text: str, *, key: str | None = None, fallback: bool = True, **fields: Any
) -> httpx.Response:
    """POST /api/ai/query on a fresh connection (so that workers share connections fairly)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if not fallback:
        headers["X-Aiorch-Fallback"] = "off"
    with httpx.Client(base_url=url, timeout=TIMEOUT, headers=headers) as client:
        return client.post("/api/ai/query", json={"query": text, **fields})


def scrape(url: str) -> str:
    with httpx.Client(base_url=url, timeout=TIMEOUT) as client:
        response = client.get("/metrics")
    response.raise_for_status()
    return response.text


def metric(exposition: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 if none)."""
    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll `condition` until it holds; fail naming `what` if it never does."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def private_redis(tmp_path: Path) -> Iterator[str]:
    """A throwaway redis-server on a free port, no persistence; never the machine's own Redis.

    A missing binary fails the test rather than skipping it (scripts/ci/test-deps.sh installs it):
    replicas that were never tested together must not pass as tested.
    """
    import redis

    if shutil.which("redis-server") is None:
        pytest.fail("`redis-server` is not on PATH; run scripts/ci/test-deps.sh", pytrace=False)
    port = free_port()
    log = (tmp_path / f"redis-{port}.log").open("wb")
    process = subprocess.Popen(
        [
            "redis-server",
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(tmp_path),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    client = redis.Redis(port=port, socket_connect_timeout=1.0)
    try:

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode}")
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(answers, f"redis-server on port {port}")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        stop(process)
        log.close()
