"""The fault matrix: every mock fault x plain/streaming x with/without a healthy fallback.

Kimi (the Moonshot-style API) is asked first for reasoning queries and Qwen (Ollama) second.
"With fallback" injects the fault into Kimi only; "without" into both, and the OpenAI-compatible
endpoint asks for Kimi alone (`X-Aiorch-Fallback: off`). Every case must end, within the
deadlines, in a whole answer or a clear JSON or SSE error, and the fallback metric must carry the
right reason. A stream that breaks after its first chunk is continued on Qwen where Qwen is
healthy; where it is not, the stream ends in an explicit error event, never short.

All cases run at once against one service (the breaker is disabled there; prompts are unique),
so the matrix costs about one hung request's deadlines rather than the sum of them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from aiorch.mock.settings import FAILOVER_FAULTS
from aiorch.mock.settings import FAULT_NAMES as ALL_FAULTS
from tests.integration.reliability_support import (
    ALONE,
    ANTI_HANG_S,
    FIRST_TOKEN_S,
    TIMEOUT_S,
    Outcome,
    aiorch_service,
    counters,
    directive,
    mock_upstream,
    send,
    send_all,
)
from tests.integration.service_support import Mock, Service, unique, wait_until

pytestmark = pytest.mark.slow

# The failover faults (stalls, stream errors, request 400s, a model down for a while) have their
# own scenario suite (issue 16); this one covers the faults it was written for.
FAULT_NAMES = tuple(f for f in ALL_FAULTS if f not in FAILOVER_FAULTS)

# How each fault reads once Kimi's (Moonshot dialect) failure is classified: the fallback reason.
KIMI_REASON = {
    "http_500": "upstream_error",
    "http_502": "upstream_error",
    "http_503": "overloaded",
    "rate_limit": "rate_limited",  # rate_limit_reached_error: retryable
    "overloaded": "overloaded",  # engine_overloaded_error: retryable
    "quota": "quota_exceeded",  # exceeded_current_quota_error: never retried
    "hang": "timeout",
    "reset": "connection_error",
    "malformed": "bad_response",  # a plain answer that is not JSON; a stream with no whole event
    "cut": "connection_error",  # a plain answer cut short; in a stream, see MID_STREAM
    "slow_first_token": "timeout",
    "cut_early": "connection_error",  # a stream cut before its first token
}
# Ollama (Qwen) has no error.type, but its wording tells a used-up plan from a brief limit.
QWEN_TYPE = KIMI_REASON
# Faults that strike a stream after chunks reached the client: `cut` sends five chunks first in
# both dialects. (Ollama's `malformed` sends one broken line between good ones: it is skipped.)
KIMI_MID_STREAM = frozenset({"cut"})
QWEN_MID_STREAM = frozenset({"cut"})
CASES_FAULTS = (*FAULT_NAMES, "cut_early")


def status_for(*kinds: str) -> int:
    """What the service answers when every attempt failed: the SPEC's 502/503/504."""
    if set(kinds) == {"timeout"}:
        return 504
    if set(kinds) <= {"overloaded", "rate_limited", "quota_exceeded", "circuit_open"}:
        return 503
    return 502


@dataclass(frozen=True)
class Case:
    fault: str
    surface: str  # "api" (/api/ai/query, Kimi then Qwen) or "v1" (/v1, pinned to Kimi)
    stream: bool
    fallback: bool  # whether Qwen is healthy

    @property
    def fails_mid_stream(self) -> str | None:
        """The service whose stream breaks after the client saw data and is not rescued."""
        if not self.stream:
            return None
        if self.fault in KIMI_MID_STREAM and (self.surface == "v1" or not self.fallback):
            return "kimi"  # Qwen's continuation breaks too (fault on both), or there is none
        if self.surface == "api" and not self.fallback and self.fault in QWEN_MID_STREAM:
            return "qwen"
        return None

    @property
    def rescued_mid_stream(self) -> bool:
        """Kimi's stream broke after its first chunk and Qwen finished the answer."""
        return self.stream and self.fallback and self.fault in KIMI_MID_STREAM

    @property
    def id(self) -> str:
        mode = "stream" if self.stream else "plain"
        return f"{self.fault}-{self.surface}-{mode}-{'fallback' if self.fallback else 'alone'}"

    def request(self) -> tuple[str, dict[str, Any], dict[str, str]]:
        fault = "cut" if self.fault == "cut_early" else self.fault
        fields: dict[str, object] = {"fault_models": "kimi"} if self.fallback else {}
        if self.fault == "cut_early":
            fields["cut_after"] = 0
        text = (
            unique(f"Explain why the build is slow [{self.id}]") + " " + directive(fault, **fields)
        )
        if self.surface == "api":
            body = {"query": text, "query_type": "reasoning", "use_cache": False}
            return "/api/ai/query", {**body, "stream": self.stream}, {}
        messages = [{"role": "user", "content": text}]
        body = {"model": "kimi", "messages": messages, "stream": self.stream}
        return "/v1/chat/completions", body, ALONE


CASES = [
    Case(fault, surface, stream, fallback)
    for fault in CASES_FAULTS
    for surface, fallbacks in (("api", (True, False)), ("v1", (False,)))
    for fallback in fallbacks
    for stream in (False, True)
    if not (fault == "cut_early" and not stream)
]


@dataclass
class Matrix:
    service: Service
    outcomes: dict[str, Outcome]
    metrics_before: str
    metrics_after: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mock, Service]]:
    tmp = tmp_path_factory.mktemp("faults")
    with mock_upstream(tmp) as mock, aiorch_service(tmp, mock, name="faults") as service:
        yield mock, service


@pytest.fixture(scope="module")
def matrix(stack: tuple[Mock, Service]) -> Matrix:
    mock, service = stack
    before = service.metrics()
    requests = [case.request() for case in CASES]
    outcomes = asyncio.run(send_all(service.url, requests, concurrency=len(requests)))
    # Nothing is left hanging upstream either: every abandoned call was cancelled.
    wait_until(lambda: mock.stats()["in_flight"] == 0, "the mock to finish every request")
    return Matrix(
        service,
        {case.id: outcome for case, outcome in zip(CASES, outcomes, strict=True)},
        before,
        service.metrics(),
    )


def _error(outcome: Outcome) -> dict[str, Any]:
    assert isinstance(outcome.body, dict), outcome.text[:500]
    error: dict[str, Any] = outcome.body["error"]
    assert error["message"]  # says what went wrong
    return error


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_every_case_ends_in_an_answer_or_a_clear_error(matrix: Matrix, case: Case) -> None:
    outcome = matrix.outcomes[case.id]
    assert outcome.transport_error is None, outcome.transport_error
    assert outcome.seconds < ANTI_HANG_S, f"took {outcome.seconds:.1f} s"
    broken = case.fails_mid_stream

    if broken is not None:
        # Data reached the client and nobody could finish it: an explicit error, never a short
        # answer presented as whole.
        assert outcome.status == 200
        assert outcome.error_events, outcome.text[-500:]
        error = json.loads(outcome.error_events[-1].data)["error"]
        assert error["code"] == "stream_interrupted"
        assert "broke off" in error["message"]
        if case.surface == "api":
            meta = outcome.event("meta")
            assert meta is not None
            assert meta["selected_service"] == "kimi"  # whose first chunk reached the client
            assert outcome.event("done") is None
        else:
            assert "data: [DONE]" not in outcome.text
        return

    if case.rescued_mid_stream:
        # Kimi broke off after its first chunks; Qwen continued from there to the end.
        assert outcome.status == 200
        assert not outcome.error_events, outcome.text[-500:]
        done = outcome.event("done")
        assert done is not None
        assert done["finish_reason"] == "stop"
        assert done["fallback"] == {
            "from_service": "kimi",
            "to_service": "qwen",
            "reason": "stream_cut",
        }
        return

    if case.fallback:
        reason = KIMI_REASON[case.fault]
        expected = {"from_service": "kimi", "to_service": "qwen", "reason": reason}
        assert outcome.status == 200, outcome.text[:500]
        if case.stream:
            meta = outcome.event("meta")
            assert meta is not None
            assert meta["selected_service"] == "qwen"
            assert meta["fallback"] == expected
            assert outcome.event("done") is not None
            assert not outcome.error_events
        else:
            assert outcome.body["selected_service"] == "qwen"
            assert outcome.body["fallback"] == expected
            assert outcome.body["answer"]
        return

    if case.stream and case.fault == "malformed" and case.surface == "api":
        # Kimi's stream had no whole event: Qwen answered, passing over its one broken line.
        assert outcome.status == 200, outcome.text[:500]
        done = outcome.event("done")
        assert done is not None
        assert done["finish_reason"] == "stop"
        assert done["fallback"]["reason"] == "bad_response"
        assert any("malformed" in note for note in done["adjustments"])
        return

    # No healthy fallback: a JSON error (before any output, streams answer in JSON too).
    error = _error(outcome)
    assert error["code"] == "all_backends_failed"
    kinds = [a["error_type"] for a in error["attempts"]]
    if case.surface == "api":
        assert kinds == [KIMI_REASON[case.fault], QWEN_TYPE[case.fault]]
        assert [a["service"] for a in error["attempts"]] == ["kimi", "qwen"]
    else:
        assert kinds == [KIMI_REASON[case.fault]]
    assert outcome.status == status_for(*kinds)


def test_fallback_metric_counts_each_move_with_its_reason(matrix: Matrix) -> None:
    expected: Counter[str] = Counter()
    for case in CASES:
        if case.surface != "api":
            continue  # Kimi alone: nowhere to move
        if case.stream and case.fault in KIMI_MID_STREAM:
            expected["stream_cut"] += 1  # continued on Qwen (and broken again, without fallback)
        else:
            expected[KIMI_REASON[case.fault]] += 1
    before = counters(matrix.metrics_before, "orchestrator_fallback_total")
    after = counters(matrix.metrics_after, "orchestrator_fallback_total")
    moved: Counter[str] = Counter()
    for labels, value in after.items():
        increase = int(value - before.get(labels, 0.0))
        if not increase:
            continue  # series start at zero for every move the configuration allows
        label = dict(labels)
        assert (label["from_service"], label["to_service"]) == ("kimi", "qwen")
        moved[label["reason"]] += increase
    assert +moved == +expected


def test_no_request_is_left_in_flight(matrix: Matrix) -> None:
    wait_until(
        lambda: matrix.service.metric("orchestrator_in_flight_requests") == 0,
        "in-flight requests to drain",
    )


def test_quota_is_never_retried_and_rate_limits_are(matrix: Matrix) -> None:
    retries = counters(matrix.metrics_after, "orchestrator_retries_total")
    reasons = {dict(labels)["reason"] for labels, value in retries.items() if value > 0}
    assert "quota_exceeded" not in reasons
    assert reasons & {"rate_limited", "overloaded", "upstream_error", "connection_error"}


# ---------------------------------------------------------------------------- deadlines


async def test_total_deadline_ends_a_hung_call(stack: tuple[Mock, Service]) -> None:
    _, service = stack
    body = {
        "query": unique("Explain why") + " " + directive("hang"),
        "model": "kimi",
        "use_cache": False,
    }
    async with httpx.AsyncClient(base_url=service.url, timeout=ANTI_HANG_S + 10) as client:
        outcome = await send(client, "/api/ai/query", body, headers=ALONE)
    assert outcome.status == 504
    assert f"did not answer within {TIMEOUT_S:g} s" in _error(outcome)["message"]


async def test_first_token_deadline_is_shorter_than_the_total(stack: tuple[Mock, Service]) -> None:
    _, service = stack
    body = {
        "query": unique("Explain why") + " " + directive("slow_first_token"),
        "model": "kimi",
        "stream": True,
    }
    async with httpx.AsyncClient(base_url=service.url, timeout=ANTI_HANG_S + 10) as client:
        outcome = await send(client, "/api/ai/query", body, headers=ALONE)
    assert outcome.status == 504
    assert f"sent nothing within {FIRST_TOKEN_S:g} s" in _error(outcome)["message"]


async def test_a_healthy_stream_may_outlast_the_plain_deadline(
    stack: tuple[Mock, Service],
) -> None:
    _, service = stack
    # 30 tokens at 10 a second: three seconds, more than the two-second plain-call deadline,
    # but never silent for longer than the idle limit: the stream is not cut.
    body = {
        "query": unique("Explain why") + " " + directive(tokens=30, tokens_per_second=10),
        "model": "kimi",
        "stream": True,
    }
    async with httpx.AsyncClient(base_url=service.url, timeout=ANTI_HANG_S + 10) as client:
        outcome = await send(client, "/api/ai/query", body, headers=ALONE)
    assert outcome.status == 200
    assert not outcome.error_events, outcome.text[-300:]
    done = outcome.event("done")
    assert done is not None
    assert done["finish_reason"] == "stop"
    assert outcome.seconds > TIMEOUT_S


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose accept queue is full: a connection attempt gets no answer at all."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))  # takes the only queue slot
    try:
        yield port
    finally:
        filler.close()
        listener.close()


def test_connect_deadline_fires_long_before_the_total(
    tmp_path_factory: pytest.TempPathFactory, unanswered_port: int
) -> None:
    tmp = tmp_path_factory.mktemp("connect")
    toml = "[kimi]\nconnect_timeout = 0.3\n[retry]\nattempts = 1\n"
    with aiorch_service(
        tmp,
        None,
        toml=toml,
        name="connect",
        KIMI_BASE_URL=f"http://127.0.0.1:{unanswered_port}/v1",
        KIMI_API_KEY="sk-unused",
        KIMI_TIMEOUT="30",
    ) as service:
        started = time.perf_counter()
        with service.client() as client:
            response = client.post(
                "/api/ai/query",
                json={"query": unique("Explain why"), "model": "kimi"},
                headers=ALONE,
            )
        elapsed = time.perf_counter() - started
    assert response.status_code == 504
    assert response.json()["error"]["attempts"][0]["error_type"] == "timeout"
    assert elapsed < 15, "the 30 s total deadline, not the 0.3 s connect deadline, ended it"


# ---------------------------------------------------------------------------- coalescing


async def test_identical_concurrent_queries_share_one_upstream_call(
    stack: tuple[Mock, Service],
) -> None:
    mock, service = stack
    marker = unique("Explain why coalescing works")
    body = {"query": f"{marker} {directive(latency_ms=1500)}", "query_type": "reasoning"}
    coalesced_before = service.metric("orchestrator_coalesced_total")
    hits_before = service.metric("orchestrator_cache_hits_total")
    count = 12
    outcomes = await send_all(service.url, [("/api/ai/query", body)] * count, concurrency=count)
    assert [o.status for o in outcomes] == [200] * count
    assert len({o.body["answer"] for o in outcomes}) == 1
    assert len({o.body["request_id"] for o in outcomes}) == count  # each keeps its own id
    assert len(mock.requests_mentioning(marker)) == 1
    coalesced = service.metric("orchestrator_coalesced_total") - coalesced_before
    hits = service.metric("orchestrator_cache_hits_total") - hits_before
    # All but the first shared its call; on a badly loaded machine a straggler arriving after
    # the answer (1.5 s later) finds it in the cache instead.
    assert coalesced + hits == count - 1
    assert coalesced >= count // 2


# ---------------------------------------------------------------------------- breaker


BREAKER_TOML = """
[retry]
attempts = 1
[breaker]
minimum_calls = 3
reset_seconds = 1.0
half_open_calls = 1
probe_interval = 0  # the timer alone: tests/integration/test_breaker_probes.py has the probes
"""


def test_breaker_opens_skips_the_backend_and_probes_it_back(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tmp = tmp_path_factory.mktemp("breaker")
    with (
        mock_upstream(tmp) as mock,
        aiorch_service(tmp, mock, toml=BREAKER_TOML, name="breaker") as service,
    ):

        def ask(fault: str | None = None, **fields: object) -> httpx.Response:
            text = unique("Explain why") + " " + directive(fault, **fields)
            body = {"query": text, "model": "kimi", "use_cache": False}
            with service.client() as client:
                return client.post("/api/ai/query", json=body, headers=ALONE)

        def kimi_calls() -> int:
            return int(mock.stats()["by_model"].get("kimi-k2-thinking", 0))

        def state() -> float:
            return service.metric("orchestrator_circuit_breaker_state", service="kimi")

        assert state() == 0
        for _ in range(3):
            assert ask("http_500").status_code == 502
        assert state() == 2  # open
        calls = kimi_calls()
        refused = ask()
        assert refused.status_code == 503
        assert refused.json()["error"]["attempts"][0]["error_type"] == "circuit_open"
        assert kimi_calls() == calls  # skipped at once, not called

        # With a fallback on the route, the open breaker is one more reason to move on.
        moved = service.query({"query": unique("Explain why"), "query_type": "reasoning"})
        assert moved.status_code == 200
        assert moved.json()["fallback"]["reason"] == "circuit_open"

        # After reset_seconds one slow trial call goes through; meanwhile everyone else is
        # refused.
        async def probe_while_others_wait() -> tuple[Outcome, list[Outcome]]:
            async with httpx.AsyncClient(base_url=service.url, timeout=ANTI_HANG_S) as client:
                body = {
                    "query": unique("Explain why") + " " + directive(latency_ms=1000),
                    "model": "kimi",
                }
                probe = asyncio.ensure_future(send(client, "/api/ai/query", body, headers=ALONE))
                await asyncio.sleep(0.3)
                others = [
                    await send(
                        client,
                        "/api/ai/query",
                        {"query": unique("Why"), "model": "kimi"},
                        headers=ALONE,
                    )
                    for _ in range(2)
                ]
                return await probe, others

        time.sleep(1.1)
        probe, others = asyncio.run(probe_while_others_wait())
        assert [o.status for o in others] == [503, 503]
        assert probe.status == 200
        assert state() == 0  # closed again
        assert ask().status_code == 200


# ---------------------------------------------------------------------------- hedging


HEDGE_TOML = """
[hedge]
enabled = true
min_samples = 5
min_delay = 0.05
"""


def test_hedged_request_answers_from_the_next_service_when_the_first_is_slow(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tmp = tmp_path_factory.mktemp("hedge")
    with (
        mock_upstream(tmp) as mock,
        aiorch_service(tmp, mock, toml=HEDGE_TOML, name="hedge", KIMI_TIMEOUT="10") as service,
    ):

        def ask() -> httpx.Response:
            body = {"query": unique("Explain why"), "query_type": "reasoning", "use_cache": False}
            return service.query(body)

        for _ in range(5):  # Kimi's recent latencies: quick
            assert ask().json()["selected_service"] == "kimi"
        # Now Kimi is slow (but not failing): the hedge to Qwen answers first.
        httpx.post(
            f"{mock.url}/_mock/config",
            json={"model_config": {"kimi-k2-thinking": {"latency_ms": 3000}}},
        ).raise_for_status()
        started = time.perf_counter()
        response = ask()
        elapsed = time.perf_counter() - started
        assert response.status_code == 200
        body = response.json()
        assert body["selected_service"] == "qwen"
        assert body["fallback"] == {
            "from_service": "kimi",
            "to_service": "qwen",
            "reason": "hedged",
        }
        assert elapsed < 3.0  # did not wait for Kimi's three seconds
        assert service.metric("orchestrator_fallback_total", reason="hedged") == 1
        wait_until(lambda: mock.stats()["in_flight"] == 0, "the slow Kimi call to be cancelled")
