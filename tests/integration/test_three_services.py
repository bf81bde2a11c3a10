"""Three services from configuration alone: Kimi and a second Kimi deployment (`kimi-eu`, on
another mock, OpenAI-compatible) and Qwen (Ollama), with aliases and per-model fallback chains.

Routing, fallback, coalescing, cache admission and the finish reason behave the same on the plain
and the streamed ending; the third service shows in the shared metric families under its name.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.reliability_support import (
    UPSTREAM_KEY,
    aiorch_service,
    mock_upstream,
    send_all,
)
from tests.integration.service_support import Mock, Service, sse_events, unique

CONFIG = """
[kimi]
fallbacks = ["kimi-eu", "qwen"]
[[kimi.models]]
id = "kimi-k2-thinking"
aliases = ["thinker"]

[services.kimi-eu]
title = "Kimi (EU)"
base_url = "{eu}/v1"
api_key_env = "KIMI_EU_API_KEY"
model = "kimi-k2.6"
fallbacks = ["qwen"]
[[services.kimi-eu.models]]
id = "kimi-k2.6"
aliases = ["k26"]

[breaker]
enabled = false
"""


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mock, Mock, Service]]:
    tmp = tmp_path_factory.mktemp("three")
    with mock_upstream(tmp) as home, mock_upstream(tmp) as eu:
        with aiorch_service(
            tmp,
            home,
            toml=CONFIG.format(eu=eu.url),
            name="three",
            KIMI_EU_API_KEY=UPSTREAM_KEY,
            KIMI_TIMEOUT="10",
            QWEN_TIMEOUT="10",
        ) as service:
            yield home, eu, service


def chat(service: Service, body: dict[str, Any]) -> dict[str, Any]:
    """One `/v1` answer, plain or streamed, reduced to the same facts either way."""
    with httpx.Client(base_url=service.url, timeout=30) as client:
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    if not body.get("stream"):
        data = response.json()
        choice = data["choices"][0]
        return {
            "model": data["model"],
            "service": data["aiorch"]["service"],
            "text": choice["message"]["content"],
            "finish_reason": choice["finish_reason"],
            "fallback": data["aiorch"]["fallback"],
            "cached": data["aiorch"]["cached"],
        }
    text, finish, summary = "", None, {}
    for event in sse_events(response.text.split("\n")):
        if event.data == "[DONE]":
            continue
        chunk = json.loads(event.data)
        for choice in chunk["choices"]:
            text += choice["delta"].get("content") or ""
            finish = choice["finish_reason"] or finish
        summary = chunk.get("aiorch") or summary
    return {
        "model": response.headers["x-aiorch-model"],
        "service": response.headers["x-aiorch-service"],
        "text": text,
        "finish_reason": finish,
        "fallback": summary.get("fallback"),
        "cached": response.headers["x-aiorch-cache"] == "hit",
    }


def body(model: str, text: str, stream: bool, **fields: Any) -> dict[str, Any]:
    extra = {"stream_options": {"include_usage": True}} if stream else {}
    return {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "stream": stream,
        **extra,
        **fields,
    }


ENDINGS = pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])


@ENDINGS
def test_aliases_route_to_their_service(three: tuple[Mock, Mock, Service], stream: bool) -> None:
    _, _, service = three
    k26 = chat(service, body("k26", unique("Why?"), stream))
    thinker = chat(service, body("thinker", unique("Why?"), stream))
    named = chat(service, body("kimi-eu/kimi-k2.6", unique("Why?"), stream))

    assert (k26["service"], k26["model"]) == ("kimi-eu", "kimi-k2.6")
    assert (thinker["service"], thinker["model"]) == ("kimi", "kimi-k2-thinking")
    assert named["service"] == "kimi-eu"
    assert all(r["finish_reason"] == "stop" for r in (k26, thinker, named))


@ENDINGS
def test_a_failing_model_falls_back_along_its_own_chain(
    three: tuple[Mock, Mock, Service], stream: bool
) -> None:
    _, _, service = three
    text = unique("Why? [[mock: fault=http_500 fault_models=kimi-k2-thinking]]")
    answer = chat(service, body("thinker", text, stream))

    assert answer["service"] == "kimi-eu"  # the next in kimi's chain, not qwen
    assert answer["fallback"] == {
        "from_service": "kimi",
        "to_service": "kimi-eu",
        "reason": "upstream_error",
    }
    labels = {"from_service": "kimi", "to_service": "kimi-eu", "reason": "upstream_error"}
    assert service.metric("orchestrator_fallback_total", **labels) >= 1
    assert service.metric("ai_backend_calls_total", service="kimi-eu", status="success") >= 1


@ENDINGS
def test_only_deterministic_requests_are_cached_and_replays_keep_the_finish_reason(
    three: tuple[Mock, Mock, Service], stream: bool
) -> None:
    _, _, service = three
    fixed = body("k26", unique("Why?"), stream, max_completion_tokens=3, seed=1)
    sampled = body("k26", unique("Why?"), stream, max_completion_tokens=3)

    first, again = chat(service, fixed), chat(service, fixed)
    fresh, fresh_again = chat(service, sampled), chat(service, sampled)

    assert (first["cached"], again["cached"]) == (False, True)
    assert first["finish_reason"] == again["finish_reason"] == "length"  # truncated, truthfully
    assert first["text"] == again["text"]
    assert (fresh["cached"], fresh_again["cached"]) == (False, False)


def test_identical_requests_in_flight_share_one_upstream_call_across_endings(
    three: tuple[Mock, Mock, Service],
) -> None:
    _, eu, service = three
    marker = unique("Why is coalescing fair?")
    text = f"{marker} [[mock: latency_ms=800]]"
    requests = [
        ("/v1/chat/completions", body("k26", text, stream, seed=5)) for stream in (False, True) * 4
    ]

    outcomes = asyncio.run(send_all(service.url, requests, concurrency=len(requests)))

    assert [o.status for o in outcomes] == [200] * len(requests)
    assert len(eu.requests_mentioning(marker)) == 1  # eight requests, one upstream call
    plain = {o.body["choices"][0]["message"]["content"] for o in outcomes if o.body}
    streamed = {
        "".join(
            (c["delta"].get("content") or "")
            for e in o.events
            if e.data != "[DONE]"
            for c in json.loads(e.data)["choices"]
        )
        for o in outcomes
        if o.events
    }
    assert len(plain) == 1
    assert plain == streamed  # the same answer, whichever ending each took
