"""`POST /api/ai/query`: the guide's endpoint."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from aiorch.answer import Answer, Delta
from aiorch.errors import AiorchError
from aiorch.orchestrator import (
    AIOrchestrator,
    parse_agent_type,
    parse_query_type,
    query_request,
    query_result,
)
from aiorch.pipeline import Head
from aiorch.planning import Options
from aiorch.server import sse
from aiorch.server.disconnect import client_gone_response, unless_client_leaves
from aiorch.server.responses import JSON, SSE_HEADERS, answer_headers
from aiorch.server.schemas import QueryBody, decode
from aiorch.timing import Timeline
from aiorch.types import StreamStart


async def query(request: Request) -> Response:
    timeline: Timeline = request.scope["aiorch.timeline"]
    started = time.perf_counter()
    body = decode(await request.body(), QueryBody)
    timeline.add("parse", time.perf_counter() - started)
    timeline.used = True
    orchestrator: AIOrchestrator = request.app.state.orchestrator
    chat = query_request(
        body.query,
        body.context,
        model=body.model or "auto",
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        thinking=body.thinking,
        stream=body.stream,
    )
    options = Options(
        query_type=parse_query_type(body.query_type),
        agent_type=parse_agent_type(body.agent_type),
        cache="on" if body.use_cache else "off",
        fallback=request.headers.get("x-aiorch-fallback", "on").lower() != "off",
        tenant=request.scope.get("aiorch.tenant", ""),
        request_id=request.scope["aiorch.request_id"],
        text_field="query",
        timeline=timeline,
    )
    if body.stream:
        events = orchestrator.stream(chat, options)
        first = await sse.first_event(request, events)  # errors before it are plain JSON
        if first is None:
            return client_gone_response()
        assert isinstance(first, Head)
        request_id = options.request_id
        return sse.EventStream(
            _sse(first, events, request_id, timeline),
            headers={**SSE_HEADERS, **answer_headers(first)},
            failed=lambda: sse.error_event(sse.internal_error(request_id), "error"),
        )
    answer = await unless_client_leaves(request, orchestrator.complete(chat, options))
    if answer is None:
        return client_gone_response()
    return JSON(query_result(answer, options.agent_type), headers=answer_headers(answer))


async def _sse(
    head: Head,
    events: AsyncGenerator[Head | Delta | Answer, None],
    request_id: str,
    timeline: Timeline,
) -> AsyncIterator[bytes]:
    """`event: meta` (who answers), data chunks `{"delta", "reasoning"}`, then `event: done`."""
    started = time.perf_counter()
    meta = StreamStart(
        query_type=head.query_type,
        selected_service=head.selected,
        model=head.model,
        request_id=request_id,
        cached=head.cached,
        fallback=head.fallback,
        offline=head.offline,
        routing=head.routing,
    )
    try:
        yield sse.event(meta, "meta")
        async for item in events:
            if isinstance(item, Delta):
                if item.index == 0 and (item.content or item.reasoning):
                    yield sse.event({"delta": item.content, "reasoning": item.reasoning})
            elif isinstance(item, Answer):
                done = {
                    "finish_reason": item.finish_reason,
                    "usage": item.usage,
                    "model": item.model,
                    "fallback": item.fallback,
                    "attempts": item.attempts,
                    "adjustments": item.adjustments,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                    "request_id": request_id,
                    "timings_ms": {k: round(v * 1000, 3) for k, v in timeline.finish().items()},
                }
                yield sse.event(done, "done")
    except AiorchError as error:
        yield sse.error_event(error, "error")
    finally:
        await events.aclose()  # a disconnected client cancels the upstream call
