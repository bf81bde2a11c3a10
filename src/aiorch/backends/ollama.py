"""Ollama's native `/api/chat`: NDJSON streaming, `think`, and timings in nanoseconds.

The timing fields (`total_duration`, `load_duration`, `prompt_eval_duration`, `eval_duration`)
arrive only in the final `"done": true` object; `load_duration` tells a cold start apart from a
slow model.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import msgspec

from aiorch.backends.base import Readiness
from aiorch.backends.http import HttpTransport, iter_lines, translate_errors
from aiorch.config import BackendSettings
from aiorch.errors import BackendError, BackendProtocolError, BackendStatusError
from aiorch.types import Completion, CompletionRequest, StreamChunk, Timings, Usage

NS = 1e-9


class _Message(msgspec.Struct):
    content: str = ""
    thinking: str | None = None


class _Chunk(msgspec.Struct):
    model: str = ""
    message: _Message | None = None
    done: bool = False
    done_reason: str | None = None
    error: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int = 0
    prompt_eval_duration: int | None = None
    eval_count: int = 0
    eval_duration: int | None = None

    def timings(self, first_token: float | None = None) -> Timings:
        return Timings(
            total=(self.total_duration or 0) * NS,
            first_token=first_token,
            load=None if self.load_duration is None else self.load_duration * NS,
            prompt_eval=None
            if self.prompt_eval_duration is None
            else self.prompt_eval_duration * NS,
            eval=None if self.eval_duration is None else self.eval_duration * NS,
        )

    def usage(self) -> Usage:
        return Usage(self.prompt_eval_count, self.eval_count, 0)


class _Model(msgspec.Struct):
    name: str = ""
    model: str = ""


class _Models(msgspec.Struct):
    models: list[_Model] = []


_decode_chunk = msgspec.json.Decoder(_Chunk).decode
_decode_models = msgspec.json.Decoder(_Models).decode


class OllamaBackend:
    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings
        self._http = HttpTransport(settings)

    def _body(self, request: CompletionRequest, stream: bool) -> dict[str, object]:
        s = self.settings
        think = s.thinking if request.thinking is None else request.thinking
        return {
            "model": s.model_id,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": stream,
            "think": think,
            "options": {
                "num_predict": request.max_tokens or s.max_tokens,
                "temperature": s.temperature
                if request.temperature is None
                else request.temperature,
            },
        }

    def _check(self, chunk: _Chunk) -> None:
        if chunk.error:
            s = self.settings
            raise BackendStatusError(
                f"{s.service.value} ({s.model_id}) reported an error: {chunk.error[:300]}",
                upstream_status=500,
                service=s.service.value,
                model=s.model_id,
            )

    async def complete(self, request: CompletionRequest) -> Completion:
        s = self.settings
        started = time.perf_counter()
        async with self._http.post("/api/chat", self._body(request, False)) as response:
            async with translate_errors(s.service.value, s.model_id):
                chunk = _decode_chunk(await response.read())
        self._check(chunk)
        message = chunk.message or _Message()
        timings = chunk.timings()
        if not timings.total:
            timings = Timings(total=time.perf_counter() - started, load=timings.load)
        return Completion(
            content=message.content,
            reasoning_content=message.thinking or None,
            model=chunk.model or s.model_id,
            usage=chunk.usage(),
            finish_reason=chunk.done_reason or "stop",
            timings=timings,
        )

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        s = self.settings
        done: _Chunk | None = None
        async with self._http.post("/api/chat", self._body(request, True)) as response:
            async with translate_errors(s.service.value, s.model_id):
                async for line in iter_lines(response):
                    chunk = _decode_chunk(line)
                    self._check(chunk)
                    message = chunk.message
                    if message is not None and (message.content or message.thinking):
                        yield StreamChunk(
                            content=message.content,
                            reasoning_content=message.thinking or "",
                            model=chunk.model or s.model_id,
                        )
                    if chunk.done:
                        done = chunk
                        break
        if done is None:
            raise BackendProtocolError(
                f"{s.service.value} ({s.model_id}) stream ended before done",
                service=s.service.value,
                model=s.model_id,
            )
        yield StreamChunk(
            finish_reason=done.done_reason or "stop", usage=done.usage(), model=s.model_id
        )

    async def probe(self) -> Readiness:
        """Reachable, model pulled, and whether it is loaded (a cold start explains a slow call)."""
        s = self.settings
        ready, detail, loaded = False, "", None
        try:
            # Bounded: an upstream that accepts and never answers must not hang /readyz.
            async with (
                translate_errors(s.service.value, s.model_id),
                asyncio.timeout(s.connect_timeout),
            ):
                async with self._http.session.get(f"{s.url}/api/tags") as response:
                    tags = _decode_models(await response.read())
                names = {m.name for m in tags.models} | {m.model for m in tags.models}
                ready = s.model_id in names
                detail = "ok" if ready else f"model {s.model_id} is not pulled on this server"
                async with self._http.session.get(f"{s.url}/api/ps") as response:
                    if response.status < 400:
                        running = _decode_models(await response.read())
                        loaded = s.model_id in {m.name for m in running.models} | {
                            m.model for m in running.models
                        }
        except BackendError as error:
            if not ready:  # a slow /api/ps leaves the answer to /api/tags standing
                detail = error.message
        return Readiness.of(s, ready=ready, detail=detail, model_loaded=loaded)

    async def close(self) -> None:
        await self._http.close()
