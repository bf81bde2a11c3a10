"""Two aiorch replicas on one Redis share the answer cache and the rate limits.

Real processes: a private `redis-server` on a free port (never the machine's own Redis), the mock
upstream, and two `aiorch serve` processes with the same `AIORCH_REDIS_URL`, as two pods behind a
load balancer would run. Each claim is checked where a client would see it: responses, the mock's
record of upstream calls, and each replica's `/metrics`.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.scale_support import (
    TIMEOUT,
    metric,
    mock_upstream,
    private_redis,
    query,
    scrape,
    serve,
    unique,
)
from tests.support.procs import Server

pytestmark = [pytest.mark.redis, pytest.mark.slow]

CACHE_KEY, LIMITED_KEY, OTHER_KEY = "client-cache", "client-limited", "client-other"
BURST = 3
# Far slower than the test: no token comes back while it runs, so the count is exact.
CONFIG = f"""
[server]
rate_limit_per_minute = 0.5
rate_limit_burst = {BURST}

[cache]
# Generous, so that a slow CI machine does not turn a Redis round trip into a local fallback.
redis_timeout = 2.0
"""


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server, Server]]:
    """(replica A, replica B, the mock upstream), A and B sharing one private Redis."""
    tmp = tmp_path_factory.mktemp("replicas")
    config = tmp / "aiorch.toml"
    config.write_text(CONFIG)
    with private_redis(tmp) as redis_url, mock_upstream(tmp) as mock:
        env = {
            "AIORCH_REDIS_URL": redis_url,
            "AIORCH_CONFIG": str(config),
            "AIORCH_API_KEYS": f"{CACHE_KEY},{LIMITED_KEY},{OTHER_KEY}",
            "QWEN_OLLAMA_URL": mock.url,
            "KIMI_OLLAMA_URL": mock.url,
        }
        with serve(tmp, env, name="replica-a") as a, serve(tmp, env, name="replica-b") as b:
            yield a, b, mock


def upstream_calls(mock: Server, marker: str) -> int:
    response = httpx.get(f"{mock.url}/_mock/requests", timeout=TIMEOUT)
    response.raise_for_status()
    return sum(marker in str(r.get("body")) for r in response.json()["requests"])


def test_a_query_answered_by_one_replica_is_a_cache_hit_on_the_other(
    replicas: tuple[Server, Server, Server],
) -> None:
    a, b, mock = replicas
    text = unique("write a python function that merges two sorted lists")
    hits_before = metric(scrape(b.url), "orchestrator_cache_hits_total")

    first = query(a.url, text, key=CACHE_KEY, query_type="code")
    assert first.status_code == 200, first.text
    assert first.json()["cached"] is False

    second = query(b.url, text, key=CACHE_KEY, query_type="code")
    assert second.status_code == 200, second.text
    assert second.json()["cached"] is True
    assert second.json()["answer"] == first.json()["answer"]

    assert upstream_calls(mock, text) == 1  # B never asked the model
    assert metric(scrape(b.url), "orchestrator_cache_hits_total") == hits_before + 1


def test_a_clients_rate_limit_holds_across_both_replicas(
    replicas: tuple[Server, Server, Server],
) -> None:
    a, b, _ = replicas
    limited_before = sum(metric(scrape(r.url), "aiorch_rate_limited_total") for r in (a, b))

    # Alternate replicas, as a load balancer would: each alone would allow BURST requests.
    statuses = []
    for replica in [a, b] * BURST:
        response = query(replica.url, unique("write a sort function"), key=LIMITED_KEY)
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
    assert statuses == [200] * BURST + [429] * BURST

    # The limit is per client, not per replica or global: another key still gets through.
    assert query(b.url, unique("write a sort function"), key=OTHER_KEY).status_code == 200
    limited = sum(metric(scrape(r.url), "aiorch_rate_limited_total") for r in (a, b))
    assert limited == limited_before + BURST
