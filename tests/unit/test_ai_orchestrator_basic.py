"""The guide's synthetic checks of the cache and the multi-service path (section 2)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec
from prometheus_client import CollectorRegistry

from aiorch.answer import Answer, Delta, End, Event
from aiorch.backends import Call, Readiness
from aiorch.config import load_settings
from aiorch.errors import UnsupportedParameter
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.orchestrator import AIOrchestrator
from aiorch.request import ChatRequest
from aiorch.service_settings import ServiceSettings
from aiorch.types import Usage


class StubBackend:
    """Answers at once and remembers what it was asked; stands in for a model in unit tests."""

    def __init__(self, settings: ServiceSettings, delay: float = 0.0) -> None:
        self.settings = settings
        self.delay = delay
        self.calls: list[ChatRequest] = []
        self.active = 0
        self.peak_active = 0

    def refusal(self, request: ChatRequest) -> UnsupportedParameter | None:
        return None

    def notes(self, request: ChatRequest) -> tuple[str, ...]:
        return ()

    async def generate(self, call: Call) -> AsyncIterator[Event]:
        self.calls.append(call.request)
        self.active += 1
        self.peak_active = max(self.peak_active, self.active)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.active -= 1
        yield Delta(content=f"{self.settings.name} says hi", finish_reason="stop")
        yield End(Usage(3, 4), call.model.id)

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
    stored = msgspec.json.decode(await orchestrator.cache.get(key), type=Answer)
    assert stored.text == second.answer
    # Without the cache entry the same call goes to the backend again.
    await orchestrator.cache.clear()
    third = await orchestrator.process_query("Why is the sky blue?", query_type="reasoning")
    assert third.cached is False
    await orchestrator.close()


async def test_process_query_unknown_uses_multi_service_stub() -> None:
    registry = CollectorRegistry()
    settings = load_settings({})
    stubs = {name: StubBackend(s, delay=0.05) for name, s in settings.services.items()}
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
    backends = {n: StubBackend(s) for n, s in settings.services.items()}
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
    assert len(backends["kimi"].calls) == 2
    await orchestrator.close()
