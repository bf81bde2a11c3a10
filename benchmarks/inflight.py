"""Many requests in flight at once against a slow upstream: errors, aiorch's RSS and fds.

    .venv/bin/python -m benchmarks.inflight [--requests 10000] [--latency-ms 30000] [--workers 1]

Starts `aiorch mock-upstream` answering after `--latency-ms`, and `aiorch serve` routed to it
with the connection pools raised to hold every request (`max_connections` under `[qwen]` and
`[kimi]` in a TOML file given as AIORCH_CONFIG: the default pool of 256 would queue the rest, and
at 30 s a call they would time out) and `connect_timeout` raised to the call's deadline (a burst
of thousands of new connections waits in the upstream's accept backlog longer than the default
5 s). Then one aiohttp client opens `--requests` concurrent requests (each a
distinct query, so none are coalesced), and the script samples aiorch's RSS, open files and
connections every 0.5 s until every answer is in.

Each request in flight holds two sockets in the aiorch worker (client side and upstream side),
so a worker needs an open-file limit above twice its share of requests: the script raises its
own soft limit to the hard one, and the children inherit it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import click
import psutil
import uvloop

from benchmarks.overhead.servers import clean_env, free_port, started

KEY = "sk-inflight"
MODEL = "qwen3-coder:30b"


class Watch(threading.Thread):
    """Peak RSS (MiB), open files and connections of a process tree, sampled every 0.5 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.stop = threading.Event()
        self.peak_rss = 0.0
        self.peak_fds = 0
        self.samples: list[tuple[float, float, int]] = []

    def run(self) -> None:
        started_at = time.perf_counter()
        while not self.stop.wait(0.5):
            rss, fds = 0, 0
            for proc in [self.root, *self.root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    rss += proc.memory_info().rss
                    fds += proc.num_fds()
            mib = rss / 2**20
            self.peak_rss, self.peak_fds = max(self.peak_rss, mib), max(self.peak_fds, fds)
            self.samples.append((time.perf_counter() - started_at, mib, fds))


async def load(url: str, requests: int, seconds: float) -> tuple[collections.Counter[str], float]:
    outcomes: collections.Counter[str] = collections.Counter()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=seconds)
    ) as session:

        async def one(i: int) -> None:
            body = {"query": f"Write a Python function that sorts a list (request {i})"}
            try:
                async with session.post(url, json=body) as response:
                    await response.read()
                    outcomes[str(response.status)] += 1
            except (aiohttp.ClientError, TimeoutError) as error:
                outcomes[type(error).__name__] += 1

        started_at = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests)))
        return outcomes, time.perf_counter() - started_at


@click.command()
@click.option("--requests", type=int, default=10_000, show_default=True)
@click.option("--latency-ms", type=float, default=30_000, show_default=True)
@click.option("--workers", type=int, default=1, show_default=True)
def main(requests: int, latency_ms: float, workers: int) -> None:
    """Hold REQUESTS requests in flight through aiorch against a slow mock upstream."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    need = 2 * requests // workers + 100
    print(f"open-file limit {hard} (was {soft}); an aiorch worker needs about {need}")
    mock_port, port = free_port(), free_port()
    config = Path(tempfile.mkdtemp(prefix="aiorch-inflight-")) / "aiorch.toml"
    pool = requests + 100
    # A burst of thousands of new upstream connections queues in the upstream's accept backlog
    # longer than the default 5 s connect timeout: allow as long as the call itself.
    backend = f"max_connections = {pool}\nconnect_timeout = {latency_ms / 1000 + 60}\n"
    config.write_text(f"[qwen]\n{backend}[kimi]\n{backend}")
    mock_argv = [sys.executable, "-m", "aiorch", "mock-upstream", "--port", str(mock_port)]
    mock_argv += ["--api-key", KEY, "--latency-ms", str(latency_ms), "--no-access-log"]
    aiorch_argv = [sys.executable, "-m", "aiorch", "serve", "--port", str(port)]
    aiorch_argv += ["--workers", str(workers), "--log-level", "warning", "--no-access-log"]
    upstream = f"http://127.0.0.1:{mock_port}/v1"
    env = clean_env(
        KIMI_BASE_URL=upstream,
        KIMI_API_KEY=KEY,
        QWEN_BASE_URL=upstream,
        QWEN_API_KEY=KEY,
        QWEN_MODEL=MODEL,
        QWEN_TIMEOUT=str(latency_ms / 1000 + 60),
        AIORCH_CONFIG=str(config),
    )
    with (
        started("inflight-mock", mock_argv, clean_env(), mock_port),
        started("inflight-aiorch", aiorch_argv, env, port) as aiorch,
    ):
        watch = Watch(aiorch.process.pid)
        idle_rss = (
            sum(p.memory_info().rss for p in [watch.root, *watch.root.children(recursive=True)])
            / 2**20
        )
        watch.start()
        url = f"{aiorch.url}/api/ai/query"
        outcomes, seconds = uvloop.run(load(url, requests, latency_ms / 1000 + 90))
        watch.stop.set()
        watch.join()
    print(f"requests {requests}, upstream latency {latency_ms:g} ms, aiorch workers {workers}")
    print(f"outcomes {dict(outcomes)}; all answered in {seconds:.1f} s")
    print(
        f"aiorch RSS idle {idle_rss:.0f} MiB, peak {watch.peak_rss:.0f} MiB;"
        f" peak open files {watch.peak_fds}"
    )
    step = max(1, len(watch.samples) // 12)
    print(
        "t s, RSS MiB, fds: "
        + "; ".join(f"{t:.0f} {rss:.0f} {fds}" for t, rss, fds in watch.samples[::step])
    )
    ok = outcomes.get("200", 0) == requests
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    main()
