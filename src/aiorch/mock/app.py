"""The mock's aiohttp application: both dialects plus the `/_mock/*` control endpoints."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from aiorch.mock import ollama, ollama_info, openai
from aiorch.mock.engine import STATE
from aiorch.mock.faults import openai_error
from aiorch.mock.settings import ConfigError, MockConfig, update
from aiorch.mock.state import MockState

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY = 64 * 1024 * 1024  # long contexts are the point of some tests


def _counted(handler: Handler) -> Handler:
    """Count in-flight requests, statuses and clients that left before the answer."""

    async def counted(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        state.stats.in_flight += 1
        try:
            response = await handler(request)
        except asyncio.CancelledError:
            state.stats.client_disconnects += 1
            raise
        finally:
            state.stats.in_flight -= 1
        state.stats.by_status[str(response.status)] += 1
        return response

    return counted


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(value), status=status, content_type="application/json"
    )


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return _json(
        {
            **state.stats.as_json(),
            "loaded_models": sorted(state.loaded),
            "pid": os.getpid(),
            "workers": state.workers,
        }
    )


def _single_worker(state: MockState) -> web.Response | None:
    if state.workers == 1:
        return None
    # Each worker process has its own state; changing one of N would make tests flaky.
    return openai_error(
        409,
        "invalid_request_error",
        f"runtime control needs --workers 1 (this mock runs {state.workers} worker processes)",
    )


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as error:
        raise ConfigError(f"body is not valid JSON: {error}") from None


async def reset(request: web.Request) -> web.Response:
    """Zero the counters and forget loaded models; `{"config": true}` also restores the config
    the mock started with."""
    state = request.app[STATE]
    refused = _single_worker(state)
    if refused is not None:
        return refused
    try:
        body = await _body(request)
    except ConfigError as error:
        return openai_error(400, "invalid_request_error", str(error))
    if isinstance(body, dict) and body.get("config") is True:
        state.apply(state.startup_config)
    state.reset()
    return _json({"status": "reset", "config": state.config.public()})


async def get_config(request: web.Request) -> web.Response:
    return _json(request.app[STATE].config.public())


async def post_config(request: web.Request) -> web.Response:
    state = request.app[STATE]
    refused = _single_worker(state)
    if refused is not None:
        return refused
    try:
        state.apply(update(state.config, await _body(request), "/_mock/config"))
    except ConfigError as error:
        return openai_error(400, "invalid_request_error", str(error))
    return _json(state.config.public())


async def recent(request: web.Request) -> web.Response:
    """The last requests received on the API endpoints (bodies decoded, no Authorization)."""
    state = request.app[STATE]
    try:
        limit = int(request.query.get("limit", len(state.recent)))
    except ValueError:
        return openai_error(400, "invalid_request_error", "limit must be an integer")
    items = list(state.recent)[-limit:] if limit > 0 else []
    return _json({"requests": [item.as_json() for item in items]})


def create_app(config: MockConfig, *, workers: int = 1) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    app[STATE] = MockState(config, workers=workers)
    app.router.add_post("/v1/chat/completions", _counted(openai.chat_completions))
    app.router.add_get("/v1/models", openai.models)
    app.router.add_get("/v1/models/{model:.+}", openai.model)
    app.router.add_post("/api/chat", _counted(ollama.chat))
    app.router.add_get("/api/tags", ollama_info.tags)
    app.router.add_get("/api/ps", ollama_info.ps)
    app.router.add_post("/api/show", ollama_info.show)
    app.router.add_get("/api/version", ollama_info.version)
    app.router.add_get("/", ollama_info.root)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/_mock/stats", stats)
    app.router.add_post("/_mock/reset", reset)
    app.router.add_get("/_mock/config", get_config)
    app.router.add_post("/_mock/config", post_config)
    app.router.add_get("/_mock/requests", recent)
    return app
