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
import logging
from collections.abc import AsyncGenerator, AsyncIterator

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from aiorch.agents.flow import FlowEvent, FlowResult, FlowRunner, FlowStarted, StageResult
from aiorch.agents.prompts import Prompts
from aiorch.config import Settings
from aiorch.errors import AiorchError, RequestError
from aiorch.orchestrator import AIOrchestrator
from aiorch.server import sse
from aiorch.server.responses import JSON, error_response
from aiorch.server.schemas import InvalidBody, decode

logger = logging.getLogger(__name__)
DEFAULT_FLOW = "ba-dev-qa"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class FlowBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    request: str
    use_cache: bool = True
    stream: bool = False
    context: str | None = None


def runner_for(request: Request) -> FlowRunner:
    state = request.app.state
    orchestrator: AIOrchestrator = state.orchestrator
    runner: FlowRunner | None = getattr(state, "flow_runner", None)
    if runner is None or runner.orchestrator is not orchestrator:
        runner = FlowRunner(orchestrator, prompts=Prompts.from_env())
        state.flow_runner = runner
    return runner


def _settings(request: Request, runner: FlowRunner) -> Settings:
    settings = getattr(request.app.state, "settings", None)
    return settings if isinstance(settings, Settings) else runner.orchestrator.settings


def _decode(raw: bytes) -> FlowBody:
    try:
        return decode(raw, FlowBody)
    except UnicodeDecodeError:
        # msgspec raises this, not a DecodeError, for bad UTF-8 inside a string.
        raise RequestError("request body is not valid JSON: it is not UTF-8") from None


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
        body = _check(_decode(await request.body()), _settings(request, runner))
        events = runner.events(
            name,
            body.request,
            context=body.context,
            use_cache=body.use_cache,
            tenant=request.scope.get("aiorch.tenant", ""),
            request_id=request.scope.get("aiorch.request_id"),
        )
        if body.stream:
            return StreamingResponse(
                _sse(events), media_type="text/event-stream", headers=SSE_HEADERS
            )
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
        except Exception:
            # The status line is long gone: all that is left is to say so in the stream.
            logger.exception("flow stream failed")
            yield sse.error_event(AiorchError("internal error while running the flow"), "error")


routes: list[Route] = [
    Route("/api/ai/flows", list_flows, methods=["GET"]),
    Route(f"/api/ai/flows/{DEFAULT_FLOW}", run_default_flow, methods=["POST"]),
    Route("/api/ai/flows/{name}", run_flow, methods=["POST"]),
]
