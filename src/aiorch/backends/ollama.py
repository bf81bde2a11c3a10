"""Ollama's native `/api/chat`: NDJSON streaming, `think`, tools as whole objects, `format`.

Translation from Chat Completions: tool calls carry their arguments as objects (not JSON text)
and arrive whole, so each becomes one tool-call delta with an id of our making; a tool result is
named by `tool_name`; images are inline base64; `response_format` becomes `format` (`"json"` or
the schema); sampling parameters go in `options`, with `num_ctx` set from the model's context
window, because Ollama's default context is small and it cuts long prompts silently. `think` is
sent only to models that can think: Ollama answers 400 to `think: true` on any other.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from aiorch.answer import SKIPPED, Delta, End, Event, Timings, ToolCallDelta
from aiorch.backends.base import Call, Readiness
from aiorch.backends.http import HttpTransport, translate_errors
from aiorch.backends.ndjson import lines as ndjson_lines
from aiorch.backends.openai_compat import MAX_MALFORMED
from aiorch.errors import BackendError, StreamCut, UnsupportedParameter
from aiorch.request import ChatMessage, ChatRequest
from aiorch.service_settings import ServiceSettings
from aiorch.types import Usage

NS = 1e-9
# Request fields Ollama has no notion of: they change nothing the model does, so they are left
# out and the client is told (the `adjustments` of the answer).
NOT_SENT = ("user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier")
# Top-level fields Ollama takes among its `options` when a client sends them.
OPTIONS = frozenset(
    {"top_k", "min_p", "typical_p", "repeat_penalty", "repeat_last_n", "num_ctx", "num_keep"}
)


class _Function(msgspec.Struct, frozen=True):
    name: str = ""
    arguments: Any = None


class _ToolCall(msgspec.Struct):
    function: _Function = _Function()
    id: str | None = None


class _Message(msgspec.Struct):
    content: str = ""
    thinking: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Chunk(msgspec.Struct):
    model: str = ""
    message: _Message | None = None
    done: bool = False
    done_reason: str | None = None
    error: str | None = None
    prompt_eval_count: int = 0
    eval_count: int = 0
    total_duration: int | None = None  # nanoseconds, as are the three below
    load_duration: int | None = None
    prompt_eval_duration: int | None = None
    eval_duration: int | None = None

    def timings(self) -> Timings:
        return Timings(
            *(
                None if ns is None else ns * NS
                for ns in (
                    self.total_duration,
                    self.load_duration,
                    self.prompt_eval_duration,
                    self.eval_duration,
                )
            )
        )


class _Model(msgspec.Struct):
    name: str = ""
    model: str = ""


class _Models(msgspec.Struct):
    models: list[_Model] = []


_decode_chunk = msgspec.json.Decoder(_Chunk).decode
_decode_models = msgspec.json.Decoder(_Models).decode
_encode = msgspec.json.Encoder().encode


class OllamaBackend:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self._http = HttpTransport(settings)

    def refusal(self, request: ChatRequest) -> UnsupportedParameter | None:
        why = "by ollama"
        choice = request.tool_choice
        if choice not in (None, "auto", "none"):
            return _refuse("tool_choice", f"{choice!r} is not supported {why}: only auto or none")
        if request.parallel_tool_calls is False:
            return _refuse("parallel_tool_calls", f"false cannot be enforced {why}")
        for name in ("logit_bias", "prediction", "audio", "web_search_options", "functions"):
            if getattr(request, name):
                return _refuse(name, f"{name} is not supported {why}")
        if request.modalities and set(request.modalities) != {"text"}:
            return _refuse("modalities", f"only text output is supported {why}")
        # Both change the answer, so leaving them out would degrade it silently.
        if request.reasoning_effort:
            return _refuse(
                "reasoning_effort", f"not supported {why}, which switches thinking on or off only"
            )
        if request.verbosity:
            return _refuse("verbosity", f"verbosity is not supported {why}")
        for name in request.extra:
            if name not in OPTIONS:
                return _refuse(name, f"{name} is not supported {why}")
        for i, message in enumerate(request.messages):
            for j, call in enumerate(message.tool_calls or ()):
                if not _is_json_object(call.function.arguments):
                    return _refuse(
                        f"messages[{i}].tool_calls[{j}].function.arguments",
                        f"tool-call arguments must be a JSON object {why}",
                    )
            for part in message.parts("image_url"):
                if part.image_url is None or not part.image_url.url.startswith("data:"):
                    return _refuse(
                        f"messages[{i}].content",
                        f"image URLs are not supported {why}: send images inline as data: URLs",
                    )
        return None

    def notes(self, request: ChatRequest) -> tuple[str, ...]:
        return tuple(
            f"{name}: not sent, ollama has no such field"
            for name in NOT_SENT
            if getattr(request, name)
        )

    def body(self, call: Call) -> bytes:
        request, model = call.request, call.model
        options: dict[str, Any] = {
            "num_predict": call.max_tokens,
            "temperature": model.temperature
            if request.temperature is None
            else request.temperature,
        }
        for name in ("top_p", "seed", "presence_penalty", "frequency_penalty"):
            value = getattr(request, name)
            if value is not None:
                options[name] = value
        if request.stop is not None:
            options["stop"] = (
                [request.stop] if isinstance(request.stop, str) else list(request.stop)
            )
        if model.rules.context_window:
            options["num_ctx"] = model.rules.context_window
        options.update({k: v for k, v in request.extra.items() if k in OPTIONS})
        body: dict[str, Any] = {
            "model": model.id,
            "messages": _messages(request.messages, call.prefill),
            "stream": call.stream,
            "options": options,
        }
        if request.tools and request.tool_choice != "none":
            body["tools"] = list(request.tools)
        fmt = request.response_format or {}
        if fmt.get("type") == "json_object":
            body["format"] = "json"
        elif fmt.get("type") == "json_schema":
            body["format"] = (fmt.get("json_schema") or {}).get("schema", {})
        if model.rules.thinking_control == "ollama":
            body["think"] = call.thinking
        return _encode(body)

    async def generate(self, call: Call) -> AsyncIterator[Event]:
        s = self.settings
        service, model = s.name, call.model.id
        done: _Chunk | None = None
        calls = 0
        malformed = 0
        async with self._http.post("/api/chat", self.body(call), model, call.timeline) as response:
            async with translate_errors(service, model):
                lines = (
                    ndjson_lines(response.content.iter_any()) if call.stream else _whole(response)
                )
                async for line in lines:
                    try:
                        chunk = _decode_chunk(line)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        if not call.stream:
                            raise
                        malformed += 1
                        if malformed > MAX_MALFORMED:
                            raise StreamCut(
                                f"{service} ({model}) sent {malformed} malformed lines",
                                service=service,
                                model=model,
                            ) from None
                        yield SKIPPED
                        continue
                    if chunk.error:
                        raise StreamCut(
                            f"{service} ({model}) reported an error: {chunk.error[:300]}",
                            service=service,
                            model=model,
                        )
                    message = chunk.message
                    if message is not None:
                        delta = _delta(message, calls)
                        calls += len(delta.tool_calls)
                        if delta.has_output:
                            yield delta
                    if chunk.done:
                        done = chunk
                        break
        if done is None:
            raise StreamCut(
                f"{service} ({model}) stream ended before done", service=service, model=model
            )
        reason = done.done_reason or "stop"
        yield Delta(finish_reason="tool_calls" if calls and reason == "stop" else reason)
        usage = Usage(done.prompt_eval_count, done.eval_count)
        yield End(usage, done.model or model, done.timings())

    async def probe(self) -> Readiness:
        """Reachable, model pulled, and whether it is loaded (a cold start explains a slow call)."""
        s = self.settings
        ready, detail, loaded = False, "", None
        try:
            # Bounded: an upstream that accepts and never answers must not hang /readyz.
            async with translate_errors(s.name, s.model_id), asyncio.timeout(s.connect_timeout):
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


async def _whole(response: Any) -> AsyncIterator[bytes]:
    yield await response.read()


def _refuse(param: str, message: str) -> UnsupportedParameter:
    return UnsupportedParameter(message if param in message else f"{param}: {message}", param=param)


def _delta(message: _Message, seen: int) -> Delta:
    calls = tuple(
        ToolCallDelta(
            seen + i,
            c.id or f"call_{os.urandom(6).hex()}",
            c.function.name,
            _encode(c.function.arguments if c.function.arguments is not None else {}).decode(),
            "function",
        )
        for i, c in enumerate(message.tool_calls or ())
    )
    return Delta(content=message.content, reasoning=message.thinking or "", tool_calls=calls)


def _messages(messages: tuple[ChatMessage, ...], prefill: str) -> list[dict[str, Any]]:
    names: dict[str, str] = {}  # tool call id -> function name, to name each tool result
    out: list[dict[str, Any]] = []
    for message in messages:
        role = {"developer": "system", "function": "tool"}.get(message.role, message.role)
        item: dict[str, Any] = {"role": role, "content": message.text()}
        images = [
            p.image_url.url.partition(",")[2]
            for p in message.parts("image_url")
            if p.image_url is not None
        ]
        if images:
            item["images"] = images
        if message.reasoning_content:
            item["thinking"] = message.reasoning_content
        if message.tool_calls:
            item["tool_calls"] = [
                {
                    "function": {
                        "name": c.function.name,
                        "arguments": _arguments(c.function.arguments),
                    }
                }
                for c in message.tool_calls
            ]
            names.update({c.id: c.function.name for c in message.tool_calls})
        if role == "tool":
            item["tool_name"] = names.get(message.tool_call_id or "", message.name or "")
        out.append(item)
    if prefill:
        if out and out[-1]["role"] == "assistant" and "tool_calls" not in out[-1]:
            out[-1] = {**out[-1], "content": out[-1]["content"] + prefill}
        else:
            out.append({"role": "assistant", "content": prefill})
    return out


def _arguments(text: str) -> Any:
    """Tool-call arguments as Ollama wants them: an object, not JSON text (checked by
    `refusal` before any call)."""
    return msgspec.json.decode(text) if text.strip() else {}


def _is_json_object(text: str) -> bool:
    if not text.strip():
        return True
    try:
        return isinstance(msgspec.json.decode(text), dict)
    except msgspec.DecodeError:
        return False
