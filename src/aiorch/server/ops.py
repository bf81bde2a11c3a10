"""Operations endpoints: `/metrics`, `/healthz`, `/readyz`, `/openapi.json`."""

from __future__ import annotations

from importlib.metadata import version
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response

from aiorch.monitoring.prometheus_metrics import metrics_endpoint
from aiorch.orchestrator import AIOrchestrator
from aiorch.server.responses import JSON
from aiorch.server.schemas import BackendState, Readyz, openapi


async def metrics(request: Request) -> Response:
    orchestrator: AIOrchestrator = request.app.state.orchestrator
    body, content_type = metrics_endpoint(
        orchestrator.metrics.registry, request.headers.get("accept")
    )
    return Response(body, media_type=content_type)


async def healthz(request: Request) -> Response:
    return JSON({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when at least one backend answers; offline backends are shown as offline."""
    orchestrator: AIOrchestrator = request.app.state.orchestrator
    states = [
        BackendState(r.service, r.kind, r.model, r.url, r.ready, r.detail, r.model_loaded)
        for r in await orchestrator.readiness()
    ]
    offline = all(s.kind == "offline" for s in states)
    ready = [s.ready for s in states]
    status: Literal["ready", "degraded", "offline", "unavailable"]
    if offline:
        status = "offline"
    elif all(ready):
        status = "ready"
    elif any(ready):
        status = "degraded"
    else:
        status = "unavailable"
    code = 503 if status == "unavailable" else 200
    return JSON(Readyz(status=status, offline=offline, backends=states), status_code=code)


async def openapi_json(request: Request) -> Response:
    if not hasattr(request.app.state, "openapi"):
        request.app.state.openapi = openapi(version("aiorch"))
    return JSON(request.app.state.openapi)
