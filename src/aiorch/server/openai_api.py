"""`POST /v1/chat/completions` and `GET /v1/models`, in OpenAI's shape.

`model` is `auto` (classify and route), `kimi`, `qwen` or a configured model id (that model
only). Streams follow OpenAI's SSE framing and end with `data: [DONE]`; a failure after the first
chunk ends the stream with an `{"error": ...}` event instead, never a silently short answer.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from aiorch.errors import AiorchError, NotFound, RequestError
from aiorch.orchestrator import AIOrchestrator, QueryOptions
from aiorch.server import sse
from aiorch.server.api import SSE_HEADERS
from aiorch.server.disconnect import client_gone_response, unless_client_leaves
from aiorch.server.responses import JSON
from aiorch.server.schemas import (
    ChatBody,
    ChatChoice,
    ChatChoiceMessage,
    ChatCompletion,
    ChatUsage,
    ModelCard,
    ModelList,
    decode,
)
from aiorch.types import Message, QueryResult, StreamChunk, StreamStart

ROLES = {"developer": "system", "system": "system", "user": "user", "assistant": "assistant"}


async def chat_completions(request: Request) -> Response:
    body = decode(await request.body(), ChatBody)
    orchestrator: AIOrchestrator = request.app.state.orchestrator
    messages = [
        Message(ROLES[m.role], m.text())  # type: ignore[arg-type]
        for m in body.messages
        if m.role in ROLES
    ]
    if not messages or messages[-1].role != "user":
        raise RequestError("messages must end with a user message", param="messages")
    options = QueryOptions(
        service=orchestrator.router.service_for_model(body.model),
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        thinking=None if body.thinking is None else body.thinking.type == "enabled",
        tenant=request.scope.get("aiorch.tenant", ""),
        request_id=request.scope["aiorch.request_id"],
    )
    if body.stream:
        events = orchestrator.stream(messages, options)
        first = await sse.first_event(request, events)
        if first is None:
            return client_gone_response()
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _chunks(first, events, options.request_id, include_usage),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )
    result = await unless_client_leaves(request, orchestrator.complete(messages, options))
    return client_gone_response() if result is None else JSON(_completion(result))


def _completion(result: QueryResult) -> ChatCompletion:
    return ChatCompletion(
        id=f"chatcmpl-{result.request_id}",
        created=int(time.time()),
        model=result.model,
        choices=[
            ChatChoice(
                0,
                ChatChoiceMessage("assistant", result.answer, result.reasoning_content),
                "stop",
            )
        ],
        usage=ChatUsage.of(result.usage),
        aiorch={
            "query_type": result.query_type,
            "selected_service": result.selected_service,
            "cached": result.cached,
            "fallback": result.fallback,
            "offline": result.offline,
            "latency_ms": result.latency_ms,
        },
    )


async def _chunks(
    first: StreamStart | StreamChunk,
    events: AsyncGenerator[StreamStart | StreamChunk, None],
    request_id: str,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    created = int(time.time())
    model = first.model
    head = {"id": f"chatcmpl-{request_id}", "object": "chat.completion.chunk", "created": created}

    def chunk(delta: dict[str, str], finish: str | None = None, **extra: object) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return sse.event({**head, "model": model, "choices": [choice], **extra})

    try:
        yield chunk({"role": "assistant", "content": ""})
        async for item in events:
            if isinstance(item, StreamStart):
                continue
            delta: dict[str, str] = {}
            if item.reasoning_content:
                delta["reasoning_content"] = item.reasoning_content
            if item.content:
                delta["content"] = item.content
            if delta:
                yield chunk(delta)
            if item.finish_reason is not None:
                usage = ChatUsage.of(item.usage) if item.usage else None
                yield chunk({}, item.finish_reason, usage=usage)
                if include_usage:
                    yield sse.event({**head, "model": model, "choices": [], "usage": usage})
        yield sse.DONE
    except AiorchError as error:
        yield sse.error_event(error)
    finally:
        await events.aclose()  # a disconnected client cancels the upstream call


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
    cards = [ModelCard(id="auto", owned_by="aiorch")]
    for model_id, service in orchestrator.router.model_ids.items():
        cards.append(ModelCard(id=model_id, owned_by=service.value))
    return cards
