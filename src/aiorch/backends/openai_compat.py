"""OpenAI-compatible chat completions: Moonshot, DashScope compatible mode, vLLM, Ollama's /v1.

The request goes out as the client sent it (every field, message and content part), with the
model's rules applied: the model id, the token-limit field it wants, the thinking switch in its
form, and an assistant prefill to continue a broken-off answer. Fields this version does not know
are forwarded too, but never over a known one.

Moonshot's dialect: the thinking text arrives in `reasoning_content` (message and stream deltas),
in streams the usage comes in the last chunk's `choices[0].usage`, and an assistant message with
`partial: true` is continued. We read both usage places, and ask for `include_usage` too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from aiorch.answer import SKIPPED, Delta, End, Event, ToolCallDelta
from aiorch.backends import sse
from aiorch.backends.base import Call, Readiness
from aiorch.backends.http import HttpTransport, translate_errors
from aiorch.errors import BackendError, BackendProtocolError, StreamCut, UnsupportedParameter
from aiorch.request import ChatRequest
from aiorch.service_settings import ServiceSettings
from aiorch.types import Usage

MAX_MALFORMED = 8  # malformed events one stream may carry before it counts as broken


class _CompletionDetails(msgspec.Struct):
    reasoning_tokens: int = 0


class _PromptDetails(msgspec.Struct):
    cached_tokens: int = 0


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    completion_tokens_details: _CompletionDetails | None = None
    prompt_tokens_details: _PromptDetails | None = None

    def to_usage(self) -> Usage:
        done, prompt = self.completion_tokens_details, self.prompt_tokens_details
        return Usage(
            self.prompt_tokens,
            self.completion_tokens,
            done.reasoning_tokens if done is not None else 0,
            prompt.cached_tokens if prompt is not None else 0,
        )


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    index: int | None = None
    id: str | None = None
    type: str | None = None
    function: _Function | None = None


class _Message(msgspec.Struct):
    content: str | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None  # vLLM's and OpenRouter's name for it
    tool_calls: list[_ToolCall] | None = None
    refusal: str | None = None

    def delta(self, index: int, finish_reason: str | None, logprobs: list[Any]) -> Delta:
        calls = tuple(
            ToolCallDelta(
                c.index if c.index is not None else i,
                c.id,
                c.function.name if c.function else None,
                (c.function.arguments or "") if c.function else "",
                c.type,
            )
            for i, c in enumerate(self.tool_calls or ())
        )
        return Delta(
            index=index,
            content=self.content or "",
            reasoning=self.reasoning_content or self.reasoning or "",
            tool_calls=calls,
            refusal=self.refusal or "",
            logprobs=tuple(logprobs),
            finish_reason=finish_reason,
        )


class _Logprobs(msgspec.Struct):
    content: list[Any] | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    message: _Message | None = None
    delta: _Message | None = None
    finish_reason: str | None = None
    usage: _Usage | None = None  # Moonshot's place for usage in streams
    logprobs: _Logprobs | None = None


class _Response(msgspec.Struct):
    choices: list[_Choice] = []
    usage: _Usage | None = None
    model: str = ""
    error: Any = None  # some servers report a failure as a data event mid-stream


_decode_response = msgspec.json.Decoder(_Response).decode
_encode = msgspec.json.Encoder().encode
# Fields the body builder sets itself from the call.
_OWN = frozenset({"model", "stream", "stream_options", "max_tokens", "max_completion_tokens"})


class OpenAIBackend:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self._http = HttpTransport(settings, headers)

    def refusal(self, request: ChatRequest) -> UnsupportedParameter | None:
        return None  # the dialect is Chat Completions itself

    def notes(self, request: ChatRequest) -> tuple[str, ...]:
        return ()

    def body(self, call: Call) -> bytes:
        request, model = call.request, call.model
        rules = model.rules
        body: dict[str, Any] = msgspec.to_builtins(request)
        extra = body.pop("extra", None) or {}
        for name in _OWN:
            body.pop(name, None)
        body["model"] = model.id
        body["stream"] = call.stream
        if call.stream:
            body["stream_options"] = {"include_usage": True}
        body[rules.token_field] = call.max_tokens
        if "temperature" not in rules.fixed and "temperature" not in body:
            body["temperature"] = min(model.temperature, rules.max_temperature)
        asked = body.pop("thinking", None)
        if rules.thinking_control == "moonshot":
            switch = {"type": "enabled" if call.thinking else "disabled"}
            if isinstance(asked, dict) and "keep" in asked:
                switch["keep"] = asked["keep"]
            body["thinking"] = switch
        elif rules.thinking_control == "enable_thinking":
            body["enable_thinking"] = call.thinking
        if call.prefill or request.messages[-1].role == "assistant":
            body["messages"] = _with_prefill(body["messages"], call)
        for name, value in extra.items():
            body.setdefault(name, value)
        return _encode(body)

    async def generate(self, call: Call) -> AsyncIterator[Event]:
        if call.stream:
            async for event in self._stream(call):
                yield event
            return
        service, model = self.settings.name, call.model.id
        body = self.body(call)
        async with self._http.post("/chat/completions", body, model, call.timeline) as response:
            async with translate_errors(service, model):
                data = _decode_response(await response.read())
        if not data.choices:
            raise BackendProtocolError(
                f"{service} ({model}) answered without choices", service=service, model=model
            )
        usage = data.usage
        for choice in data.choices:
            message = choice.message or _Message()
            usage = usage or choice.usage
            logprobs = (
                choice.logprobs.content if choice.logprobs and choice.logprobs.content else []
            )
            yield message.delta(choice.index, choice.finish_reason or "stop", logprobs)
        yield End(usage.to_usage() if usage else Usage(), data.model or model)

    async def _stream(self, call: Call) -> AsyncIterator[Event]:
        service, model = self.settings.name, call.model.id
        ended: set[int] = set()
        usage: Usage | None = None
        reported = model
        malformed = 0
        body = self.body(call)
        async with self._http.post("/chat/completions", body, model, call.timeline) as response:
            async with translate_errors(service, model):
                async for event in sse.events(response.content.iter_any()):
                    payload = event.data.strip()
                    if payload == b"[DONE]":
                        break
                    try:
                        data = _decode_response(payload)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        malformed += 1
                        if malformed > MAX_MALFORMED:
                            raise StreamCut(
                                f"{service} ({model}) sent {malformed} malformed events",
                                service=service,
                                model=model,
                            ) from None
                        yield SKIPPED
                        continue
                    if data.error is not None:
                        raise StreamCut(
                            f"{service} ({model}) reported an error mid-stream: "
                            f"{str(data.error)[:300]}",
                            service=service,
                            model=model,
                        )
                    reported = data.model or reported
                    if data.usage is not None:
                        usage = data.usage.to_usage()
                    for choice in data.choices:
                        if choice.usage is not None:
                            usage = choice.usage.to_usage()
                        if choice.finish_reason:
                            ended.add(choice.index)
                        logprobs = choice.logprobs.content if choice.logprobs else None
                        delta = (choice.delta or _Message()).delta(
                            choice.index, choice.finish_reason or None, logprobs or []
                        )
                        if delta.has_output or delta.finish_reason or delta.logprobs:
                            yield delta
        if not ended:  # [DONE] or not, an answer without a finish reason is not whole
            kind = BackendProtocolError if malformed else StreamCut
            why = f" after {malformed} malformed event(s)" if malformed else ""
            raise kind(
                f"{service} ({model}) stream ended before its finish reason{why}",
                service=service,
                model=model,
            )
        yield End(usage or Usage(), reported)

    async def probe(self) -> Readiness:
        s = self.settings
        ready, detail = False, ""
        try:
            # Bounded: an upstream that accepts and never answers must not hang /readyz.
            async with translate_errors(s.name, s.model_id), asyncio.timeout(s.connect_timeout):
                async with self._http.session.get(f"{s.url}/models") as response:
                    ready = response.status < 400
                    detail = "ok" if ready else f"GET /models answered HTTP {response.status}"
        except BackendError as error:
            detail = error.message
        return Readiness.of(s, ready=ready, detail=detail)

    async def close(self) -> None:
        await self._http.close()


def _with_prefill(messages: list[dict[str, Any]], call: Call) -> list[dict[str, Any]]:
    """The assistant message to continue, in the model's form (Moonshot's `partial` flag, or a
    plain trailing assistant message), with the text of a broken-off attempt appended."""
    style = call.model.capabilities.prefill
    last = messages[-1]
    if last.get("role") == "assistant" and not last.get("tool_calls"):
        messages = messages[:-1]
        text = (last.get("content") or "") if isinstance(last.get("content"), str) else ""
        last = {k: v for k, v in last.items() if k not in ("partial", "prefix")}
    else:
        text, last = "", {"role": "assistant"}
    last["content"] = text + call.prefill
    if style == "partial":
        last["partial"] = True
    return [*messages, last]
