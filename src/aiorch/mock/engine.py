"""The part of answering a chat request that both dialects share.

`prepare` turns a decoded request into a `Job`: the behaviour after all override layers, the
fault (if any) and the prompt. The dialect modules then only render bytes. On the zero-delay path
nothing here sleeps, parses a directive or allocates a new `Behaviour`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web

from aiorch.mock.answers import Choice, Question, compose
from aiorch.mock.capabilities import ModelCaps
from aiorch.mock.conversation import Spec, Turn, key_text, prompt_tokens
from aiorch.mock.settings import (
    DIRECTIVE_MARK,
    Behaviour,
    FaultName,
    directives,
    header_overrides,
    merge,
)
from aiorch.mock.state import RECENT_BODY_BYTES, MockState, Recent

STATE = web.AppKey("aiorch_mock_state", MockState)


@dataclass(slots=True)
class Job:
    state: MockState
    model: str
    caps: ModelCaps
    behaviour: Behaviour
    fault: FaultName | None
    turns: list[Turn]  # as sent, directive removed
    history: list[Turn]  # without a trailing prefill
    prefill: str | None
    last_user: str
    system: str
    spec: Spec
    prompt_tokens: int
    started: float  # time.perf_counter() when the request arrived
    first_token_at: float = 0.0  # time.perf_counter() when the first token was due

    def digest(self) -> bytes:
        text = key_text(self.history)
        if self.behaviour.vary_by_model:
            text = f"{self.model}\x1f{text}"
        if self.spec.seed is not None:
            text = f"{self.spec.seed}\x1e{text}"
        # A digest, not the prompt, keys the answer cache: prompts can be megabytes long.
        return hashlib.blake2b(text.encode(), digest_size=16).digest()

    def answer(self, id_style: str) -> tuple[Choice, ...]:
        b = self.behaviour
        question = Question(
            digest=self.digest(),
            model=self.model,
            turns=self.history,
            last_user=self.last_user,
            system=self.system,
            spec=self.spec,
            prefill=self.prefill,
            tokens=b.tokens,
            reasoning_tokens=b.reasoning_tokens,
            id_style=id_style,
        )
        choices = compose(question, self.state.generator)
        stats = self.state.stats
        stats.prompt_tokens += self.prompt_tokens
        for choice in choices:
            stats.completion_tokens += choice.completion_tokens
        if self.prefill is not None:
            stats.continuations += 1
        return choices

    async def wait_first_token(self) -> None:
        b = self.behaviour
        ttft = b.slow_first_token_ms if self.fault == "slow_first_token" else b.ttft_ms
        if ttft or b.jitter_ms:
            await asyncio.sleep((ttft + self.state.jitter(b)) / 1000)
        self.first_token_at = time.perf_counter()

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
    turns: list[Turn],
    spec: Spec,
    *,
    prefill: str | None = None,
) -> Job:
    """Resolve the behaviour for one request; raises `ConfigError` for a bad header or directive.
    `prefill` is the trailing assistant text the dialect found to continue (the last turn)."""
    state.stats.by_model[model] += 1
    last_user: Turn | None = None
    for turn in reversed(turns):
        if turn.role == "user":
            last_user = turn
            break
    overrides: dict[str, str] = {}
    if last_user is not None and DIRECTIVE_MARK in last_user.text:
        overrides, last_user.text = directives(last_user.text)
    headers = header_overrides(request.headers.items())
    overrides.update(headers)

    behaviour = state.behaviour_for(model)
    history = turns[:-1] if prefill is not None else turns
    prompt_key: int | None = None
    if overrides:
        if "fault" in overrides:
            # A fault asked for by one request fires every time unless it says otherwise, and
            # its fault_limit counts per prompt ("fail this prompt once, then answer").
            # The run's fault_rate, fault_limit and fault_models do not apply to it.
            overrides = {"fault_rate": "1", "fault_limit": "0", "fault_models": "", **overrides}
            prompt_key = hash(key_text(history))
        where = "X-Mock-* header" if headers else "[[mock: ...]] directive"
        behaviour = merge(behaviour, overrides, where)
    fault = state.choose_fault(behaviour, model, prompt_key) if behaviour.fault else None
    if behaviour.tool_calls:
        spec.tool_calls_wanted = behaviour.tool_calls
    return Job(
        state=state,
        model=model,
        caps=state.caps_for(model),
        behaviour=behaviour,
        fault=fault,
        turns=turns,
        history=history,
        prefill=prefill,
        last_user=last_user.text if last_user is not None else "",
        system="\n".join(t.text for t in turns if t.role == "system"),
        spec=spec,
        prompt_tokens=prompt_tokens(turns),
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
