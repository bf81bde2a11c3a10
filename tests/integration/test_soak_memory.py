"""Memory over a bounded soak: mixed traffic for twenty seconds, the service's RSS sampled.

Cached and uncached queries, streams, coalesced duplicates and injected faults (with a healthy
fallback) go through every path that keeps state: the cache (made small so that it fills during
the warm-up), the in-flight table, breakers, budgets, metrics. After the warm-up, RSS must level
off. The bounds are generous on purpose; the figures are printed (run with `-s`).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import psutil
import pytest

from aiorch.mock.settings import FAILOVER_FAULTS
from aiorch.mock.settings import FAULT_NAMES as ALL_FAULTS
from tests.integration.reliability_support import (
    DEFAULT_TOML,
    aiorch_service,
    directive,
    mock_upstream,
    send,
    verdict,
)
from tests.integration.service_support import Mock, unique
from tests.integration.service_support import Service as Running

pytestmark = pytest.mark.slow

# The failover faults (stalls, stream errors, request 400s, a model down for a while) have their
# own scenario suite (issue 16); this one covers the faults it was written for.
FAULT_NAMES = tuple(f for f in ALL_FAULTS if f not in FAILOVER_FAULTS)

SOAK_S = 22.0
WARM_UP_S = 7.0
CONCURRENCY = 16
MB = 1024 * 1024
SOAK_TOML = DEFAULT_TOML + "[cache]\nmax_entries = 300\n"
QUICK_FAULTS = [f for f in FAULT_NAMES if f not in ("hang", "slow_first_token")]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mock, Running]]:
    tmp = tmp_path_factory.mktemp("soak")
    with (
        mock_upstream(tmp) as mock,
        aiorch_service(tmp, mock, toml=SOAK_TOML, name="soak") as service,
    ):
        yield mock, service


def body(rng: random.Random, pool: list[str]) -> dict[str, object]:
    roll = rng.random()
    query_type = rng.choice(["code", "reasoning"])
    if roll < 0.4:  # a popular question: cache hits, and coalescing when two arrive together
        text = rng.choice(pool)
    elif roll < 0.9:
        text = unique("Write a helper")
    else:  # a fault on the primary, a healthy fallback behind it
        primary = "kimi" if query_type == "reasoning" else "qwen"
        fault = rng.choice(QUICK_FAULTS)
        text = unique("Explain") + " " + directive(fault, fault_models=primary)
    return {"query": text, "query_type": query_type, "stream": rng.random() < 0.3}


async def soak(service: Running) -> tuple[list[tuple[float, int]], Counter[str]]:
    process = psutil.Process(service.server.process.pid)
    samples: list[tuple[float, int]] = []
    tally: Counter[str] = Counter()
    pool = [unique("Write a function that parses dates") for _ in range(40)]
    started = time.monotonic()
    deadline = started + SOAK_S
    limits = httpx.Limits(max_connections=CONCURRENCY)

    async with httpx.AsyncClient(base_url=service.url, timeout=30, limits=limits) as client:

        async def worker(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < deadline:
                outcome = await send(client, "/api/ai/query", body(rng, pool))
                answered, succeeded = verdict(outcome)
                tally["sent"] += 1
                tally["answered"] += answered
                tally["succeeded"] += succeeded

        async def sampler() -> None:
            while time.monotonic() < deadline:
                samples.append((time.monotonic() - started, process.memory_info().rss))
                await asyncio.sleep(0.25)

        await asyncio.gather(sampler(), *(worker(i) for i in range(CONCURRENCY)))
    return samples, tally


def test_memory_levels_off_under_a_bounded_soak(stack: tuple[Mock, Running]) -> None:
    _, service = stack
    samples, tally = asyncio.run(soak(service))

    warm = [rss for t, rss in samples if WARM_UP_S - 2 <= t < WARM_UP_S]
    steady = [rss for t, rss in samples if t >= WARM_UP_S]
    half = len(steady) // 2
    first_half = statistics.median(steady[:half])
    last = statistics.median(steady[-half // 2 :])
    start, peak = statistics.median(warm), max(steady)
    print(
        f"\nsoak: {tally['sent']} requests in {SOAK_S:.0f} s ({tally['sent'] / SOAK_S:.0f}/s), "
        f"{tally['answered']} answered, {tally['succeeded']} succeeded"
        f"\nRSS after warm-up {start / MB:.1f} MB, steady first half {first_half / MB:.1f} MB, "
        f"last quarter {last / MB:.1f} MB, peak {peak / MB:.1f} MB, "
        f"growth after warm-up {(last - start) / MB:+.1f} MB"
    )
    assert tally["sent"] > 200, "too little traffic for the soak to mean anything"
    assert tally["answered"] == tally["sent"]
    assert tally["succeeded"] >= 0.95 * tally["sent"]  # the rest: explicit mid-stream errors
    # Generous: a leak of one request's worth of state per request would blow through these.
    assert last - start < 40 * MB
    assert last - first_half < 25 * MB
    assert service.metric("orchestrator_in_flight_requests") == 0
