"""aiohttp vs httpx as aiorch's upstream client, side by side against the mock upstream.

    .venv/bin/python -m benchmarks.http_clients [--seconds 5] [--concurrency 1,32,256]

Starts `aiorch mock-upstream` (zero delay) on a free loopback port, then, for each concurrency
and each client in turn, sends the request aiorch sends Qwen for as many seconds, each worker
waiting for its answer (closed loop). Both clients run on uvloop with a pool as large as the
concurrency and read and decode the JSON answer, as the backend does. Printed per row: answers
a second, latency p50/p99 in ms, and the client process's CPU time per request in microseconds
(the figure that decides how many requests one gateway worker can forward).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import aiohttp
import click
import httpx
import msgspec
import uvloop

from benchmarks.overhead.servers import free_port

KEY = "sk-client-bench"
MODEL = "qwen3-coder:30b"
BODY = msgspec.json.encode(
    {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a Python function that reverses a list"}],
        "max_tokens": 4096,
        "temperature": 0.7,
        "stream": False,
    }
)
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}

MOCK = (sys.executable, "-m", "aiorch", "mock-upstream", "--seed", "1")
Post = Callable[[], Awaitable[None]]


def aiohttp_client(url: str, pool: int) -> AbstractAsyncContextManager[Post]:
    class Client:
        async def __aenter__(self) -> Post:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=pool, keepalive_timeout=30),
                headers=HEADERS,
                skip_auto_headers=("User-Agent",),
            )

            async def post() -> None:
                async with self.session.post(url, data=BODY) as response:
                    msgspec.json.decode(await response.read())
                    response.raise_for_status()

            return post

        async def __aexit__(self, *exc: object) -> None:
            await self.session.close()

    return Client()


def httpx_client(url: str, pool: int) -> AbstractAsyncContextManager[Post]:
    class Client:
        async def __aenter__(self) -> Post:
            self.client = httpx.AsyncClient(
                headers=HEADERS,
                limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
                timeout=30.0,
            )

            async def post() -> None:
                response = await self.client.post(url, content=BODY)
                msgspec.json.decode(response.content)
                response.raise_for_status()

            return post

        async def __aexit__(self, *exc: object) -> None:
            await self.client.aclose()

    return Client()


CLIENTS = {"aiohttp": aiohttp_client, "httpx": httpx_client}


async def measure(
    make: Callable[[str, int], AbstractAsyncContextManager[Post]],
    url: str,
    concurrency: int,
    seconds: float,
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    async with make(url, concurrency) as post:
        for _ in range(20):  # warm the pool and the interpreter
            await post()
        end = time.perf_counter() + seconds
        cpu = time.process_time()
        started = time.perf_counter()

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                try:
                    await post()
                except (aiohttp.ClientError, httpx.HTTPError):
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "rate": len(latencies) / wall,
        "p50_ms": cuts[49] * 1000,
        "p99_ms": cuts[98] * 1000,
        "cpu_us_per_request": cpu / max(1, len(latencies)) * 1e6,
        "errors": errors,
    }


@click.command()
@click.option("--seconds", type=float, default=5.0, show_default=True)
@click.option("--concurrency", default="1,32,256", show_default=True)
@click.option("--rounds", type=int, default=2, show_default=True, help="Alternating rounds.")
def main(seconds: float, concurrency: str, rounds: int) -> None:
    """Compare aiohttp and httpx against the mock upstream on loopback."""
    port = free_port()
    mock = subprocess.Popen(
        [*MOCK, "--port", str(port), "--api-key", KEY, "--tokens", "30", "--no-access-log"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        url = base + "/v1/chat/completions"
        print(f"{'client':8} {'c':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>10}")
        for level in (int(c) for c in concurrency.split(",")):
            for _ in range(rounds):
                for name, make in CLIENTS.items():
                    row = uvloop.run(measure(make, url, level, seconds))
                    print(
                        f"{name:8} {level:>4} {row['rate']:>8,.0f} {row['p50_ms']:>8.3f}"
                        f" {row['p99_ms']:>8.3f} {row['cpu_us_per_request']:>10.0f}"
                        + (f"  errors {row['errors']:.0f}" if row["errors"] else ""),
                        flush=True,
                    )
    finally:
        mock.terminate()
        mock.wait(10)


if __name__ == "__main__":
    main()
