"""`OpenAIBackend` over real HTTP against the mock in Moonshot's dialect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
import pytest
from aiohttp import web

from aiorch.answer import Delta, End, Event
from aiorch.backends.openai_compat import OpenAIBackend
from aiorch.errors import (
    BackendConnectionError,
    BackendError,
    BackendOverloaded,
    BackendProtocolError,
    BackendRateLimited,
    BackendStatusError,
    QuotaExceeded,
    StreamCut,
    UpstreamRequestError,
    is_retryable,
)
from aiorch.mock import MockConfig
from aiorch.request import Thinking
from aiorch.types import Usage
from tests.unit.backend_support import (
    ask,
    black_hole,
    call,
    collect,
    complete,
    drain,
    openai_settings,
    running_mock,
    sent_bodies,
    serve_app,
    stream,
    text_of,
    wait_for_stats,
)


@pytest.fixture
async def kimi(mock_url: str) -> AsyncIterator[OpenAIBackend]:
    backend = OpenAIBackend(openai_settings(mock_url))
    yield backend
    await backend.close()


async def test_complete_returns_answer_reasoning_and_usage(kimi: OpenAIBackend) -> None:
    completion = await complete(kimi, ask("Why is the sky blue?"))

    assert completion.content
    assert completion.reasoning_content  # a thinking model's reasoning_content
    assert completion.reasoning_content != completion.content
    assert completion.model == "kimi-k2-thinking"
    assert completion.finish_reason == "stop"
    assert completion.usage.prompt_tokens == 5
    assert completion.usage.completion_tokens == len(completion.content.split()) + len(
        completion.reasoning_content.split()
    )


async def test_request_body_is_openai_shaped(kimi: OpenAIBackend, mock_url: str) -> None:
    await complete(kimi, ask("hello", max_tokens=123, temperature=0.25))

    (body,) = await sent_bodies(mock_url)
    assert body["model"] == "kimi-k2-thinking"
    assert body["messages"] == [{"role": "user", "content": "hello"}]
    assert body["max_tokens"] == 123
    assert body["temperature"] == 0.25
    assert body["stream"] is False
    assert "thinking" not in body  # kimi-k2-thinking has no switch: it always thinks


async def test_defaults_come_from_the_settings(mock_url: str) -> None:
    backend = OpenAIBackend(openai_settings(mock_url, max_tokens=999, temperature=1.0))
    await complete(backend, ask("hello"))
    await backend.close()

    (body,) = await sent_bodies(mock_url)
    assert (body["max_tokens"], body["temperature"]) == (999, 1.0)


async def test_thinking_switch_for_kimi_k2_6(mock_url: str) -> None:
    backend = OpenAIBackend(openai_settings(mock_url, model="kimi-k2.6"))
    thinking = await complete(backend, ask("Why?", thinking=Thinking("enabled")))
    instant = await complete(backend, ask("Why?", thinking=Thinking("disabled")))
    await backend.close()

    assert thinking.reasoning_content
    assert instant.reasoning_content is None
    first, second = await sent_bodies(mock_url)
    assert first["thinking"] == {"type": "enabled"}
    assert second["thinking"] == {"type": "disabled"}
    # kimi-k2.6 fixes its sampling and wants the newer token-limit name.
    assert "temperature" not in first
    assert first["max_completion_tokens"] > 0
    assert "max_tokens" not in first


async def test_budget_shared_with_thinking_ends_with_length(kimi: OpenAIBackend) -> None:
    completion = await complete(kimi, ask("Why?", max_tokens=5))

    assert completion.finish_reason == "length"
    assert completion.usage.completion_tokens == 5


async def test_stream_sends_reasoning_then_content_then_usage(kimi: OpenAIBackend) -> None:
    events = await collect(kimi, "Why is the sky blue?")

    *deltas, finish, end = events
    assert isinstance(end, End)
    assert isinstance(finish, Delta)
    assert all(isinstance(d, Delta) for d in deltas)
    text = [d for d in deltas if isinstance(d, Delta) and d.has_output]
    assert len(text) > 10  # one delta per token, not one per answer
    kinds = ["reasoning" if c.reasoning else "content" for c in text]
    assert kinds == sorted(kinds, key=lambda k: k != "reasoning")  # thinking comes first
    assert all(c.finish_reason is None for c in text)
    assert finish.finish_reason == "stop"
    assert end.usage.completion_tokens == len(text)

    whole = await complete(kimi, ask("Why is the sky blue?"))
    assert text_of(events) == whole.content
    assert text_of(events, reasoning=True) == whole.reasoning_content


async def test_stream_asks_for_usage(kimi: OpenAIBackend, mock_url: str) -> None:
    await collect(kimi, "hi")

    (body,) = await sent_bodies(mock_url)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def moonshot_stream(request: web.Request) -> web.StreamResponse:
    """Moonshot's own stream: no top-level usage anywhere, only `choices[0].usage` at the end."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    head = {"id": "c1", "object": "chat.completion.chunk", "model": "kimi-k2-thinking"}
    deltas = [{"role": "assistant", "content": ""}, {"reasoning_content": "hm"}, {"content": "ok"}]
    for delta in deltas:
        chunk = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        await response.write(b"data: " + msgspec.json.encode(chunk) + b"\n\n")
    usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    final = {
        **head,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "usage": usage}],
    }
    await response.write(b"data: " + msgspec.json.encode(final) + b"\n\ndata: [DONE]\n\n")
    return response


async def test_usage_in_the_last_choice_is_read() -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", moonshot_stream)
    async with serve_app(app) as url:
        backend = OpenAIBackend(openai_settings(url))
        events = await collect(backend, "hi")
        await backend.close()

    deltas = [e for e in events if isinstance(e, Delta) and e.has_output]
    assert [(d.reasoning, d.content) for d in deltas] == [("hm", ""), ("", "ok")]
    end = events[-1]
    assert isinstance(end, End)
    assert end.usage == Usage(7, 2, 0)


@pytest.mark.parametrize(
    ("fault", "kind", "retryable"),
    [
        ("rate_limit", BackendRateLimited, True),  # 429 rate_limit_reached_error
        ("overloaded", BackendOverloaded, True),  # 429 engine_overloaded_error
        ("quota", QuotaExceeded, False),  # 429 exceeded_current_quota_error
        ("http_500", BackendStatusError, True),
        ("http_502", BackendStatusError, True),
        ("http_503", BackendOverloaded, True),
        ("reset", BackendConnectionError, True),
        ("malformed", BackendProtocolError, True),
    ],
)
@pytest.mark.parametrize("streaming", [False, True])
async def test_faults_map_to_errors(
    kimi: OpenAIBackend,
    fault: str,
    kind: type[BackendError],
    retryable: bool,
    streaming: bool,
) -> None:
    with pytest.raises(BackendError) as caught:
        await call(kimi, f"Why? [[mock: fault={fault} retry_after_s=3]]", streaming)

    error = caught.value
    assert type(error) is kind, error
    assert is_retryable(error) is retryable
    assert (error.service, error.model) == ("kimi", "kimi-k2-thinking")
    assert "kimi" in error.message
    if fault == "rate_limit":
        assert error.retry_after == 3.0
        assert "rate_limit_reached_error" in error.message


async def test_stream_cut_midway_raises_after_the_first_chunks(kimi: OpenAIBackend) -> None:
    received: list[Event] = []
    with pytest.raises((StreamCut, BackendConnectionError)):
        await drain(stream(kimi, ask("Why? [[mock: fault=cut cut_after=3]]")), received)

    assert 1 <= len(received) <= 3
    assert all(isinstance(c, Delta) and c.finish_reason is None for c in received)


async def test_wrong_key_and_unknown_model_are_not_retryable(mock_url: str) -> None:
    wrong_key = OpenAIBackend(openai_settings(mock_url, api_key="sk-wrong"))
    unknown = OpenAIBackend(openai_settings(mock_url, model="kimi-k9"))
    with pytest.raises(BackendStatusError) as unauthorised:
        await complete(wrong_key, ask("hi"))
    with pytest.raises(UpstreamRequestError) as missing:
        await complete(unknown, ask("hi"))
    await wrong_key.close()
    await unknown.close()

    # Our key refused: the service is misconfigured, not the client's request.
    assert unauthorised.value.upstream_status == 401
    assert not is_retryable(unauthorised.value)
    # A model the upstream does not serve: the client's request, passed on as it was said.
    assert missing.value.status == 404
    assert not is_retryable(missing.value)
    assert "kimi-k9" in missing.value.message


async def test_cancelling_a_call_closes_the_upstream_request(
    kimi: OpenAIBackend, mock_url: str
) -> None:
    task = asyncio.create_task(complete(kimi, ask("Why? [[mock: fault=hang]]")))
    await wait_for_stats(mock_url, lambda s: s["in_flight"] == 1, "the call to reach the mock")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    stats = await wait_for_stats(mock_url, lambda s: s["in_flight"] == 0, "the mock to see it go")
    assert stats["client_disconnects"] == 1


async def test_probe(mock_url: str) -> None:
    good = OpenAIBackend(openai_settings(mock_url))
    wrong_key = OpenAIBackend(openai_settings(mock_url, api_key="sk-wrong"))
    ready, refused = await good.probe(), await wrong_key.probe()
    await good.close()
    await wrong_key.close()

    assert (ready.ready, ready.detail, ready.kind) == (True, "ok", "openai")
    assert ready.url == f"{mock_url}/v1"
    assert refused.ready is False
    assert "401" in refused.detail


async def test_probe_of_a_dead_upstream_never_raises() -> None:
    async with running_mock(MockConfig()) as url:
        pass  # the port is free again
    backend = OpenAIBackend(openai_settings(url))
    readiness = await backend.probe()
    await backend.close()

    assert readiness.ready is False
    assert "connection failed" in readiness.detail


async def test_probe_of_an_upstream_that_never_answers_gives_up() -> None:
    with black_hole() as url:
        backend = OpenAIBackend(openai_settings(url, connect_timeout=0.2))
        readiness = await asyncio.wait_for(backend.probe(), timeout=30)
        await backend.close()

    assert readiness.ready is False
    assert "timed out" in readiness.detail
