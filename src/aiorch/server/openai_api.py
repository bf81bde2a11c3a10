"""`POST /v1/chat/completions` and `GET /v1/models`, in OpenAI's shape.

`model` is `auto` (classify and route to one model), a service (`kimi`), a configured model id or
alias, `service/model-id`, or `multi` (every `multi` model, answers merged). Every request field
reaches the model or is refused by name (`aiorch.models`, the backends). Streams follow OpenAI's
SSE framing and end with `data: [DONE]`; usage comes once, in its own chunk, when
`stream_options.include_usage` asks for it; a failure after the first chunk ends the stream with
an `{"error": ...}` event instead, never a silently short answer.

Request headers: `X-Aiorch-Cache: on|off` (the cache serves only deterministic requests, at
temperature 0 or with a seed, unless `on`), `X-Aiorch-Fallback: off` (only the named model).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from aiorch.answer import Answer, Choice, Delta
from aiorch.catalog import AUTO, MULTI
from aiorch.errors import AiorchError, NotFound, RequestError
from aiorch.orchestrator import AIOrchestrator
from aiorch.pipeline import Head
from aiorch.planning import CachePolicy, Options
from aiorch.server import sse
from aiorch.server.disconnect import client_gone_response, unless_client_leaves
from aiorch.server.responses import JSON, SSE_HEADERS, answer_headers
from aiorch.server.schemas import ChatCompletion, ChatUsage, ModelCard, ModelList, decode_chat
from aiorch.timing import Timeline

_encode = msgspec.json.Encoder().encode


async def chat_completions(request: Request) -> Response:
    timeline: Timeline = request.scope["aiorch.timeline"]
    started = time.perf_counter()
    body = decode_chat(await request.body())
    timeline.add("parse", time.perf_counter() - started)
    timeline.used = True
    orchestrator: AIOrchestrator = request.app.state.orchestrator
    options = Options(
        timeline=timeline,
        cache=_cache_policy(request, orchestrator),
        fallback=request.headers.get("x-aiorch-fallback", "on").lower() != "off",
        merge=False,
        tenant=request.scope.get("aiorch.tenant", ""),
        request_id=request.scope["aiorch.request_id"],
    )
    if body.stream:
        events = orchestrator.stream(body, options)
        first = await sse.first_event(request, events)
        if first is None:
            return client_gone_response()
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        assert isinstance(first, Head)
        request_id = options.request_id
        return sse.EventStream(
            _chunks(first, events, request_id, include_usage),
            headers={**SSE_HEADERS, **answer_headers(first)},
            failed=lambda: sse.error_event(sse.internal_error(request_id)),
        )
    answer = await unless_client_leaves(request, orchestrator.complete(body, options))
    if answer is None:
        return client_gone_response()
    return JSON(completion(answer), headers=answer_headers(answer))


def _cache_policy(request: Request, orchestrator: AIOrchestrator) -> CachePolicy:
    asked = request.headers.get("x-aiorch-cache", "").strip().lower()
    if asked in ("on", "off"):
        return asked  # type: ignore[return-value]
    if asked:
        raise RequestError("X-Aiorch-Cache must be on or off", param="X-Aiorch-Cache")
    return orchestrator.settings.cache.openai


def completion(answer: Answer) -> ChatCompletion:
    return ChatCompletion(
        id=f"chatcmpl-{answer.request_id}",
        created=int(time.time()),
        model=answer.model,
        choices=[_choice(c) for c in answer.choices],
        usage=ChatUsage.of(answer.usage),
        aiorch=summary(answer),
    )


def summary(answer: Answer) -> dict[str, Any]:
    """What aiorch adds to an answer: how it was routed, served and changed."""
    return {
        "query_type": answer.query_type,
        "selected_service": answer.selected,
        "service": answer.service,
        "cached": answer.cached,
        "fallback": answer.fallback,
        "offline": answer.offline,
        "latency_ms": answer.latency_ms,
        "routing": answer.routing,
        "adjustments": answer.adjustments,
        "attempts": answer.attempts,
    }


def _choice(choice: Choice) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": choice.content if choice.content or not choice.tool_calls else None,
        "refusal": choice.refusal,
    }
    if choice.reasoning:
        message["reasoning_content"] = choice.reasoning
    if choice.tool_calls:
        message["tool_calls"] = choice.tool_calls
    return {
        "index": choice.index,
        "message": message,
        "logprobs": {"content": choice.logprobs} if choice.logprobs is not None else None,
        "finish_reason": choice.finish_reason,
    }


async def _chunks(
    head: Head,
    events: AsyncGenerator[Head | Delta | Answer, None],
    request_id: str,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    prefix = (
        b'{"id":"chatcmpl-'
        + request_id.encode()
        + b'","object":"chat.completion.chunk","created":'
        + str(int(time.time())).encode()
        + b',"model":'
        + _encode(head.model)
    )

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        tail = b"".join(b',"' + k.encode() + b'":' + _encode(v) for k, v in extra.items())
        return b"data: " + prefix + b',"choices":' + _encode(choices) + tail + b"}\n\n"

    opened: set[int] = set()
    try:
        async for item in events:
            if isinstance(item, Delta):
                if item.index not in opened:  # as OpenAI does: the role first, on its own
                    opened.add(item.index)
                    role = {"role": "assistant", "content": ""}
                    yield chunk([{"index": item.index, "delta": role, "finish_reason": None}])
                delta: dict[str, Any] = {}
                if item.reasoning:
                    delta["reasoning_content"] = item.reasoning
                if item.content:
                    delta["content"] = item.content
                if item.tool_calls:
                    delta["tool_calls"] = [_tool_delta(t) for t in item.tool_calls]
                if item.refusal:
                    delta["refusal"] = item.refusal
                choice: dict[str, Any] = {
                    "index": item.index,
                    "delta": delta,
                    "logprobs": {"content": item.logprobs} if item.logprobs else None,
                    "finish_reason": item.finish_reason,
                }
                yield chunk([choice])
            elif isinstance(item, Answer) and include_usage:
                yield chunk([], usage=ChatUsage.of(item.usage), aiorch=summary(item))
        yield sse.DONE
    except AiorchError as error:
        yield sse.error_event(error)
    finally:
        await events.aclose()  # a disconnected client cancels the upstream call


def _tool_delta(piece: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"index": piece.index}
    if piece.id is not None:
        out["id"] = piece.id
        out["type"] = piece.type or "function"
    function: dict[str, Any] = {"arguments": piece.arguments}
    if piece.name is not None:
        function["name"] = piece.name
    out["function"] = function
    return out


async def models(request: Request) -> Response:
    return JSON(ModelList(data=_cards(request.app.state.orchestrator)))


async def model(request: Request) -> Response:
    """`GET /v1/models/{model}`, which the OpenAI SDK's `models.retrieve` calls."""
    wanted = request.path_params["model"]
    for card in _cards(request.app.state.orchestrator):
        if card.id == wanted:
            return JSON(card)
    raise NotFound(f"model {wanted[:80]!r} is not served here; GET /v1/models lists those that are")


def _cards(orchestrator: AIOrchestrator) -> list[ModelCard]:
    cards = [ModelCard(id=AUTO, owned_by="aiorch"), ModelCard(id=MULTI, owned_by="aiorch")]
    for name, target in orchestrator.catalog.names().items():
        cards.append(ModelCard(id=name, owned_by=target.service))
    return cards
