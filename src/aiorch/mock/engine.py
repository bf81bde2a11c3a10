"""The part of answering a chat request that both dialects share.

`prepare` turns a decoded request into a `Job`: the behaviour after all override layers, the
fault (if any) and the prompt. The dialect modules then only render bytes. On the zero-delay path
nothing here sleeps, parses a directive or allocates a new `Behaviour`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web

from aiorch.mock.settings import (
    DIRECTIVE_MARK,
    Behaviour,
    FaultName,
    directives,
    header_overrides,
    merge,
)
from aiorch.mock.state import RECENT_BODY_BYTES, MockState, Recent
from aiorch.mock.text import Answer

STATE = web.AppKey("aiorch_mock_state", MockState)


@dataclass(slots=True)
class Job:
    state: MockState
    model: str
    behaviour: Behaviour
    fault: FaultName | None
    prompt: str
    last_user: str
    system: str
    prompt_tokens: int
    thinking: bool
    max_tokens: int | None
    started: float  # time.perf_counter() when the request arrived

    def answer(self) -> Answer:
        b = self.behaviour
        answer = self.state.generator.answer(
            model=self.model,
            prompt=self.prompt,
            last_user=self.last_user,
            system=self.system,
            tokens=b.tokens,
            reasoning_tokens=b.reasoning_tokens,
            thinking=self.thinking,
            max_tokens=self.max_tokens,
        )
        stats = self.state.stats
        stats.prompt_tokens += self.prompt_tokens
        stats.completion_tokens += answer.completion_tokens
        return answer

    async def wait_first_token(self) -> None:
        b = self.behaviour
        ttft = b.slow_first_token_ms if self.fault == "slow_first_token" else b.ttft_ms
        if ttft or b.jitter_ms:
            await asyncio.sleep((ttft + self.state.jitter(b)) / 1000)

    async def wait_generation(self, tokens: int) -> None:
        """The time the tokens after the first take to generate (non-streaming answers)."""
        if self.behaviour.tokens_per_second and tokens > 1:
            await asyncio.sleep((tokens - 1) / self.behaviour.tokens_per_second)

    @property
    def token_interval_s(self) -> float:
        rate = self.behaviour.tokens_per_second
        return 1.0 / rate if rate else 0.0

    async def wait_latency(self) -> None:
        b = self.behaviour
        if b.latency_ms or b.jitter_ms:
            await asyncio.sleep((b.latency_ms + self.state.jitter(b)) / 1000)

    async def load_model(self) -> float:
        """Seconds spent waiting for a cold model (0 when it is warm)."""
        return await self.state.ensure_loaded(self.model, self.behaviour.cold_start_ms)


def record(state: MockState, request: web.Request, endpoint: str, body: bytes) -> None:
    stats = state.stats
    stats.requests_total += 1
    stats.by_endpoint[endpoint] += 1
    kept = body if len(body) <= RECENT_BODY_BYTES else b""
    state.recent.append(Recent(time.time(), endpoint, request.headers, kept, len(body)))


def prepare(
    state: MockState,
    request: web.Request,
    model: str,
    messages: list[tuple[str, str]],
    *,
    thinking: bool,
    max_tokens: int | None,
) -> Job:
    """Resolve the behaviour for one request; raises `ConfigError` for a bad header or directive."""
    state.stats.by_model[model] += 1
    last_user = ""
    last_user_index = -1
    for index in range(len(messages) - 1, -1, -1):
        if messages[index][0] == "user":
            last_user_index, last_user = index, messages[index][1]
            break
    overrides: dict[str, str] = {}
    if DIRECTIVE_MARK in last_user:
        overrides, last_user = directives(last_user)
        messages = list(messages)
        messages[last_user_index] = ("user", last_user)
    headers = header_overrides(request.headers.items())
    overrides.update(headers)

    behaviour = state.behaviour_for(model)
    prompt = "\n".join(f"{role}: {text}" for role, text in messages)
    prompt_key: int | None = None
    if overrides:
        if "fault" in overrides:
            # A fault asked for by one request fires every time unless it says otherwise, and
            # its fault_limit counts per prompt ("fail this prompt once, then answer").
            # The run's fault_rate, fault_limit and fault_models do not apply to it.
            overrides = {"fault_rate": "1", "fault_limit": "0", "fault_models": "", **overrides}
            prompt_key = hash(prompt)
        where = "X-Mock-* header" if headers else "[[mock: ...]] directive"
        behaviour = merge(behaviour, overrides, where)
    fault = state.choose_fault(behaviour, model, prompt_key) if behaviour.fault else None
    return Job(
        state=state,
        model=model,
        behaviour=behaviour,
        fault=fault,
        prompt=prompt,
        last_user=last_user,
        system="\n".join(text for role, text in messages if role == "system"),
        prompt_tokens=sum(len(text.split()) for _, text in messages),
        thinking=thinking,
        max_tokens=max_tokens,
        started=time.perf_counter(),
    )


async def emit(response: web.StreamResponse, items: Iterable[bytes], interval: float) -> None:
    """Write `items` at one per `interval` seconds from now; whatever is due is written at once,
    so a zero interval costs a single write."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    buffer: list[bytes] = []
    for index, item in enumerate(items):
        if interval and index:
            delay = start + index * interval - loop.time()
            if delay > 0:
                if buffer:
                    await response.write(b"".join(buffer))
                    buffer.clear()
                await asyncio.sleep(delay)
        buffer.append(item)
    if buffer:
        await response.write(b"".join(buffer))
