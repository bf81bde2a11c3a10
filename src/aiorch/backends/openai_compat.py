"""OpenAI-compatible chat completions: Moonshot, DashScope compatible mode, vLLM, Ollama's /v1.

Moonshot's dialect: the thinking text arrives in `reasoning_content` (message and stream deltas),
and in streams the usage comes in the last chunk's `choices[0].usage`, not in a top-level `usage`.
We read both places, and ask for OpenAI's `include_usage` too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import msgspec

from aiorch.backends.base import Readiness
from aiorch.backends.http import HttpTransport, iter_lines, translate_errors
from aiorch.config import BackendSettings
from aiorch.errors import BackendError, BackendProtocolError
from aiorch.types import Completion, CompletionRequest, StreamChunk, Timings, Usage


class _TokenDetails(msgspec.Struct):
    reasoning_tokens: int = 0


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    completion_tokens_details: _TokenDetails | None = None

    def to_usage(self) -> Usage:
        details = self.completion_tokens_details
        reasoning = details.reasoning_tokens if details is not None else 0
        return Usage(self.prompt_tokens, self.completion_tokens, reasoning)


class _Message(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None


class _Choice(msgspec.Struct):
    message: _Message | None = None
    delta: _Message | None = None
    finish_reason: str | None = None
    usage: _Usage | None = None  # Moonshot's place for usage in streams


class _Response(msgspec.Struct):
    choices: list[_Choice] = []
    usage: _Usage | None = None
    model: str = ""


_decode_response = msgspec.json.Decoder(_Response).decode


class OpenAIBackend:
    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self._http = HttpTransport(settings, headers)

    def _body(self, request: CompletionRequest, stream: bool) -> dict[str, object]:
        s = self.settings
        body: dict[str, object] = {
            "model": s.model_id,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens or s.max_tokens,
            "temperature": s.temperature if request.temperature is None else request.temperature,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        if request.thinking is not None:  # kimi-k2.6 and later switch thinking per request
            body["thinking"] = {"type": "enabled" if request.thinking else "disabled"}
        return body

    async def complete(self, request: CompletionRequest) -> Completion:
        started = time.perf_counter()
        service, model = self.settings.service.value, self.settings.model_id
        async with self._http.post("/chat/completions", self._body(request, False)) as response:
            async with translate_errors(service, model):
                data = _decode_response(await response.read())
        if not data.choices or data.choices[0].message is None:
            raise BackendProtocolError(
                f"{service} ({model}) answered without choices", service=service, model=model
            )
        choice = data.choices[0]
        message = choice.message
        assert message is not None
        usage = data.usage or choice.usage
        return Completion(
            content=message.content or "",
            reasoning_content=message.reasoning_content or None,
            model=data.model or model,
            usage=usage.to_usage() if usage else Usage(),
            finish_reason=choice.finish_reason,
            timings=Timings(total=time.perf_counter() - started),
        )

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        service, model = self.settings.service.value, self.settings.model_id
        finished = False
        usage: Usage | None = None
        finish_reason: str | None = None
        async with self._http.post("/chat/completions", self._body(request, True)) as response:
            async with translate_errors(service, model):
                async for line in iter_lines(response):
                    if not line.startswith(b"data:"):
                        continue  # SSE comments and other fields
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        finished = True
                        break
                    data = _decode_response(payload)
                    if data.usage is not None:
                        usage = data.usage.to_usage()
                    for choice in data.choices[:1]:
                        if choice.usage is not None:
                            usage = choice.usage.to_usage()
                        if choice.finish_reason:
                            finish_reason = choice.finish_reason
                        delta = choice.delta
                        if delta is not None and (delta.content or delta.reasoning_content):
                            yield StreamChunk(
                                content=delta.content or "",
                                reasoning_content=delta.reasoning_content or "",
                                model=data.model or model,
                            )
        if not finished and finish_reason is None:
            raise BackendProtocolError(
                f"{service} ({model}) stream ended before [DONE]", service=service, model=model
            )
        yield StreamChunk(
            finish_reason=finish_reason or "stop", usage=usage or Usage(), model=model
        )

    async def probe(self) -> Readiness:
        s = self.settings
        ready, detail = False, ""
        try:
            # Bounded: an upstream that accepts and never answers must not hang /readyz.
            async with (
                translate_errors(s.service.value, s.model_id),
                asyncio.timeout(s.connect_timeout),
            ):
                async with self._http.session.get(f"{s.url}/models") as response:
                    ready = response.status < 400
                    detail = "ok" if ready else f"GET /models answered HTTP {response.status}"
        except BackendError as error:
            detail = error.message
        return Readiness.of(s, ready=ready, detail=detail)

    async def close(self) -> None:
        await self._http.close()
