"""One pure-ASGI middleware for what every request needs before it reaches a route.

Request id (accepted from `X-Request-ID` when sane, made up otherwise, always returned), the body
size limit and a deadline for receiving the body (a client trickling bytes cannot hold a worker),
API keys on `/api` and `/v1`, then the per-client rate limit there, the metrics token on
`/metrics`, and HTTP metrics by route template (never by raw path, so a client cannot create
label values).
"""

from __future__ import annotations

import asyncio
import hmac
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from aiorch.config import ServerSettings, hash_api_key
from aiorch.errors import (
    AiorchError,
    AuthenticationError,
    PayloadTooLarge,
    RateLimited,
    RequestError,
)
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.ratelimit import RateLimiter
from aiorch.server import sse
from aiorch.server.responses import error_response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
ROUTES = frozenset(
    {
        "/api/ai/query",
        "/v1/chat/completions",
        "/v1/models",
        "/metrics",
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/api/ai/flows",
        "/api/ai/flows/ba-dev-qa",
    }
)
FLOWS_PREFIX = "/api/ai/flows/"
MODELS_PREFIX = "/v1/models/"
METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS"})
PROTECTED = ("/api/", "/v1/")


def route_label(path: str) -> str:
    if path in ROUTES:
        return path
    if path.startswith(FLOWS_PREFIX):
        return FLOWS_PREFIX + "{name}"
    if path.startswith(MODELS_PREFIX):
        return MODELS_PREFIX + "{model}"
    return "other"


class BodyTimeout(RequestError):
    status_code = 408


class ShuttingDown(AiorchError):
    status_code = 503
    error_type = "cancelled"

    def __init__(self) -> None:
        super().__init__(
            "the service is shutting down and could not finish this request in time; retry"
        )
        self.retry_after = 1.0


class GatewayMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        settings: ServerSettings,
        metrics: Metrics,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.key_hashes = tuple(settings.api_key_hashes)
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        request_id = _request_id(headers.get(b"x-request-id"))
        scope["aiorch.request_id"] = request_id
        status = 500
        streaming: bool | None = None  # None until the response has started
        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), id_header]
                streaming = any(
                    k.lower() == b"content-type" and v.startswith(b"text/event-stream")
                    for k, v in message["headers"]
                )
            await send(message)

        try:
            error = self._check(scope, headers) or await self._rate_limit(scope)
            if error is not None:
                await error_response(error)(scope, receive, send_with_id)
                return
            await self.app(scope, self._limited(receive), send_with_id)
        except asyncio.CancelledError:
            # Only the server cancels a request: its graceful-shutdown deadline ran out. Say so
            # (uvicorn would send a bare "Internal Server Error"), and let the task end.
            if streaming is None:
                await error_response(ShuttingDown())(scope, receive, send_with_id)
            elif streaming:
                name = None if scope["path"].startswith("/v1/") else "error"
                await send(
                    {
                        "type": "http.response.body",
                        "body": sse.error_event(ShuttingDown(), name),
                        "more_body": False,
                    }
                )
            else:
                raise
        finally:
            route = route_label(scope["path"])
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.http_requests.labels(route, method, str(status)).inc()
            self.metrics.http_duration.labels(route).observe(time.perf_counter() - started)

    def _check(self, scope: Scope, headers: dict[bytes, bytes]) -> AiorchError | None:
        path: str = scope["path"]
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return PayloadTooLarge("Content-Length is not a number")
            if int(length) > self.settings.max_body_bytes:
                return PayloadTooLarge(
                    f"body is {int(length)} bytes; the limit is {self.settings.max_body_bytes}"
                )
        if self.key_hashes and path.startswith(PROTECTED):
            key = _presented_key(headers)
            if key is None:
                return AuthenticationError(
                    "an API key is required: send 'Authorization: Bearer <key>'"
                )
            digest = hash_api_key(key)
            if not any(hmac.compare_digest(digest, known) for known in self.key_hashes):
                return AuthenticationError("the API key is not valid")
            scope["aiorch.tenant"] = digest[:16]
        token = self.settings.metrics_token
        if token and path == "/metrics":
            presented = _presented_key(headers) or ""
            if not hmac.compare_digest(presented.encode(), token.encode()):
                return AuthenticationError("/metrics needs the metrics token as a Bearer token")
        return None

    async def _rate_limit(self, scope: Scope) -> AiorchError | None:
        """After authentication: one token per request from the client's bucket."""
        if self.limiter is None or not scope["path"].startswith(PROTECTED):
            return None
        tenant = scope.get("aiorch.tenant")
        client = scope.get("client")
        key = f"key:{tenant}" if tenant else f"addr:{client[0] if client else 'unknown'}"
        wait = await self.limiter.acquire(key)
        if wait <= 0:
            return None
        self.metrics.rate_limited.inc()
        seconds = max(1, math.ceil(wait))  # whole seconds, rounded up: never too early
        return RateLimited(
            f"rate limit of {self.settings.rate_limit_per_minute:g} requests a minute "
            f"(burst {self.settings.rate_limit_burst}) exceeded; retry in {seconds} s",
            retry_after=seconds,
        )

    def _limited(self, receive: Receive) -> Receive:
        """Count body bytes as they arrive (a chunked body has no Content-Length to check), and
        bound the time the whole body may take to arrive."""
        limit = self.settings.max_body_bytes
        timeout = self.settings.body_timeout_seconds
        seen = 0
        complete = False
        deadline: float | None = None

        async def receive_limited() -> Message:
            nonlocal seen, complete, deadline
            if complete:  # after the body, receive() only waits for a disconnect: no deadline
                return await receive()
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + timeout
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(f"the request body did not arrive within {timeout:g} s") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"body is over the {limit}-byte limit")
                complete = not message.get("more_body", False)
            return message

        return receive_limited


def _presented_key(headers: dict[bytes, bytes]) -> str | None:
    auth = headers.get(b"authorization")
    if auth is not None:
        scheme, _, value = auth.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = headers.get(b"x-api-key")
    return key.decode("latin-1").strip() or None if key is not None else None


def _request_id(value: bytes | None) -> str:
    if value is not None:
        text = value.decode("latin-1")
        if REQUEST_ID.fullmatch(text):
            return text
    return os.urandom(8).hex()
