"""Failover scenarios through the real service: each ends rescued with the whole answer where a
healthy fallback exists, or in a clean, bounded error where none does; none hangs, and none
ends in a truncated answer presented as whole.

Kimi (the Moonshot-style API) is asked first and Qwen (Ollama) is its fallback. Limits are a
tenth of production's so that the suite takes seconds: a first token within 2 s, at most 1 s of
silence mid-stream, 8 s for a plain answer. `-s` prints the scorecard (docs/reliability.md
reproduces it): scenario, outcome, attempts, wall time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.reliability_support import (
    ALONE,
    KIMI_MODEL,
    QWEN_MODEL,
    aiorch_service,
    directive,
    mock_upstream,
)
from tests.integration.service_support import Mock, Service, sse_events, unique

FIRST_TOKEN_S, IDLE_S, PLAIN_S = 2.0, 1.0, 8.0
TOML = f"""
[kimi]
first_token_timeout = {FIRST_TOKEN_S}
idle_timeout = {IDLE_S}
connect_timeout = 1.0
[qwen]
first_token_timeout = {FIRST_TOKEN_S}
idle_timeout = {IDLE_S}
connect_timeout = 1.0
fallbacks_on = {{ context_length_exceeded = ["kimi"] }}
[breaker]
enabled = false  # the flapping scenario has a stack of its own
"""
BOUND_S = 15.0  # no scenario may take longer: a hang fails here, not at pytest's timeout


@dataclass
class Result:
    status: int
    seconds: float
    text: str = ""
    finish_reason: str | None = None
    body: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    done: dict[str, Any] | None = None

    @property
    def outcome(self) -> str:
        if self.error is not None:
            return "clean error"
        return "answered" if self.finish_reason == "stop" else "FAILED"

    def attempts(self) -> list[tuple[str, str | None]]:
        source = self.done or self.body or {}
        found = source.get("attempts") or (self.error or {}).get("attempts") or []
        return [(a["service"], a.get("error_type")) for a in found]


SCORECARD: list[tuple[str, Result, str]] = []


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mock, Service]]:
    tmp = tmp_path_factory.mktemp("failover")
    with (
        mock_upstream(tmp) as mock,
        aiorch_service(
            tmp,
            mock,
            toml=TOML,
            name="failover",
            KIMI_TIMEOUT=str(PLAIN_S),
            QWEN_TIMEOUT=str(PLAIN_S),
        ) as service,
    ):
        yield mock, service
    print_scorecard()


def print_scorecard() -> None:
    print(
        "\n\nscenario                         outcome       attempts                              s"
    )
    for name, result, expected in SCORECARD:
        attempts = ", ".join(f"{s}:{e or 'ok'}" for s, e in result.attempts())
        print(f"{name:32} {result.outcome:13} {attempts:36} {result.seconds:5.2f}  ({expected})")


def ask(
    service: Service, text: str, *, stream: bool, model: str = "kimi", alone: bool = False
) -> Result:
    """`/api/ai/query` for Kimi with its chain (or alone), read to the end."""
    body = {"query": text, "model": model, "use_cache": False, "stream": stream}
    started = time.perf_counter()
    with httpx.Client(base_url=service.url, timeout=BOUND_S + 30) as client:
        response = client.post("/api/ai/query", json=body, headers=ALONE if alone else {})
    seconds = time.perf_counter() - started
    if response.headers["content-type"].startswith("application/json"):
        data = response.json()
        if "error" in data:
            return Result(response.status_code, seconds, body=data, error=data["error"])
        return Result(
            response.status_code, seconds, data["answer"], data["finish_reason"], body=data
        )
    result = Result(response.status_code, seconds)
    for event in sse_events(response.text.split("\n")):
        data = json.loads(event.data)
        if event.event == "error":
            result.error = data["error"]
        elif event.event == "done":
            result.done = data
            result.finish_reason = data["finish_reason"]
        elif event.event is None:
            result.text += data["delta"]
    return result


def uninterrupted(service: Service, text: str) -> str:
    """The answer the mock gives this conversation when nothing breaks (any model gives it)."""
    result = ask(service, text, stream=False, model="qwen", alone=True)
    assert result.status == 200, result.body
    return result.text


def record(name: str, result: Result, expected: str) -> Result:
    SCORECARD.append((name, result, expected))
    assert result.seconds < BOUND_S, f"{name} took {result.seconds:.1f} s"
    return result


def kimi_only(fault: str, **fields: object) -> str:
    return directive(fault, fault_models="kimi", **fields)


# ---------------------------------------------------------------------------- streams


def test_a_stream_cut_mid_answer_is_finished_by_the_fallback(stack: tuple[Mock, Service]) -> None:
    _, service = stack
    text = (
        unique("Explain the cut")
        + " "
        + kimi_only("cut", cut_after=40, tokens=60, tokens_per_second=200)
    )
    result = record("stream cut at 40 of 60", ask(service, text, stream=True), "rescued")

    assert result.error is None
    assert result.finish_reason == "stop"
    assert result.text == uninterrupted(service, text)  # the whole answer, nothing repeated
    assert result.done is not None
    assert result.done["fallback"]["reason"] == "stream_cut"


def test_a_stream_that_stalls_is_abandoned_at_the_idle_limit(stack: tuple[Mock, Service]) -> None:
    _, service = stack
    fault = kimi_only("stall", stall_after=20, stall_ms=30000, tokens=60)
    text = unique("Explain the stall") + " " + fault
    result = record("stream stalls after 20", ask(service, text, stream=True), "rescued")

    assert result.finish_reason == "stop"
    assert result.text == uninterrupted(service, text)
    assert result.done is not None
    assert result.done["fallback"]["reason"] == "stream_stall"
    assert result.seconds < IDLE_S + 5  # not the stall's 30 s


def test_a_slow_first_token_fails_over_at_the_first_token_limit(
    stack: tuple[Mock, Service],
) -> None:
    _, service = stack
    text = (
        unique("Explain the wait") + " " + kimi_only("slow_first_token", slow_first_token_ms=20000)
    )
    result = record("slow first token (20 s)", ask(service, text, stream=True), "rescued")

    assert result.finish_reason == "stop"
    assert result.done is not None
    assert result.done["fallback"]["reason"] == "timeout"
    assert result.seconds < FIRST_TOKEN_S + 5


def test_a_malformed_event_is_skipped_and_counted(stack: tuple[Mock, Service]) -> None:
    _, service = stack
    before = service.metric("aiorch_stream_events_skipped_total", service="kimi")
    text = unique("Explain the noise") + " " + kimi_only("malformed_event", malformed_at=10)
    result = record("one malformed event", ask(service, text, stream=True), "answered")

    assert result.finish_reason == "stop"
    assert result.text == uninterrupted(service, text)  # every real event arrived
    assert result.done is not None
    assert result.done["fallback"] is None
    assert any("malformed" in note for note in result.done["adjustments"])
    assert service.metric("aiorch_stream_events_skipped_total", service="kimi") == before + 1


def test_a_fallback_that_refuses_to_continue_does_not_mask_the_real_failure(
    stack: tuple[Mock, Service],
) -> None:
    mock, service = stack
    caps = {"capabilities": {QWEN_MODEL: {"prefill": "none"}}}
    httpx.post(f"{mock.url}/_mock/config", json=caps).raise_for_status()
    try:
        text = (
            unique("Explain the refusal")
            + " "
            + kimi_only("cut", cut_after=40, tokens=60, tokens_per_second=200)
        )
        result = record(
            "cut, fallback refuses prefill", ask(service, text, stream=True), "clean error"
        )
    finally:
        httpx.post(f"{mock.url}/_mock/config", json={"capabilities": {QWEN_MODEL: None}})

    assert result.error is not None
    assert result.error["code"] == "stream_interrupted"
    assert "broke off" in result.error["message"]
    assert "prefill" not in result.error["message"]  # the cut, not the fallback's 400
    assert result.finish_reason is None  # no `done`: never a short answer presented as whole


def test_a_cut_with_no_healthy_fallback_ends_in_an_explicit_error(
    stack: tuple[Mock, Service],
) -> None:
    _, service = stack
    text = (
        unique("Explain the double cut")
        + " "
        + directive("cut", cut_after=40, tokens=60, tokens_per_second=200)
    )
    result = record("cut on both models", ask(service, text, stream=True), "clean error")

    assert result.error is not None
    assert result.error["code"] == "stream_interrupted"
    assert result.finish_reason is None


def test_a_healthy_stream_is_not_cut_at_the_plain_deadline(stack: tuple[Mock, Service]) -> None:
    _, service = stack
    # 100 tokens at 10 a second: ten seconds, past the plain call's 8 s, never 1 s silent.
    text = unique("Explain slowly") + " " + directive(tokens=100, tokens_per_second=10)
    result = record("long healthy stream", ask(service, text, stream=True, alone=True), "answered")

    assert result.finish_reason == "stop"
    assert result.seconds > PLAIN_S


# ---------------------------------------------------------------------------- plain answers


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("http_500", "upstream_error"),
        ("http_503", "overloaded"),
        ("reset", "connection_error"),
        ("quota", "quota_exceeded"),
        ("hang", "timeout"),
    ],
)
def test_a_failing_primary_falls_back(stack: tuple[Mock, Service], fault: str, reason: str) -> None:
    _, service = stack
    text = unique("Explain the fault") + " " + kimi_only(fault)
    result = record(f"{fault} (plain)", ask(service, text, stream=False), "rescued")

    assert result.finish_reason == "stop"
    assert result.body["fallback"]["reason"] == reason
    assert result.body["selected_service"] == "qwen"


def test_a_rate_limit_is_retried_after_the_wait_it_asks_for(stack: tuple[Mock, Service]) -> None:
    _, service = stack
    text = (
        unique("Explain the limit") + " " + kimi_only("rate_limit", retry_after_s=1, fault_limit=1)
    )
    result = record("429, Retry-After 1 s", ask(service, text, stream=False), "answered")

    assert result.finish_reason == "stop"
    assert result.body["selected_service"] == "kimi"
    (attempt,) = result.body["attempts"]
    assert attempt["retries"] == 1
    assert result.seconds >= 1.0  # never sooner than asked


def test_a_content_policy_refusal_is_passed_on_without_fallback(
    stack: tuple[Mock, Service],
) -> None:
    mock, service = stack
    marker = unique("Explain the policy")
    result = record(
        "content-policy 400",
        ask(service, marker + " " + kimi_only("content_filter"), stream=False),
        "clean error",
    )

    assert result.status == 400
    assert result.error is not None
    assert result.error["code"] == "content_filter"  # the provider's own reason
    assert [r["body"]["model"] for r in mock.requests_mentioning(marker)] == [KIMI_MODEL]


def test_a_context_length_refusal_goes_where_the_configuration_says(
    stack: tuple[Mock, Service],
) -> None:
    _, service = stack
    text = unique("Explain the length") + " " + directive("context_length", fault_models="qwen")
    result = record(
        "context length, routed", ask(service, text, stream=False, model="qwen"), "rescued"
    )

    assert result.finish_reason == "stop"
    assert result.body["selected_service"] == "kimi"  # qwen's fallbacks_on names kimi
    assert result.body["fallback"]["reason"] == "upstream_request_error"


# ---------------------------------------------------------------------------- the retry budget


def budget_toml(min_concurrent: int) -> str:
    """Kimi alone with the default budget (0.2 retries per first attempt over 10 s) and the
    given floor; a breaker that cannot open on two failures."""
    return f"""
[retry]
budget_ratio = 0.2
budget_window = 10.0
budget_min_concurrent = {min_concurrent}
[breaker]
enabled = false
"""


def two_isolated_retries(tmp_path: Path, min_concurrent: int) -> tuple[Result, Result, int]:
    """Issue 16's scenario: five healthy requests, then one that fails once (and is retried
    within the ratio), then, a second later, another that fails once: its retry is over the
    ratio for the next 10 s; only the floor lets it through. Also: how many calls Kimi got for
    the second."""
    with (
        mock_upstream(tmp_path) as mock,
        aiorch_service(tmp_path, mock, toml=budget_toml(min_concurrent), name="budget") as service,
    ):
        for _ in range(5):
            assert ask(service, unique("Explain the calm"), stream=False, alone=True).status == 200
        once = kimi_only("http_503", fault_limit=1)
        first = ask(service, unique("Explain the first") + " " + once, stream=False, alone=True)
        time.sleep(1.0)
        marker = unique("Explain the second")
        second = ask(service, marker + " " + once, stream=False, alone=True)
        return first, second, len(mock.requests_mentioning(marker))


def test_an_isolated_request_keeps_its_retry_after_another_one_retried(tmp_path: Path) -> None:
    first, second, calls = two_isolated_retries(tmp_path, min_concurrent=3)
    record("503 once, another retried 1 s ago", second, "answered")

    for result in (first, second):
        assert result.finish_reason == "stop", result.body
        assert result.body["selected_service"] == "kimi"
        (attempt,) = result.body["attempts"]
        assert attempt["retries"] == 1
    assert calls == 2


def test_without_the_floor_the_ratio_alone_refuses_that_retry(tmp_path: Path) -> None:
    """The control: the scenario above does reach the budget (with no floor it fails)."""
    first, second, calls = two_isolated_retries(tmp_path, min_concurrent=0)

    assert first.finish_reason == "stop", first.body  # 1 retry for 6 first attempts: within 0.2
    assert second.error is not None, second.body  # 2 for 7: over it, and Kimi is alone
    assert second.error["code"] == "all_backends_failed"
    assert calls == 1  # no retry
