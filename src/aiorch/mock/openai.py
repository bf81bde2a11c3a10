"""OpenAI-compatible chat completions, in Moonshot's flavour.

Moonshot differs from OpenAI in two ways that gateways trip over, and both are reproduced:
the thinking text is `reasoning_content` (in the message and in stream deltas), and a stream's
usage arrives in the last chunk's `choices[0].usage`. OpenAI's own final usage chunk (empty
`choices`, top-level `usage`) is added when the request sets `stream_options.include_usage`.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from aiorch.mock import faults
from aiorch.mock.engine import STATE, Job, emit, prepare, record
from aiorch.mock.settings import ConfigError
from aiorch.mock.state import MockState
from aiorch.mock.text import Answer

ENDPOINT = "/v1/chat/completions"


class _Part(msgspec.Struct):
    type: str
    text: str | None = None


class _Message(msgspec.Struct):
    role: Literal["system", "user", "assistant", "tool", "developer", "function"]
    content: str | list[_Part] | None = None


class _Thinking(msgspec.Struct):
    type: Literal["enabled", "disabled"]


class _StreamOptions(msgspec.Struct):
    include_usage: bool = False


class ChatRequest(msgspec.Struct, kw_only=True):
    model: str
    messages: Annotated[list[_Message], msgspec.Meta(min_length=1)]
    stream: bool = False
    stream_options: _StreamOptions | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=5)] | None = None  # accepted; one choice is returned
    thinking: _Thinking | None = None


_decode = msgspec.json.Decoder(ChatRequest).decode
_encode = msgspec.json.encode


def _text(content: str | list[_Part] | None) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(part.text or "" for part in content if part.type == "text")


def _invalid(message: str) -> web.Response:
    return faults.openai_error(400, "invalid_request_error", message)


def _unauthorized(state: MockState, request: web.Request) -> web.Response | None:
    key = state.config.api_key
    if key is None or request.headers.get("Authorization") == f"Bearer {key}":
        return None
    return faults.openai_error(
        401, "invalid_authentication_error", "Invalid Authentication: missing or bad API key"
    )


def _usage(job: Job, answer: Answer) -> dict[str, int]:
    completion = answer.completion_tokens
    return {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": job.prompt_tokens + completion,
    }


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    raw = await request.read()
    record(state, request, ENDPOINT, raw)
    refused = _unauthorized(state, request)
    if refused is not None:
        return refused
    try:
        chat = _decode(raw)
    except msgspec.ValidationError as error:
        return _invalid(f"Invalid request: {error}")
    except msgspec.DecodeError as error:
        return _invalid(f"Invalid request: body is not valid JSON ({error})")
    if chat.model not in state.models:
        return faults.openai_error(
            404,
            "resource_not_found_error",
            f"Not found the model {chat.model} or Permission denied",
        )
    thinking = (
        ("thinking" in chat.model) if chat.thinking is None else (chat.thinking.type == "enabled")
    )
    try:
        job = prepare(
            state,
            request,
            chat.model,
            [(m.role, _text(m.content)) for m in chat.messages],
            thinking=thinking,
            max_tokens=chat.max_tokens or chat.max_completion_tokens,
        )
    except ConfigError as error:
        return _invalid(str(error))
    await job.wait_latency()
    if job.fault is not None:
        instead = await faults.instead_of_answer(job.fault, "openai", request, job.behaviour)
        if instead is not None:
            return instead
    await job.load_model()
    answer = job.answer()
    include_usage = chat.stream_options is not None and chat.stream_options.include_usage
    if chat.stream:
        return await _stream(request, job, answer, include_usage)
    return await _complete(request, job, answer)


async def _complete(request: web.Request, job: Job, answer: Answer) -> web.StreamResponse:
    await job.wait_first_token()
    await job.wait_generation(answer.completion_tokens)
    message: dict[str, Any] = {"role": "assistant", "content": answer.content_text}
    if job.thinking:
        message["reasoning_content"] = answer.reasoning_text
    body = _encode(
        {
            "id": f"chatcmpl-{job.state.next_id()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": job.model,
            "choices": [{"index": 0, "message": message, "finish_reason": answer.finish_reason}],
            "usage": _usage(job, answer),
        }
    )
    return await faults.whole_body(request, job.fault, body)


async def _stream(
    request: web.Request, job: Job, answer: Answer, include_usage: bool
) -> web.StreamResponse:
    head = _encode(
        {
            "id": f"chatcmpl-{job.state.next_id()}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": job.model,
        }
    )
    prefix = b"data: " + head[:-1] + b',"choices":[{"index":0,"delta":'
    tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"
    suffix = b',"finish_reason":null}]' + tail

    thinking, speaking = prefix + b'{"reasoning_content":', prefix + b'{"content":'
    end = b"}" + suffix
    chunks = [thinking + _encode(p) + end for p in answer.reasoning]
    chunks += [speaking + _encode(p) + end for p in answer.content]
    role = prefix + b'{"role":"assistant","content":""}' + suffix
    usage = _usage(job, answer)
    final = b"".join(
        (
            prefix,
            b'{},"finish_reason":',
            _encode(answer.finish_reason),
            b',"usage":',
            _encode(usage),
            b"}]",
            tail,
        )
    )
    if include_usage:
        final += b"data: " + head[:-1] + b',"choices":[],"usage":' + _encode(usage) + b"}\n\n"
    final += b"data: [DONE]\n\n"

    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    if job.fault is not None:
        response.headers["X-Mock-Fault"] = job.fault
    await response.prepare(request)
    await job.wait_first_token()
    if job.fault == "malformed":
        broken = b'data: {"id":"chatcmpl-malformed","choices":[{"delta":{"content":"oops\n\n'
        await response.write(role + broken + b"data: [DONE]\n\n")
        return response
    if job.fault == "cut":
        items = chunks[: job.behaviour.cut_after] or [b""]
        items[0] = role + items[0]
        await emit(response, items, job.token_interval_s)
        faults.drop_connection(request)
        return response
    items = chunks or [b""]
    items[0] = role + items[0]
    items[-1] += final
    await emit(response, items, job.token_interval_s)
    await response.write_eof()
    return response


async def models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    record(state, request, "/v1/models", b"")
    refused = _unauthorized(state, request)
    if refused is not None:
        return refused
    created = int(state.started)
    data = [
        {"id": m, "object": "model", "created": created, "owned_by": "aiorch-mock"}
        for m in state.config.served_models()
    ]
    return web.json_response({"object": "list", "data": data}, dumps=_dumps)


def _dumps(value: Any) -> str:
    return _encode(value).decode()
