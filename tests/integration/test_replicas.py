"""Two aiorch replicas on one Redis share the answer cache, the rate limits and breaker state.

Real processes: a private `redis-server` on a free port (never the machine's own Redis), the mock
upstream, and two `aiorch serve` processes with the same `AIORCH_REDIS_URL`, as two pods behind a
load balancer would run. Each claim is checked where a client would see it: responses, the mock's
record of upstream calls, and each replica's `/metrics`.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.integration.scale_support import (
    TIMEOUT,
    metric,
    mock_upstream,
    private_redis,
    query,
    scrape,
    serve,
    unique,
    wait_until,
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


# ---------------------------------------------------------------------------- breakers

KIMI_MODEL = "kimi-k2-thinking:cloud"  # Kimi's model on the Ollama dialect, as configured below
THRESHOLD = 3
BREAKER_CONFIG = f"""
[retry]
attempts = 1

[breaker]
minimum_calls = {THRESHOLD}
# Far longer than the tests, and no active probe: once open, Kimi stays open while they run.
reset_seconds = 600
probe_interval = 0
"""


@pytest.fixture(scope="module")
def breaker_replicas(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, Server, Server, str]]:
    """(replica A, replica B, the mock upstream, the Redis URL): a Redis of their own."""
    tmp = tmp_path_factory.mktemp("breakers")
    config = tmp / "aiorch.toml"
    config.write_text(BREAKER_CONFIG)
    with private_redis(tmp) as redis_url, mock_upstream(tmp) as mock:
        env = {
            "AIORCH_REDIS_URL": redis_url,
            "AIORCH_CONFIG": str(config),
            "QWEN_OLLAMA_URL": mock.url,
            "KIMI_OLLAMA_URL": mock.url,
        }
        with serve(tmp, env, name="replica-a") as a, serve(tmp, env, name="replica-b") as b:
            yield a, b, mock, redis_url


def kimi_calls(mock: Server) -> int:
    response = httpx.get(f"{mock.url}/_mock/stats", timeout=TIMEOUT)
    response.raise_for_status()
    return int(response.json()["by_model"].get(KIMI_MODEL, 0))


def breaker_state(replica: Server) -> float:
    return metric(scrape(replica.url), "orchestrator_circuit_breaker_state", service="kimi")


def test_a_breaker_opened_by_one_replica_makes_the_other_skip_the_backend(
    breaker_replicas: tuple[Server, Server, Server, str],
) -> None:
    a, b, mock, _ = breaker_replicas
    configured = httpx.post(
        f"{mock.url}/_mock/config",
        json={"model_config": {KIMI_MODEL: {"fault": ["http_500"]}}},
        timeout=TIMEOUT,
    )
    assert configured.status_code == 200, configured.text
    assert breaker_state(a) == breaker_state(b) == 0

    # A alone calls Kimi, which fails every time, until A's breaker opens.
    for _ in range(THRESHOLD):
        failed = query(a.url, unique("explain why"), model="kimi", use_cache=False, fallback=False)
        assert failed.status_code == 502, failed.text
    assert breaker_state(a) == 2
    calls = kimi_calls(mock)
    assert calls == THRESHOLD

    # B never called Kimi, yet learns through Redis that its breaker is open.
    wait_until(lambda: breaker_state(b) == 2, "replica B to see Kimi's breaker open")
    moved = query(b.url, unique("explain why the sky is blue"), query_type="reasoning")
    assert moved.status_code == 200, moved.text
    assert moved.json()["selected_service"] == "qwen"
    assert moved.json()["fallback"]["reason"] == "circuit_open"
    refused = query(b.url, unique("explain why"), model="kimi", use_cache=False, fallback=False)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["attempts"][0]["error_type"] == "circuit_open"
    assert int(refused.headers["Retry-After"]) >= 1  # when the breaker will let a probe through
    assert kimi_calls(mock) == calls  # B skipped Kimi without calling it


def test_replicas_keep_answering_when_their_redis_is_killed(
    breaker_replicas: tuple[Server, Server, Server, str],
) -> None:
    a, b, _, redis_url = breaker_replicas
    kill_private_redis(redis_url)
    for replica in (a, b, a, b):
        answered = query(replica.url, unique("write a function that sorts a list"))
        assert answered.status_code == 200, answered.text
        pinned = query(replica.url, unique("write a parser"), model="qwen", use_cache=False)
        assert pinned.status_code == 200, pinned.text
    wait_until(lambda: lost_redis_logged(a) and lost_redis_logged(b), "both to log the loss")
    # More requests, more background passes against the dead Redis: still one line each.
    for replica in (a, b, a, b):
        assert query(replica.url, unique("write a sort function")).status_code == 200
    for replica in (a, b):
        assert replica.output().count(BREAKERS_ALONE) == 1
        assert breaker_state(replica) == 2  # each keeps what it knew: Kimi is still skipped
        assert "Traceback" not in replica.output()


BREAKERS_ALONE = "circuit breakers: Redis failed"


def lost_redis_logged(replica: Server) -> bool:
    return BREAKERS_ALONE in replica.output()


def kill_private_redis(url: str) -> None:
    """SIGKILL the test's own redis-server (found by its port, checked to be our child)."""
    client = redis.Redis.from_url(url, socket_timeout=5.0)
    try:
        assert client.connection_pool.connection_kwargs["port"] != 6379, "never the machine's"
        pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert parent == os.getpid(), "only the redis-server this test started"
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not _answers(url), "the private redis-server to be gone")


def _answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=1.0)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()
