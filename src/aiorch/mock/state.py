"""Everything one mock process remembers: config, counters, loaded models, recent requests.

One `MockState` lives on the aiohttp application; nothing is kept at module level, so tests can
build as many independent mocks as they like.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from aiorch.mock.capabilities import ModelCaps, fallback_caps, resolve
from aiorch.mock.settings import Behaviour, FaultName, MockConfig, merge
from aiorch.mock.text import Generator

RECENT_REQUESTS = 200
RECENT_BODY_BYTES = 256 * 1024  # keeps the log small even when tests send huge contexts


@dataclass(slots=True)
class Stats:
    requests_total: int = 0
    in_flight: int = 0
    client_disconnects: int = 0
    by_endpoint: Counter[str] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    by_fault: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    refusals: Counter[str] = field(default_factory=Counter)  # 4xx the model rules gave, by why
    truncated_prompts: int = 0  # Ollama prompts cut silently to fit the context
    truncated_tokens: int = 0
    continuations: int = 0  # answers that continued an assistant prefill

    def as_json(self) -> dict[str, Any]:
        return {
            "requests_total": self.requests_total,
            "in_flight": self.in_flight,
            "client_disconnects": self.client_disconnects,
            "by_endpoint": dict(self.by_endpoint),
            "by_model": dict(self.by_model),
            "by_fault": dict(self.by_fault),
            "by_status": dict(self.by_status),
            "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
            "refusals": dict(self.refusals),
            "truncated": {"prompts": self.truncated_prompts, "tokens": self.truncated_tokens},
            "continuations": self.continuations,
        }


@dataclass(frozen=True, slots=True)
class Recent:
    at: float
    endpoint: str
    headers: Mapping[str, str]
    body: bytes  # up to RECENT_BODY_BYTES; longer bodies are not kept (their size is)
    size: int

    def as_json(self) -> dict[str, Any]:
        body: Any = None
        if self.size <= RECENT_BODY_BYTES:
            try:
                body = msgspec.json.decode(self.body)
            except msgspec.DecodeError:
                body = self.body.decode(errors="replace")
        headers = {k: v for k, v in self.headers.items() if k.lower() != "authorization"}
        return {
            "at": self.at,
            "endpoint": self.endpoint,
            "headers": headers,
            "body": body,
            "body_bytes": self.size,
        }


class MockState:
    def __init__(self, config: MockConfig, *, workers: int = 1) -> None:
        self.workers = workers
        self.started = time.time()
        self.startup_config = config
        self.stats = Stats()
        self.recent: deque[Recent] = deque(maxlen=RECENT_REQUESTS)
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid():x}"
        self._generation = 0
        self.apply(config)
        self.reset()

    def apply(self, config: MockConfig) -> None:
        """Install a config; per-model behaviours are resolved once here, not per request."""
        self.config = config
        self.behaviour = config.behaviour
        self.per_model: dict[str, Behaviour] = {
            model: merge(config.behaviour, fields, f"model_config.{model}")
            for model, fields in config.model_config.items()
        }
        self.models = frozenset(config.served_models())
        self.caps: dict[str, ModelCaps] = resolve(config.served_models(), config.capabilities)
        self.generator = Generator(config.responses)
        self.config_at = time.monotonic()  # `down_from: config` windows start here
        self.rng = random.Random(config.seed)
        self.fault_counts: Counter[tuple[str, int | None]] = Counter()

    def reset(self) -> None:
        self.stats = Stats(in_flight=self.stats.in_flight)
        self.recent.clear()
        self.fault_counts.clear()
        self.rng = random.Random(self.config.seed)
        self.loaded: dict[str, float] = {}  # model -> wall time it finished loading
        self.down_since: dict[str, float] = {}  # model -> when its `down` window opened
        self._loading: dict[str, asyncio.Task[None]] = {}
        self._generation += 1

    def next_id(self) -> str:
        return f"{self._prefix}{next(self._ids):016x}"

    def behaviour_for(self, model: str) -> Behaviour:
        return self.per_model.get(model, self.behaviour)

    def caps_for(self, model: str) -> ModelCaps:
        found = self.caps.get(model)
        return found if found is not None else fallback_caps(model)

    def still_down(self, behaviour: Behaviour, model: str) -> bool:
        """Whether `model` is inside its `down` window (opened by its first such request, or by
        the last config change with `down_from: config`)."""
        now = time.monotonic()
        if behaviour.down_from == "config":
            start = self.config_at
        else:
            start = self.down_since.setdefault(model, now)
        return now - start < behaviour.down_s

    def choose_fault(
        self, behaviour: Behaviour, model: str, prompt_key: int | None
    ) -> FaultName | None:
        """Pick a fault for this request, or none. `prompt_key` is set for request-level faults,
        so `fault_limit` counts per model and prompt ("fail this prompt once") rather than per
        model ("fail the first N calls")."""
        if behaviour.fault_models and not any(m in model for m in behaviour.fault_models):
            return None
        key = (model, prompt_key)
        if behaviour.fault_limit and self.fault_counts[key] >= behaviour.fault_limit:
            return None
        if behaviour.fault_rate < 1.0 and self.rng.random() >= behaviour.fault_rate:
            return None
        faults = behaviour.fault
        fault = faults[0] if len(faults) == 1 else self.rng.choice(faults)
        if fault == "down" and not self.still_down(behaviour, model):
            return None
        self.fault_counts[key] += 1
        self.stats.by_fault[fault] += 1
        return fault

    def jitter(self, behaviour: Behaviour) -> float:
        return self.rng.uniform(0.0, behaviour.jitter_ms) if behaviour.jitter_ms else 0.0

    async def ensure_loaded(self, model: str, cold_start_ms: float) -> float:
        """Wait for `model` to be loaded; returns the seconds spent waiting. Concurrent first
        calls share one load, as in Ollama; a caller that goes away does not abort it."""
        if model in self.loaded:
            return 0.0
        if cold_start_ms <= 0:
            self.loaded[model] = time.time()
            return 0.0
        task = self._loading.get(model)
        if task is None:
            task = asyncio.ensure_future(self._load(model, cold_start_ms / 1000, self._generation))
            self._loading[model] = task
        started = time.perf_counter()
        await asyncio.shield(task)
        return time.perf_counter() - started

    async def _load(self, model: str, seconds: float, generation: int) -> None:
        await asyncio.sleep(seconds)
        if generation == self._generation:  # a reset while loading forgets this load
            self.loaded[model] = time.time()
            self._loading.pop(model, None)
