"""The app factory: configuration in, a Starlette app out.

Routes are thin: they parse, call the orchestrator and serialise; the core does the work."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aiorch.config import Settings
from aiorch.errors import AiorchError, NotFound, RequestError, openai_type
from aiorch.monitoring.genai import GenAIMetrics, meter_provider_from_env
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.monitoring.tracing import provider_from_env
from aiorch.orchestrator import AIOrchestrator
from aiorch.ratelimit import build_auth_failure_limiter, build_rate_limiter
from aiorch.server import api, flows, openai_api, ops
from aiorch.server.middleware import GatewayMiddleware, route_label
from aiorch.server.readiness import ReadinessCache
from aiorch.server.responses import JSON, error_response

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    orchestrator: AIOrchestrator | None = None,
    metrics: Metrics | None = None,
) -> Starlette:
    tracer_provider = provider_from_env() if orchestrator is None else None
    meter_provider = meter_provider_from_env() if orchestrator is None else None
    orchestrator = orchestrator or AIOrchestrator(
        settings, metrics=metrics, tracer_provider=tracer_provider
    )
    if meter_provider is not None:  # the GenAI metrics, from the same call records
        orchestrator.metrics.observers.append(GenAIMetrics(meter_provider, settings))
    limiter = build_rate_limiter(settings)
    auth_limiter = build_auth_failure_limiter(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await orchestrator.close()
        if limiter is not None:
            await limiter.close()
        if auth_limiter is not None:
            await auth_limiter.close()
        if tracer_provider is not None:
            tracer_provider.shutdown()  # type: ignore[attr-defined]  # flush the SDK's exporter
        if meter_provider is not None:
            meter_provider.shutdown()  # type: ignore[attr-defined]  # export the last values
        log.info("shut down: backends, cache and rate limiter closed")

    routes = [
        Route("/api/ai/query", api.query, methods=["POST"]),
        Route("/v1/chat/completions", openai_api.chat_completions, methods=["POST"]),
        Route("/v1/models", openai_api.models, methods=["GET"]),
        Route("/v1/models/{model:path}", openai_api.model, methods=["GET"]),
        Route("/metrics", ops.metrics, methods=["GET"]),
        Route("/healthz", ops.healthz, methods=["GET"]),
        Route("/readyz", ops.readyz, methods=["GET"]),
        Route("/openapi.json", ops.openapi_json, methods=["GET"]),
        *flows.routes,
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                GatewayMiddleware,
                settings=settings.server,
                metrics=orchestrator.metrics,
                limiter=limiter,
                auth_limiter=auth_limiter,
            )
        ],
        exception_handlers={
            AiorchError: _aiorch_error,
            HTTPException: _http_error,
            Exception: _unexpected,
        },
        lifespan=lifespan,
    )
    # Starlette answers "/metrics/" with a redirect to "/metrics" whose Location it builds from
    # the client's Host header: an open redirect for anyone who can reach us. A 404 instead.
    app.router.redirect_slashes = False
    orchestrator.metrics.initialise_routes(
        (route_label(r.path), method)
        for r in routes
        for method in sorted(r.methods or ())
        if method != "HEAD"
    )
    app.state.orchestrator = orchestrator
    app.state.readiness = ReadinessCache(
        orchestrator.readiness, settings.server.readyz_cache_seconds
    )
    app.state.flow_runner = flows.build_runner(orchestrator)
    app.state.settings = settings
    return app


async def _aiorch_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, AiorchError)
    if not isinstance(error, RequestError):
        log.warning("request %s failed: %s", request.scope.get("aiorch.request_id"), error)
    return error_response(error)


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    if error.status_code == 404:
        return error_response(NotFound(f"no such endpoint: {request.method} {request.url.path}"))
    if error.status_code == 405:
        return JSON(
            {
                "error": {
                    "message": f"{request.method} is not allowed on {request.url.path}",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "method_not_allowed",
                }
            },
            status_code=405,
            headers=error.headers,
        )
    return JSON(
        {
            "error": {
                "message": str(error.detail),
                "type": openai_type(error.status_code),
                "param": None,
                "code": "invalid_request",
            }
        },
        status_code=error.status_code,
    )


async def _unexpected(request: Request, error: Exception) -> Response:
    request_id = request.scope.get("aiorch.request_id")
    log.exception("unexpected error in request %s", request_id)
    return JSON(
        {
            "error": {
                "message": f"internal error; quote request id {request_id} when reporting it",
                "type": "server_error",
                "param": None,
                "code": "internal",
            }
        },
        status_code=500,
    )
