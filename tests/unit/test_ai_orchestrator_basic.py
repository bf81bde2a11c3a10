"""The guide's synthetic checks of the cache and the multi-service path (section 2)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
from prometheus_client import CollectorRegistry

from aiorch.backends import Readiness
from aiorch.config import BackendSettings, load_settings
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.orchestrator import AIOrchestrator
from aiorch.types import Completion, CompletionRequest, QueryResult, Service, StreamChunk, Usage


class StubBackend:
    """Answers at once and remembers what it was asked; stands in for a model in unit tests."""

    def __init__(self, settings: BackendSettings, delay: float = 0.0) -> None:
        self.settings = settings
        self.delay = delay
        self.calls: list[CompletionRequest] = []
        self.active = 0
        self.peak_active = 0

    async def complete(self, request: CompletionRequest) -> Completion:
        self.calls.append(request)
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.active -= 1
        return Completion(
            content=f"{self.settings.service.value} says hi",
            model=self.settings.model_id,
            usage=Usage(3, 4),
        )

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        completion = await self.complete(request)
        yield StreamChunk(content=completion.content, model=completion.model)
        yield StreamChunk(finish_reason="stop", usage=completion.usage, model=completion.model)

    async def probe(self) -> Readiness:
        raise NotImplementedError

    async def close(self) -> None:
        return None


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_process_query_uses_cache_on_second_call() -> None:
    registry = CollectorRegistry()
    orchestrator = AIOrchestrator(load_settings({}), metrics=Metrics(registry))

    first = await orchestrator.process_query("Why is the sky blue?", query_type="reasoning")
    hits_before = sample(registry, "orchestrator_cache_hits_total")
    second = await orchestrator.process_query("Why is the sky blue?", query_type="reasoning")

    assert first.cached is False
    assert second.cached is True
    assert second.answer == first.answer
    assert sample(registry, "orchestrator_cache_hits_total") == hits_before + 1
    # The answer is the one stored in orchestrator.cache.
    assert len(orchestrator.cache) == 1  # type: ignore[arg-type]
    (key,) = orchestrator.cache._entries  # type: ignore[attr-defined]
    stored = msgspec.json.decode(await orchestrator.cache.get(key), type=QueryResult)
    assert stored.answer == second.answer
    # Without the cache entry the same call goes to the backend again.
    await orchestrator.cache.clear()
    third = await orchestrator.process_query("Why is the sky blue?", query_type="reasoning")
    assert third.cached is False
    await orchestrator.close()


async def test_process_query_unknown_uses_multi_service_stub() -> None:
    registry = CollectorRegistry()
    settings = load_settings({})
    stubs = {s: StubBackend(settings.backend(s), delay=0.05) for s in Service}
    orchestrator = AIOrchestrator(settings, backends=stubs, metrics=Metrics(registry))
    misses_before = sample(registry, "orchestrator_cache_misses_total")

    result = await orchestrator.process_query("hmm", query_type="unknown")

    assert result.selected_service == "multi"
    assert sample(registry, "orchestrator_cache_misses_total") == misses_before + 1
    assert (
        sample(
            registry, "orchestrator_queries_total", query_type="unknown", selected_service="multi"
        )
        == 1
    )
    # Both services were asked, and both answers are in the reply.
    assert all(len(stub.calls) == 1 for stub in stubs.values())
    assert result.answers == {"kimi": "kimi says hi", "qwen": "qwen says hi"}
    assert "kimi says hi" in result.answer
    assert "qwen says hi" in result.answer
    assert result.usage == Usage(6, 8)
    await orchestrator.close()


async def test_an_answer_the_caller_does_not_accept_is_returned_but_not_cached() -> None:
    settings = load_settings({"KIMI_API_KEY": "k", "QWEN_OLLAMA_URL": "http://qwen.invalid"})
    backends = {s: StubBackend(settings.backend(s)) for s in Service}
    orchestrator = AIOrchestrator(settings, backends=backends, metrics=Metrics(CollectorRegistry()))
    judged: list[str] = []

    def refuse(text: str) -> bool:
        judged.append(text)
        return False

    rejected = await orchestrator.process_query("Explain CAP", "reasoning", accept=refuse)
    again = await orchestrator.process_query("Explain CAP", "reasoning", accept=lambda _: True)
    third = await orchestrator.process_query("Explain CAP", "reasoning")

    assert rejected.answer == "kimi says hi"  # the caller still gets the answer to judge
    assert judged == ["kimi says hi"]
    assert (rejected.cached, again.cached, third.cached) == (False, False, True)
    assert len(backends[Service.KIMI].calls) == 2
    await orchestrator.close()
