"""The offline backend: deterministic, instant, and labelled offline in every answer."""

from __future__ import annotations

from aiorch.answer import Delta, End
from aiorch.backends import build_backend
from aiorch.backends.offline import OfflineBackend
from aiorch.config import load_settings
from aiorch.types import BackendKind
from tests.unit.backend_support import ask, collect, complete, text_of


def offline(service: str = "qwen") -> OfflineBackend:
    backend = build_backend(load_settings({}).service(service))
    assert isinstance(backend, OfflineBackend)
    return backend


async def test_answer_says_it_is_offline_and_is_deterministic() -> None:
    backend = offline("kimi")
    first = await complete(backend, ask("Why is the sky blue?"))
    again = await complete(backend, ask("Why is the sky blue?"))
    other = await complete(backend, ask("Why is grass green?"))

    assert first.content.startswith("[offline: no model is configured for kimi]")
    assert first.model == "offline-kimi"
    assert first.content == again.content
    assert first.content != other.content
    assert first.usage.prompt_tokens == 5
    assert backend.notes(ask("x"))  # every answer is told it came from no model


async def test_stream_is_word_by_word_and_joins_to_the_answer() -> None:
    backend = offline()
    events = await collect(backend, "hello there")
    whole = await complete(backend, ask("hello there"))

    *words, finish, end = events
    assert len(words) > 5
    assert text_of(events) == whole.content
    assert isinstance(finish, Delta)
    assert finish.finish_reason == "stop"
    assert isinstance(end, End)
    assert end.usage == whole.usage


async def test_probe_is_ready_and_says_offline() -> None:
    readiness = await offline().probe()

    assert readiness.ready is True
    assert readiness.kind == BackendKind.OFFLINE.value
    assert readiness.url is None
    assert "offline" in readiness.detail
