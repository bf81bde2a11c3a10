"""The offline backend: deterministic, instant, and labelled offline in every answer."""

from __future__ import annotations

from aiorch.backends import build_backend
from aiorch.backends.offline import OfflineBackend
from aiorch.config import load_settings
from aiorch.types import BackendKind, CompletionRequest, Message, Service


def offline(service: Service = Service.QWEN) -> OfflineBackend:
    backend = build_backend(load_settings({}).backend(service))
    assert isinstance(backend, OfflineBackend)
    return backend


def ask(text: str) -> CompletionRequest:
    return CompletionRequest(messages=(Message("user", text),))


async def test_answer_says_it_is_offline_and_is_deterministic() -> None:
    backend = offline(Service.KIMI)
    first = await backend.complete(ask("Why is the sky blue?"))
    again = await backend.complete(ask("Why is the sky blue?"))
    other = await backend.complete(ask("Why is grass green?"))

    assert first.offline is True
    assert first.content.startswith("[offline: no model is configured for kimi]")
    assert first.model == "offline-kimi"
    assert first.content == again.content
    assert first.content != other.content
    assert first.usage.prompt_tokens == 5


async def test_stream_is_word_by_word_and_joins_to_the_answer() -> None:
    backend = offline()
    chunks = [c async for c in backend.stream(ask("hello there"))]
    whole = await backend.complete(ask("hello there"))

    *words, last = chunks
    assert len(words) > 5
    assert "".join(c.content for c in words) == whole.content
    assert last.finish_reason == "stop"
    assert last.usage == whole.usage


async def test_probe_is_ready_and_says_offline() -> None:
    readiness = await offline().probe()

    assert readiness.ready is True
    assert readiness.kind == BackendKind.OFFLINE.value
    assert readiness.url is None
    assert "offline" in readiness.detail
