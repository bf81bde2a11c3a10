"""Ollama's native API: `POST /api/chat` (NDJSON, streaming by default), tags, ps, version.

As in Ollama, timings are nanoseconds and arrive only on the final (`"done": true`) object, the
thinking text is `message.thinking` (with `"think": true`), and a model has to be "loaded" before
it answers: `cold_start_ms` makes the first call per model pay for that in `load_duration`.
"""

from __future__ import annotations

import hashlib
import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from aiorch.mock import faults
from aiorch.mock.engine import STATE, Job, emit, prepare, record
from aiorch.mock.settings import ConfigError
from aiorch.mock.text import Answer

ENDPOINT = "/api/chat"
VERSION = "0.12.6"
KEEP_ALIVE_S = 300


class _Message(msgspec.Struct):
    role: str
    content: str = ""


class _Options(msgspec.Struct):
    num_predict: int | None = None  # <= 0: no limit, as in Ollama (-1 infinite, -2 fill)
    temperature: Annotated[float, msgspec.Meta(ge=0)] | None = None


class ChatRequest(msgspec.Struct, kw_only=True):
    model: str = ""
    messages: list[_Message] | None = None
    stream: bool = True
    think: bool | Literal["high", "medium", "low"] | None = None
    options: _Options | None = None
    keep_alive: str | float | None = None
    format: Any = None


_decode = msgspec.json.Decoder(ChatRequest).decode
_encode = msgspec.json.encode


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _ns(seconds: float) -> int:
    return max(1, int(seconds * 1e9))


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
    num_predict = body.options.num_predict if body.options is not None else None
    try:
        job = prepare(
            state,
            request,
            body.model,
            [(m.role, m.content) for m in body.messages or ()],
            thinking=body.think not in (None, False),
            max_tokens=num_predict if num_predict is not None and num_predict > 0 else None,
        )
    except ConfigError as error:
        return faults.ollama_error(400, str(error))
    await job.wait_latency()
    if job.fault is not None:
        instead = await faults.instead_of_answer(job.fault, "ollama", request, job.behaviour)
        if instead is not None:
            return instead
    loaded_at = time.perf_counter()
    load_s = await job.load_model()
    if not body.messages:
        # Ollama's way to preload a model: no messages, answered once it is loaded.
        return _json(
            {**_head(job.model), "message": _message("", None), "done_reason": "load", "done": True}
        )
    answer = job.answer()
    if body.stream:
        return await _stream(request, job, answer, load_s, loaded_at + load_s)
    return await _complete(request, job, answer, load_s, loaded_at + load_s)


def _head(model: str) -> dict[str, Any]:
    return {"model": model, "created_at": _now()}


def _message(content: str, thinking: str | None) -> dict[str, str]:
    message = {"role": "assistant", "content": content}
    if thinking is not None:
        message["thinking"] = thinking
    return message


def _done(
    job: Job, answer: Answer, load_s: float, ready: float, first_token: float
) -> dict[str, Any]:
    end = time.perf_counter()
    return {
        "done": True,
        "done_reason": answer.finish_reason,
        "total_duration": _ns(end - job.started),
        "load_duration": _ns(load_s),
        "prompt_eval_count": job.prompt_tokens,
        "prompt_eval_duration": _ns(first_token - ready),
        "eval_count": answer.completion_tokens,
        "eval_duration": _ns(end - first_token),
    }


def _json(value: dict[str, Any]) -> web.Response:
    return web.Response(body=_encode(value), content_type="application/json")


async def _complete(
    request: web.Request, job: Job, answer: Answer, load_s: float, ready: float
) -> web.StreamResponse:
    await job.wait_first_token()
    first_token = time.perf_counter()
    await job.wait_generation(answer.completion_tokens)
    thinking = answer.reasoning_text if job.thinking else None
    body = _encode(
        {
            **_head(job.model),
            "message": _message(answer.content_text, thinking),
            **_done(job, answer, load_s, ready, first_token),
        }
    )
    return await faults.whole_body(request, job.fault, body)


async def _stream(
    request: web.Request, job: Job, answer: Answer, load_s: float, ready: float
) -> web.StreamResponse:
    head = _encode(_head(job.model))[:-1] + b',"message":{"role":"assistant","content":'
    thinking = [
        head + b'"","thinking":' + _encode(p) + b'},"done":false}\n' for p in answer.reasoning
    ]
    lines = thinking + [head + _encode(p) + b'},"done":false}\n' for p in answer.content]

    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    if job.fault is not None:
        response.headers["X-Mock-Fault"] = job.fault
    await response.prepare(request)
    await job.wait_first_token()
    first_token = time.perf_counter()
    if job.fault == "malformed":
        await response.write(b"".join(lines[:1]) + head + b'"oops"},"done":fal\n')
    elif job.fault == "cut":
        await emit(response, lines[: job.behaviour.cut_after], job.token_interval_s)
        faults.drop_connection(request)
        return response
    else:
        await emit(response, lines, job.token_interval_s)
    final = {
        **_head(job.model),
        "message": _message("", None),
        **_done(job, answer, load_s, ready, first_token),
    }
    await response.write(_encode(final) + b"\n")
    await response.write_eof()
    return response


def _details(model: str) -> dict[str, Any]:
    family = re.split(r"[^a-z]+", model.lower())[0] or "unknown"
    size = re.search(r"(\d+(?:\.\d+)?)b\b", model.lower())
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": f"{size.group(1).upper()}B" if size else "unknown",
        "quantization_level": "Q4_K_M",
    }


def _describe(model: str) -> dict[str, Any]:
    digest = hashlib.sha256(model.encode()).hexdigest()
    return {
        "name": model,
        "model": model,
        "size": 1_000_000_000 + int(digest[:8], 16) % 8_000_000_000,
        "digest": digest,
        "details": _details(model),
    }


def _rfc3339(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat().replace("+00:00", "Z")


async def tags(request: web.Request) -> web.Response:
    state = request.app[STATE]
    record(state, request, "/api/tags", b"")
    modified = _rfc3339(state.started)
    models = [{**_describe(m), "modified_at": modified} for m in state.config.served_models()]
    return _json({"models": models})


async def ps(request: web.Request) -> web.Response:
    state = request.app[STATE]
    record(state, request, "/api/ps", b"")
    models = []
    for model, loaded_at in state.loaded.items():
        described = _describe(model)
        models.append(
            {
                **described,
                "expires_at": _rfc3339(loaded_at + KEEP_ALIVE_S),
                "size_vram": described["size"],
                "context_length": 4096,
            }
        )
    return _json({"models": models})


async def version(request: web.Request) -> web.Response:
    return _json({"version": VERSION})


async def root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")
