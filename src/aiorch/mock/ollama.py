"""Ollama's native chat: `POST /api/chat` (NDJSON, streaming by default).

As in Ollama, timings are nanoseconds and arrive only on the final (`"done": true`) object, the
thinking text is `message.thinking`, tool calls are whole objects with `arguments` as a JSON
object (one line, not deltas), tool results come back as role `tool` with `tool_name`, `format`
takes "json" or a JSON schema, a trailing assistant message is continued, a model has to be
"loaded" before it answers (`cold_start_ms`), and a prompt longer than the context (the server
default unless `options.num_ctx` is set) is cut silently from the oldest messages. The model
list and description endpoints are in `ollama_info`.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from aiorch.mock import checks, faults
from aiorch.mock.answers import Choice
from aiorch.mock.conversation import CallIn, Refusal, Spec, Tool, Turn, trailing_prefill
from aiorch.mock.engine import STATE, Job, prepare, record
from aiorch.mock.logprobs import entry
from aiorch.mock.settings import ConfigError
from aiorch.mock.streams import Events, play

ENDPOINT = "/api/chat"


class _Function(msgspec.Struct):
    name: str
    arguments: dict[str, Any] = {}


class _Call(msgspec.Struct):
    function: _Function
    id: str | None = None


class _Message(msgspec.Struct):
    role: str
    content: str = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[_Call] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class _Options(msgspec.Struct):
    num_predict: int | None = None  # <= 0: no limit, as in Ollama (-1 infinite, -2 fill)
    temperature: Annotated[float, msgspec.Meta(ge=0)] | None = None
    num_ctx: Annotated[int, msgspec.Meta(ge=1)] | None = None
    stop: list[str] | None = None
    seed: int | None = None


class _FunctionDef(msgspec.Struct):
    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None


class _Tool(msgspec.Struct):
    function: _FunctionDef
    type: str = "function"


class ChatRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    messages: list[_Message] | None = None
    stream: bool = True
    think: bool | Literal["high", "medium", "low"] | None = None
    options: _Options | None = None
    keep_alive: str | float | None = None
    format: Literal["json", ""] | dict[str, Any] | None = None
    tools: list[_Tool] | None = None
    truncate: bool | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] = 0


_decode = msgspec.json.Decoder(ChatRequest).decode
_encode = msgspec.json.encode


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _ns(seconds: float) -> int:
    return max(1, int(seconds * 1e9))


def _turn(message: _Message) -> Turn:
    if not (message.tool_calls or message.images or message.thinking):
        return Turn(message.role, message.content, (), message.tool_call_id, message.tool_name)
    calls = tuple(
        CallIn(c.id or "", c.function.name, json.dumps(c.function.arguments))
        for c in message.tool_calls or ()
    )
    return Turn(
        role=message.role,
        text=message.content,
        calls=calls,
        call_id=message.tool_call_id,
        name=message.tool_name,
        reasoning=message.thinking,
        images=len(message.images or ()),
    )


def _spec(body: ChatRequest, think: bool) -> Spec:
    options = body.options or _Options()
    num_predict = options.num_predict
    spec = Spec(
        thinking=think,
        max_tokens=num_predict if num_predict is not None and num_predict > 0 else None,
        stop=tuple(options.stop or ()),
        seed=options.seed,
        logprobs=body.logprobs,
        top_logprobs=body.top_logprobs,
    )
    if body.tools:
        spec.tools = tuple(
            Tool(t.function.name, t.function.description, t.function.parameters) for t in body.tools
        )
    if body.format == "json":
        spec.json_mode = True
    elif isinstance(body.format, dict):
        spec.schema = body.format
    return spec


async def chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    raw = await request.read()
    record(state, request, ENDPOINT, raw)
    try:
        body = _decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        return faults.ollama_error(400, f"invalid request: {error}")
    if not body.model:
        return faults.ollama_error(400, "model is required")
    if body.model not in state.models:
        return faults.ollama_error(404, f'model "{body.model}" not found, try pulling it first')
    caps = state.caps_for(body.model)
    turns = [_turn(m) for m in body.messages or ()]
    options = body.options or _Options()
    try:
        think = checks.thinking(
            caps, body.model, None if body.think is None else body.think is not False
        )
        spec = _spec(body, think)
        prefill = trailing_prefill(turns, partial_flag=False)
        job = prepare(state, request, body.model, turns, spec, prefill=prefill)
        if prefill is not None:
            checks.prefill(caps, body.model)
        checks.request(caps, body.model, job.turns, spec, openai=False, used=job.prompt_tokens)
        kept, dropped = checks.ollama_window(
            caps,
            job.history,
            job.prompt_tokens,
            options.num_ctx,
            job.behaviour.ollama_num_ctx,
            body.truncate is not False,
        )
    except ConfigError as error:
        return faults.ollama_error(400, str(error))
    except Refusal as refusal:
        state.stats.refusals[refusal.code or refusal.param or "invalid_request"] += 1
        return faults.refusal_response(refusal, "ollama")
    if dropped:
        state.stats.truncated_prompts += 1
        state.stats.truncated_tokens += dropped
        job.history = kept
        job.prompt_tokens -= dropped
    await job.wait_latency()
    if job.fault is not None:
        instead = await faults.instead_of_answer(job, "ollama", request)
        if instead is not None:
            return instead
    loaded_at = time.perf_counter()
    load_s = await job.load_model()
    if not body.messages:
        # Ollama's way to preload a model: no messages, answered once it is loaded.
        return _json(
            {**_head(job.model), "message": _message("", None), "done_reason": "load", "done": True}
        )
    try:
        (choice,) = job.answer("ollama")
    except Refusal as refusal:
        return faults.refusal_response(refusal, "ollama")
    if body.stream:
        return await _stream(request, job, choice, load_s, loaded_at + load_s)
    return await _complete(request, job, choice, load_s, loaded_at + load_s)


def _head(model: str) -> dict[str, Any]:
    return {"model": model, "created_at": now()}


def _message(content: str, thinking: str | None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking is not None:
        message["thinking"] = thinking
    return message


def _calls(choice: Choice) -> list[dict[str, Any]]:
    return [
        {
            "id": call.id,
            "function": {
                "index": call.index,
                "name": call.name,
                "arguments": json.loads(call.arguments),
            },
        }
        for call in choice.calls
    ]


def _done(
    job: Job, choice: Choice, load_s: float, ready: float, first_token: float
) -> dict[str, Any]:
    end = time.perf_counter()
    return {
        "done": True,
        # Ollama says "stop" after tool calls too; only a budget says "length".
        "done_reason": "length" if choice.finish_reason == "length" else "stop",
        "total_duration": _ns(end - job.started),
        "load_duration": _ns(load_s),
        "prompt_eval_count": job.prompt_tokens,
        "prompt_eval_duration": _ns(first_token - ready),
        "eval_count": choice.completion_tokens,
        "eval_duration": _ns(end - first_token),
    }


def _json(value: dict[str, Any]) -> web.Response:
    return web.Response(body=_encode(value), content_type="application/json")


async def _complete(
    request: web.Request, job: Job, choice: Choice, load_s: float, ready: float
) -> web.StreamResponse:
    await job.wait_first_token()
    first_token = time.perf_counter()
    await job.wait_generation(choice.completion_tokens)
    message = _message(choice.content_text, choice.reasoning_text if job.spec.thinking else None)
    if choice.calls:
        message["tool_calls"] = _calls(choice)
    value: dict[str, Any] = {**_head(job.model), "message": message}
    value.update(_done(job, choice, load_s, ready, first_token))
    if job.spec.logprobs:
        value["logprobs"] = [
            entry(p, i, job.spec.top_logprobs) for i, p in enumerate(choice.content)
        ]
    return await faults.whole_body(request, job, _encode(value), "ollama")


async def _stream(
    request: web.Request, job: Job, choice: Choice, load_s: float, ready: float
) -> web.StreamResponse:
    head = _encode(_head(job.model))[:-1] + b',"message":{"role":"assistant","content":'
    lines = [head + b'"","thinking":' + _encode(p) + b'},"done":false}\n' for p in choice.reasoning]
    if job.spec.logprobs:
        top = job.spec.top_logprobs
        lines += [
            head + _encode(p) + b'},"done":false,"logprobs":[' + _encode(entry(p, i, top)) + b"]}\n"
            for i, p in enumerate(choice.content)
        ]
    else:
        lines += [head + _encode(p) + b'},"done":false}\n' for p in choice.content]
    if choice.calls:
        lines.append(head + b'"","tool_calls":' + _encode(_calls(choice)) + b'},"done":false}\n')

    def closing() -> bytes:
        final = {**_head(job.model), "message": _message("", None)}
        final.update(_done(job, choice, load_s, ready, job.first_token_at))
        return _encode(final) + b"\n"

    events = Events(
        opening=b"",
        tokens=lines,
        closing=closing,
        malformed=head + b'"oops"},"done":fal\n',
        error=_encode(faults.stream_error_body("ollama")) + b"\n",
    )
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    legacy = b"".join(lines[:1]) + events.malformed
    return await play(request, response, job, events, legacy_malformed=legacy)
