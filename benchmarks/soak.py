"""A bounded soak: aiorch's RSS over minutes of cache-missing load (a command, not a test).

    python -m benchmarks.soak --minutes 10 --concurrency 32

Starts the mock upstream (zero delay) and one aiorch worker on free loopback ports, sends
queries that are all different (so the cache fills, then evicts) from a closed-loop aiohttp
client, samples aiorch's RSS every `--sample` seconds, and prints the samples and the verdict:
flat when no sample after the first minute is more than `--tolerance` above the first-minute
level. It stops by itself after `--minutes`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter

import aiohttp
import click
import psutil

from benchmarks.overhead.servers import (
    aiorch_argv,
    aiorch_env,
    clean_env,
    free_port,
    mock_argv,
    started,
)
from benchmarks.overhead.shapes import AIORCH_PATH, QUERY


async def load(url: str, concurrency: int, seconds: float) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    counter = itertools.count()
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def user() -> None:
            while time.monotonic() < deadline:
                body = {"query": f"{QUERY} (soak {next(counter)})"}
                try:
                    async with session.post(url, json=body) as response:
                        await response.read()
                        outcomes[str(response.status)] += 1
                except (aiohttp.ClientError, TimeoutError) as error:
                    outcomes[type(error).__name__] += 1

        await asyncio.gather(*(user() for _ in range(concurrency)))
    return outcomes


async def sample_rss(pid: int, every: float, until: float) -> list[tuple[float, float]]:
    process = psutil.Process(pid)
    started_at = time.monotonic()
    samples = []
    while time.monotonic() < until:
        await asyncio.sleep(every)
        samples.append((time.monotonic() - started_at, process.memory_info().rss / 2**20))
    return samples


@click.command()
@click.option("--minutes", type=float, default=10.0, show_default=True)
@click.option("--concurrency", type=int, default=32, show_default=True)
@click.option("--sample", "every", type=float, default=10.0, show_default=True)
@click.option("--tolerance", type=float, default=0.05, show_default=True)
def main(minutes: float, concurrency: int, every: float, tolerance: float) -> None:
    """Soak one aiorch worker with cache misses and report whether its RSS stays flat."""
    seconds = minutes * 60
    mock_port, port = free_port(), free_port()
    with (
        started("soak-mock", mock_argv(mock_port, 30), clean_env(), mock_port) as mock,
        started("soak-aiorch", aiorch_argv(port, 1), aiorch_env(mock.url), port) as aiorch,
    ):

        async def run() -> tuple[Counter[str], list[tuple[float, float]]]:
            until = time.monotonic() + seconds
            return await asyncio.gather(
                load(aiorch.url + AIORCH_PATH, concurrency, seconds),
                sample_rss(aiorch.process.pid, every, until),
            )

        started_at = time.monotonic()
        outcomes, samples = asyncio.run(run())
        elapsed = time.monotonic() - started_at
    total = sum(outcomes.values())
    print(f"{total:,} requests in {elapsed:.0f} s ({total / elapsed:,.0f}/s), c={concurrency}")
    print(f"outcomes: {dict(outcomes)}")
    for at, rss in samples:
        print(f"  {at:6.0f} s  {rss:7.1f} MiB")
    warm = [rss for at, rss in samples if at <= 60] or [samples[0][1]]
    later = [rss for at, rss in samples if at > 60]
    level = max(warm)
    peak = max(later, default=level)
    growth = (peak - level) / level
    verdict = "flat" if growth <= tolerance else "GROWING"
    print(
        f"first-minute level {level:.1f} MiB, later peak {peak:.1f} MiB: {growth:+.1%} ({verdict})"
    )
    if growth > tolerance:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
