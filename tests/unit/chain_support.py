"""Fakes for the chain's unit tests: backends that fail, hang or answer on cue, and a rig of
guarded services over them (its breakers' background tasks stopped after each test)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry

from aiorch.answer import Collector, Delta, End, Event
from aiorch.backends import Call, Readiness
from aiorch.catalog import Catalog
from aiorch.config import Settings, load_settings
from aiorch.errors import BackendError, StreamCut, UnsupportedParameter, UpstreamRequestError
from aiorch.models import Model
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.request import ChatMessage, ChatRequest
from aiorch.service_settings import ServiceSettings
from aiorch.services import Services
from aiorch.shared_breakers import BreakerStore
from aiorch.strategies import Chain, Ended, HedgeDelay, Started
from aiorch.types import Usage


class FakeBackend:
    """Fails with the queued errors (or hangs), then answers; counts its calls.

    A stream sends `words` one delta each; `cut_after` breaks it off after that many.
    """

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.errors: list[BackendError | UpstreamRequestError] = []
        self.hang = False
        self.delay = 0.0
        self.calls: list[Call] = []
        self.cancelled = 0
        self.words = [f"{settings.name}", " answer"]
        self.cut_after: int | None = None
        self.ready = True  # what its readiness probe (the breaker's active probe) says

    def refusal(self, request: ChatRequest) -> UnsupportedParameter | None:
        return None

    def notes(self, request: ChatRequest) -> tuple[str, ...]:
        return ()

    async def generate(self, call: Call) -> AsyncIterator[Event]:
        self.calls.append(call)
        try:
            await asyncio.sleep(3600 if self.hang else self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.errors:
            raise self.errors.pop(0)
        words = self.words
        if call.prefill:  # continue where the other left off
            words = ["".join(words)[len(call.prefill) :]]
        if not call.stream:
            yield Delta(content="".join(words), finish_reason="stop")
        else:
            for i, word in enumerate(words):
                if self.cut_after is not None and i == self.cut_after:
                    raise StreamCut("cut", service=self.settings.name, model=call.model.id)
                yield Delta(content=word)
            yield Delta(finish_reason="stop")
        yield End(Usage(1, len(words)), call.model.id)

    async def probe(self) -> Readiness:
        return Readiness.of(self.settings, ready=self.ready, detail="fake")

    async def close(self) -> None:
        return None


def settings(**sections: dict[str, object]) -> Settings:
    base = msgspec.to_builtins(load_settings({}))
    for name, values in sections.items():
        if name in ("kimi", "qwen"):
            base["services"][name] = {**base["services"][name], **values}
        else:
            base[name] = {**base[name], **values}
    return msgspec.convert(base, Settings)


class Rig:
    def __init__(self, s: Settings, store: BreakerStore | None = None) -> None:
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.backends = {name: FakeBackend(service) for name, service in s.services.items()}
        self.services = Services(s, self.metrics, self.backends, store)
        hedge = s.hedge
        delay = HedgeDelay(hedge.quantile, hedge.min_samples, hedge.min_delay)
        self.chain = Chain(self.services, self.metrics, delay if hedge.enabled else None)
        self.catalog = Catalog(s)

    @property
    def kimi_first(self) -> tuple[Model, ...]:
        return self.catalog.named("kimi").targets

    @property
    def kimi_alone(self) -> tuple[Model, ...]:
        return self.catalog.named("kimi", fallback=False).targets

    async def run(
        self, targets: tuple[Model, ...], *, stream: bool = False
    ) -> tuple[Started, str, Ended]:
        collector = Collector()
        started: Started | None = None
        ended: Ended | None = None
        async for event in self.chain.run(targets, request(stream), "rid"):
            if isinstance(event, Started):
                started = event
            elif isinstance(event, Delta):
                collector.add(event)
            else:
                ended = event
        assert started is not None
        assert ended is not None
        return started, collector.text, ended

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def request(stream: bool = False, **fields: Any) -> ChatRequest:
    return ChatRequest(
        messages=(ChatMessage(role="user", content="hi"),), model="kimi", stream=stream, **fields
    )


MakeRig = Callable[..., Rig]


@contextlib.asynccontextmanager
async def rigs() -> AsyncIterator[MakeRig]:
    """A factory of rigs, every one closed (its breakers' tasks stopped) at the end."""
    made: list[Rig] = []

    def make(s: Settings, store: BreakerStore | None = None) -> Rig:
        rig = Rig(s, store)
        made.append(rig)
        return rig

    try:
        yield make
    finally:
        await asyncio.gather(*(rig.services.close() for rig in made))
