"""`POST /api/ai/query`: the guide's endpoint."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from aiorch.errors import AiorchError
from aiorch.orchestrator import AIOrchestrator, QueryOptions, build_messages
from aiorch.routing import parse_agent_type, parse_query_type
from aiorch.server import sse
from aiorch.server.disconnect import client_gone_response, unless_client_leaves
from aiorch.server.responses import JSON
from aiorch.server.schemas import QueryBody, decode
from aiorch.types import StreamChunk, StreamStart

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def query(request: Request) -> Response:
    body = decode(await request.body(), QueryBody)
    orchestrator: AIOrchestrator = request.app.state.orchestrator
    service = orchestrator.router.service_for_model(body.model) if body.model else None
    options = QueryOptions(
        query_type=parse_query_type(body.query_type),
        agent_type=parse_agent_type(body.agent_type),
        service=service,
        use_cache=body.use_cache,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        thinking=body.thinking,
        tenant=request.scope.get("aiorch.tenant", ""),
        request_id=request.scope["aiorch.request_id"],
    )
    messages = build_messages(body.query, body.context)
    if body.stream:
        events = orchestrator.stream(messages, options)
        first = await sse.first_event(request, events)  # errors before it are plain JSON
        if first is None:
            return client_gone_response()
        return StreamingResponse(
            _sse(first, events, options.request_id),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
        )
    result = await unless_client_leaves(request, orchestrator.complete(messages, options))
    return client_gone_response() if result is None else JSON(result)


async def _sse(
    first: StreamStart | StreamChunk,
    events: AsyncGenerator[StreamStart | StreamChunk, None],
    request_id: str,
) -> AsyncIterator[bytes]:
    """`event: meta` (who answers), data chunks `{"delta", "reasoning"}`, then `event: done`."""
    started = time.perf_counter()
    try:
        yield sse.event(first, "meta")
        async for item in events:
            if isinstance(item, StreamStart):
                continue
            if item.content or item.reasoning_content:
                yield sse.event({"delta": item.content, "reasoning": item.reasoning_content})
            if item.finish_reason is not None:
                done = {
                    "finish_reason": item.finish_reason,
                    "usage": item.usage,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                    "request_id": request_id,
                }
                yield sse.event(done, "done")
    except AiorchError as error:
        yield sse.error_event(error, "error")
    finally:
        await events.aclose()  # a disconnected client cancels the upstream call
