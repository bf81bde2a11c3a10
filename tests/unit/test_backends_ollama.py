"""`OllamaBackend` over real HTTP against the mock's `/api/chat`: NDJSON, `think`, timings in ns."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from aiorch.answer import Delta, End, Event, Skipped
from aiorch.backends.ollama import OllamaBackend
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
from tests.unit.backend_support import (
    ask,
    black_hole,
    call,
    collect,
    complete,
    drain,
    ollama_settings,
    running_mock,
    sent_bodies,
    stream,
    text_of,
)


@pytest.fixture
async def qwen(mock_url: str) -> AsyncIterator[OllamaBackend]:
    backend = OllamaBackend(ollama_settings(mock_url))
    yield backend
    await backend.close()


async def test_complete_returns_answer_usage_and_timings(qwen: OllamaBackend) -> None:
    completion = await complete(qwen, ask("Write a Python function that sorts a list"))

    assert completion.content
    assert completion.reasoning_content is None  # think is off for Qwen by default
    assert completion.model == "qwen2.5-coder:7b"
    assert completion.finish_reason == "stop"
    assert completion.usage.prompt_tokens == 8  # prompt_eval_count
    assert completion.usage.completion_tokens == len(completion.content.split())  # eval_count
    timings = completion.timings
    assert timings is not None
    assert timings.total is not None
    assert timings.prompt_eval is not None
    assert timings.eval is not None
    assert timings.load is not None
    # Nanoseconds became seconds: the mock answered at once, so well under a second each.
    assert 0 < timings.total < 10
    assert timings.eval < 10


async def test_cold_start_shows_as_load_time_in_seconds(mock_url: str) -> None:
    backend = OllamaBackend(ollama_settings(mock_url))
    cold = await complete(backend, ask("hi [[mock: cold_start_ms=300]]"))
    warm = await complete(backend, ask("hi again [[mock: cold_start_ms=300]]"))
    await backend.close()

    assert cold.timings is not None
    assert warm.timings is not None
    assert cold.timings.load is not None
    assert warm.timings.load is not None
    assert cold.timings.total is not None
    # 300 ms of load reported as 300_000_000 ns must come out as 0.3 s, not 3e8 s or 3e-10 s.
    assert 0.3 <= cold.timings.load < 30
    assert warm.timings.load < cold.timings.load
    assert cold.timings.total >= cold.timings.load


async def test_request_body_is_ollama_shaped(qwen: OllamaBackend, mock_url: str) -> None:
    await complete(qwen, ask("hello", max_tokens=77, temperature=0.5))

    (body,) = await sent_bodies(mock_url)
    assert body["model"] == "qwen2.5-coder:7b"
    assert body["messages"] == [{"role": "user", "content": "hello"}]
    assert body["stream"] is False
    assert "think" not in body  # qwen2.5-coder cannot think: Ollama refuses think: true
    # num_ctx from the model's context window: Ollama's default would cut long prompts.
    assert body["options"] == {"num_predict": 77, "temperature": 0.5, "num_ctx": 32768}


async def test_think_returns_the_thinking(mock_url: str) -> None:
    backend = OllamaBackend(
        ollama_settings(mock_url, ollama_model="kimi-k2-thinking:cloud", thinking=True)
    )
    thinking = await complete(backend, ask("Why?"))
    instant = await complete(backend, ask("Why?", thinking=Thinking("disabled")))
    await backend.close()

    assert thinking.reasoning_content
    assert instant.reasoning_content is None
    first, second = await sent_bodies(mock_url)
    assert (first["think"], second["think"]) == (True, False)


async def test_num_predict_cut_ends_with_length(qwen: OllamaBackend) -> None:
    completion = await complete(qwen, ask("hi", max_tokens=4))

    assert completion.finish_reason == "length"
    assert completion.usage.completion_tokens == 4


async def test_stream_chunks_thinking_first_and_usage_last(mock_url: str) -> None:
    settings = ollama_settings(mock_url, ollama_model="kimi-k2-thinking:cloud", thinking=True)
    backend = OllamaBackend(settings)
    events = await collect(backend, "Why is the sky blue?")
    whole = await complete(backend, ask("Why is the sky blue?"))
    await backend.close()

    *deltas, finish, end = events
    text = [d for d in deltas if isinstance(d, Delta) and d.has_output]
    assert len(text) > 10
    kinds = ["reasoning" if c.reasoning else "content" for c in text]
    assert kinds == sorted(kinds, key=lambda k: k != "reasoning")
    assert isinstance(finish, Delta)
    assert finish.finish_reason == "stop"
    assert isinstance(end, End)
    assert end.usage.completion_tokens == len(text)
    assert text_of(events) == whole.content
    assert text_of(events, reasoning=True) == whole.reasoning_content
    streamed, whole_body = await sent_bodies(mock_url)
    assert (streamed["stream"], whole_body["stream"]) == (True, False)


FAULTS = [
    ("rate_limit", BackendRateLimited, True),  # 429 "too many requests"
    ("overloaded", BackendOverloaded, True),  # 503 "server busy ... pending requests"
    ("quota", QuotaExceeded, False),  # 429 "you have reached your usage limit"
    ("http_500", BackendStatusError, True),
    ("reset", BackendConnectionError, True),
    ("malformed", BackendProtocolError, True),
]
# A malformed line in a stream is skipped, not an error (the test after this one).
CASES = [(*f, streaming) for f in FAULTS for streaming in (False, True)]
CASES = [c for c in CASES if not (c[0] == "malformed" and c[3])]


@pytest.mark.parametrize(("fault", "kind", "retryable", "streaming"), CASES)
async def test_faults_map_to_errors(
    qwen: OllamaBackend,
    fault: str,
    kind: type[BackendError],
    retryable: bool,
    streaming: bool,
) -> None:
    with pytest.raises(BackendError) as caught:
        await call(qwen, f"hi [[mock: fault={fault}]]", streaming)

    error = caught.value
    assert type(error) is kind, error
    assert is_retryable(error) is retryable
    assert (error.service, error.model) == ("qwen", "qwen2.5-coder:7b")


async def test_a_malformed_line_mid_stream_is_skipped_and_reported(qwen: OllamaBackend) -> None:
    events = [event async for event in stream(qwen, ask("hi [[mock: fault=malformed]]"))]

    assert any(isinstance(e, Skipped) for e in events)
    assert isinstance(events[-1], End)
    finish = events[-2]
    assert isinstance(finish, Delta)
    assert finish.finish_reason == "stop"


async def test_stream_cut_before_done_is_an_error(qwen: OllamaBackend) -> None:
    received: list[Event] = []
    with pytest.raises((StreamCut, BackendConnectionError)):
        await drain(stream(qwen, ask("hi [[mock: fault=cut cut_after=3]]")), received)

    assert len(received) == 3
    assert all(isinstance(c, Delta) and c.finish_reason is None for c in received)


async def test_model_not_pulled_is_a_404_not_retried(mock_url: str) -> None:
    backend = OllamaBackend(ollama_settings(mock_url, ollama_model="llama9:1b"))
    with pytest.raises(UpstreamRequestError) as caught:
        await complete(backend, ask("hi"))
    readiness = await backend.probe()
    await backend.close()

    assert caught.value.status == 404
    assert not is_retryable(caught.value)
    assert "not found" in caught.value.message
    assert readiness.ready is False
    assert "not pulled" in readiness.detail


async def test_probe_reports_whether_the_model_is_loaded(mock_url: str) -> None:
    backend = OllamaBackend(ollama_settings(mock_url))
    before = await backend.probe()
    await complete(backend, ask("hi"))
    after = await backend.probe()
    await backend.close()

    assert (before.ready, before.model_loaded) == (True, False)
    assert (after.ready, after.model_loaded) == (True, True)
    assert (after.kind, after.url, after.detail) == ("ollama", mock_url, "ok")


async def test_probe_of_a_dead_upstream_never_raises() -> None:
    async with running_mock(MockConfig()) as url:
        pass
    backend = OllamaBackend(ollama_settings(url))
    readiness = await backend.probe()
    await backend.close()

    assert readiness.ready is False
    assert readiness.model_loaded is None
    assert "connection failed" in readiness.detail


async def test_probe_of_an_upstream_that_never_answers_gives_up() -> None:
    with black_hole() as url:
        backend = OllamaBackend(ollama_settings(url, connect_timeout=0.2))
        readiness = await asyncio.wait_for(backend.probe(), timeout=30)
        await backend.close()

    assert readiness.ready is False
    assert "timed out" in readiness.detail
