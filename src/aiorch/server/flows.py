"""HTTP routes for agent flows: a thin layer over `aiorch.agents.FlowRunner`.

    GET  /api/ai/flows              the configured flows and their stages
    POST /api/ai/flows/ba-dev-qa    the guide's flow
    POST /api/ai/flows/{name}       any configured flow

The body is `{"request": "...", "use_cache"?: bool, "stream"?: bool, "context"?: str}`. Without
`stream` the answer is the whole `FlowResult` as JSON: 200 when the flow completed; when a stage
failed, the status of that failure (502, or 503/504 when every backend was unavailable or timed
out) with the completed stages still in `stages` and an OpenAI-shaped `error` naming the stage.
With `"stream": true` the answer is `text/event-stream`: `event: start` (the flow's stages), one
`event: stage` per finished stage, then `event: done` (completed) or `event: error` (failed),
each carrying JSON.

The app puts an `AIOrchestrator` on `app.state.orchestrator`; the runner built over it is kept on
`app.state.flow_runner`, so the prompt files are read once.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aiorch.agents.flow import FlowEvent, FlowResult, FlowRunner, FlowStarted, StageResult
from aiorch.agents.prompts import Prompts
from aiorch.config import Settings
from aiorch.errors import AiorchError
from aiorch.orchestrator import AIOrchestrator
from aiorch.server import sse
from aiorch.server.responses import JSON, error_response
from aiorch.server.schemas import FlowBody, InvalidBody, decode

DEFAULT_FLOW = "ba-dev-qa"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def build_runner(orchestrator: AIOrchestrator) -> FlowRunner:
    """Built once by the app factory: a bad prompt file stops start-up, not a request."""
    return FlowRunner(orchestrator, prompts=Prompts.from_env())


def runner_for(request: Request) -> FlowRunner:
    runner: FlowRunner = request.app.state.flow_runner
    return runner


def _check(body: FlowBody, settings: Settings) -> FlowBody:
    """What msgspec cannot say: an empty request, or one too long to put in a prompt."""
    if not body.request.strip():
        raise InvalidBody("`request` must not be empty", param="request")
    limit = settings.server.max_query_chars
    if len(body.request) + len(body.context or "") > limit:
        raise InvalidBody(
            f"`request` and `context` together are over the limit of {limit} characters",
            param="request",
        )
    return body


async def list_flows(request: Request) -> Response:
    runner = runner_for(request)
    flows = [
        {"name": name, "stages": [s.value for s in stages]} for name, stages in runner.flows.items()
    ]
    return JSON({"flows": flows})


async def run_default_flow(request: Request) -> Response:
    return await _run(request, DEFAULT_FLOW)


async def run_flow(request: Request) -> Response:
    return await _run(request, request.path_params["name"])


async def _run(request: Request, name: str) -> Response:
    try:
        runner = runner_for(request)
        runner.stages(name)  # an unknown flow is a 404 before the body is even read
        body = _check(decode(await request.body(), FlowBody), runner.orchestrator.settings)
        events = runner.events(
            name,
            body.request,
            context=body.context,
            use_cache=body.use_cache,
            tenant=request.scope.get("aiorch.tenant", ""),
            request_id=request.scope.get("aiorch.request_id"),
        )
        if body.stream:
            return sse.EventStream(_sse(events), headers=SSE_HEADERS, failed=_failed)
        result = await _last(events)
    except AiorchError as error:
        # Answered here rather than by the app's handler, so the routes work in any app.
        return error_response(error)
    return JSON(result, status_code=result.http_status)


async def _last(events: AsyncGenerator[FlowEvent, None]) -> FlowResult:
    async with contextlib.aclosing(events):
        async for event in events:
            if isinstance(event, FlowResult):
                return event
    raise AssertionError("a flow always ends with its result")  # pragma: no cover


async def _sse(events: AsyncGenerator[FlowEvent, None]) -> AsyncIterator[bytes]:
    async with contextlib.aclosing(events):
        try:
            async for event in events:
                if isinstance(event, FlowStarted):
                    yield sse.event(event, "start")
                elif isinstance(event, StageResult):
                    yield sse.event(event, "stage")
                elif isinstance(event, FlowResult):
                    yield sse.event(event, "done" if event.status == "completed" else "error")
        except AiorchError as error:
            yield sse.error_event(error, "error")


def _failed() -> bytes:
    # The status line is long gone: all that is left is to say so in the stream.
    return sse.error_event(AiorchError("internal error while running the flow"), "error")


routes: list[Route] = [
    Route("/api/ai/flows", list_flows, methods=["GET"]),
    Route(f"/api/ai/flows/{DEFAULT_FLOW}", run_default_flow, methods=["POST"]),
    Route("/api/ai/flows/{name}", run_flow, methods=["POST"]),
]
