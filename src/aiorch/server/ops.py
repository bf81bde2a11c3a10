"""Operations endpoints: `/metrics`, `/healthz`, `/readyz`, `/openapi.json`."""

from __future__ import annotations

from importlib.metadata import version
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response

from aiorch.backends.base import Readiness
from aiorch.monitoring.prometheus_metrics import metrics_endpoint
from aiorch.orchestrator import AIOrchestrator
from aiorch.redact import redact_text, redact_url
from aiorch.server.middleware import READYZ_DETAILS
from aiorch.server.readiness import ReadinessCache
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
    """Ready when at least one backend answers; offline backends are shown as offline.

    Probed at most once per `readyz_cache_seconds`; the details (model, URL, the probe's words)
    only for callers the middleware authenticated, or for everyone on a service that has no
    credentials configured.
    """
    cache: ReadinessCache = request.app.state.readiness
    details = bool(request.scope.get(READYZ_DETAILS))
    states = [_state(r, details) for r in await cache.get()]
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


def _state(readiness: Readiness, details: bool) -> BackendState:
    if not details:
        return BackendState(service=readiness.service, kind=readiness.kind, ready=readiness.ready)
    return BackendState(
        service=readiness.service,
        kind=readiness.kind,
        ready=readiness.ready,
        model=readiness.model,
        url=None if readiness.url is None else redact_url(readiness.url),
        detail=redact_text(readiness.detail),
        model_loaded=readiness.model_loaded,
    )


async def openapi_json(request: Request) -> Response:
    if not hasattr(request.app.state, "openapi"):
        request.app.state.openapi = openapi(version("aiorch"))
    return JSON(request.app.state.openapi)
