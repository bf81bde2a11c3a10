"""One pure-ASGI middleware for what every request needs before it reaches a route.

Request id (accepted from `X-Request-ID` when sane, made up otherwise, always returned), the body
size limit and a deadline for receiving the body (a client trickling bytes cannot hold a worker),
API keys on `/api` and `/v1` and the metrics token on `/metrics` (a wrong one counts against the
client address's failed-authentication limit), then the per-client rate limit, and HTTP metrics
by route template (never by raw path, so a client cannot create label values).

Header size, header count and the deadline for headers are enforced earlier, by the HTTP
protocol (`aiorch.server.protocol`), before a request reaches any of this.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import random
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
from aiorch.ratelimit import AuthFailureLimiter, RateLimiter
from aiorch.server import sse
from aiorch.server.protocol import BODY_REFUSED
from aiorch.server.responses import error_response
from aiorch.timing import Timeline

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
# Set in the scope when the caller may see /readyz's details (a key, the metrics token, or an
# open service); read by the route.
READYZ_DETAILS = "aiorch.readyz_details"


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
        auth_limiter: AuthFailureLimiter | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.key_hashes = tuple(settings.api_key_hashes)
        self.limiter = limiter
        self.auth_limiter = auth_limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        request_id = _request_id(headers.get(b"x-request-id"))
        scope["aiorch.request_id"] = request_id
        timeline = scope["aiorch.timeline"] = Timeline(scope.get("aiorch.received"))
        status = 500
        streaming: bool | None = None  # None until the response has started
        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = message["status"]
                added = [id_header]
                if timeline.used:  # the answer's phases so far (a stream's: up to its start)
                    added.append((b"server-timing", timeline.header(timeline.finish()).encode()))
                message["headers"] = [*message.get("headers", []), *added]
                streaming = any(
                    k.lower() == b"content-type" and v.startswith(b"text/event-stream")
                    for k, v in message["headers"]
                )
            await send(message)

        try:
            refused = _check_length(headers, self.settings.max_body_bytes)
            if refused is not None:
                scope[BODY_REFUSED] = True
            error = (
                refused or await self._authenticate(scope, headers) or await self._rate_limit(scope)
            )
            if error is not None:
                await error_response(error)(scope, receive, send_with_id)
                return
            await self.app(scope, self._limited(scope, receive), send_with_id)
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
            if timeline.used:
                self.metrics.record_phases(timeline.finish())

    async def _authenticate(self, scope: Scope, headers: dict[bytes, bytes]) -> AiorchError | None:
        """API keys on `/api` and `/v1`, the metrics token on `/metrics`, either on `/readyz`
        (optional there: it only unlocks the details).

        A missing credential is a plain 401; a wrong one also counts against the client
        address, and an address with too many failures is refused (429) before its credential is
        even looked at, so that a blocked guesser cannot tell a right key from a wrong one.
        """
        path: str = scope["path"]
        token = self.settings.metrics_token
        if path == "/readyz":
            if not (self.key_hashes or token):
                scope[READYZ_DETAILS] = True  # nothing to authenticate with: an open service
                return None
            missing, wrong = None, "the API key or metrics token is not valid"
        elif self.key_hashes and path.startswith(PROTECTED):
            missing = "an API key is required: send 'Authorization: Bearer <key>'"
            wrong = "the API key is not valid"
        elif token and path == "/metrics":
            missing = wrong = "/metrics needs the metrics token as a Bearer token"
        else:
            return None
        presented = _presented_key(headers)
        if presented is None:
            # On /readyz, load balancers: the status and ready flags, no details.
            return None if missing is None else AuthenticationError(missing)
        address = _client_address(scope)
        if self.auth_limiter is not None:
            blocked = self.auth_limiter.blocked_for(address)
            if blocked > 0:
                return _too_many_failures(blocked)
        tenant = None if path == "/metrics" else self._tenant(presented)
        if tenant is not None:
            scope["aiorch.tenant"] = tenant
            scope[READYZ_DETAILS] = True
            return None
        if token and not path.startswith(PROTECTED) and _same(presented, token):
            scope[READYZ_DETAILS] = True
            return None
        if self.auth_limiter is not None:
            wait = await self.auth_limiter.failed(address)
            if wait > 0:
                return _too_many_failures(wait)
        return AuthenticationError(wrong)

    def _tenant(self, presented: bytes) -> str | None:
        """The tenant (hash prefix) of a configured API key, None for anything else."""
        digest = _key_digest(presented)
        if digest is not None and any(
            hmac.compare_digest(digest, known) for known in self.key_hashes
        ):
            return digest[:16]
        return None

    async def _rate_limit(self, scope: Scope) -> AiorchError | None:
        """After authentication: one token per request from the client's bucket."""
        if self.limiter is None or not scope["path"].startswith(PROTECTED):
            return None
        tenant = scope.get("aiorch.tenant")
        key = f"key:{tenant}" if tenant else f"addr:{_client_address(scope)}"
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

    def _limited(self, scope: Scope, receive: Receive) -> Receive:
        """Count body bytes as they arrive (a chunked body has no Content-Length to check), and
        bound the time the whole body may take to arrive. A refused body marks the scope: the
        connection ends after the answer (server/protocol.py)."""
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
                scope[BODY_REFUSED] = True
                raise BodyTimeout(f"the request body did not arrive within {timeout:g} s") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    scope[BODY_REFUSED] = True
                    raise PayloadTooLarge(f"body is over the {limit}-byte limit")
                complete = not message.get("more_body", False)
            return message

        return receive_limited


def _check_length(headers: dict[bytes, bytes], limit: int) -> AiorchError | None:
    length = headers.get(b"content-length")
    if length is None:
        return None
    if not length.isdigit():
        return PayloadTooLarge("Content-Length is not a number")
    if int(length) > limit:
        return PayloadTooLarge(f"body is {int(length)} bytes; the limit is {limit}")
    return None


def _client_address(scope: Scope) -> str:
    """The peer's address; a configured proxy's forwarded one (uvicorn puts it in the scope)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _too_many_failures(seconds: float) -> RateLimited:
    wait = max(1, math.ceil(seconds))  # whole seconds, rounded up: never too early
    return RateLimited(
        f"too many failed authentications from this address; retry in {wait} s",
        retry_after=wait,
    )


def _presented_key(headers: dict[bytes, bytes]) -> bytes | None:
    """The key as the client sent it: raw bytes, compared as UTF-8 (how keys are configured)."""
    auth = headers.get(b"authorization")
    if auth is not None:
        scheme, _, value = auth.partition(b" ")
        if scheme.lower() == b"bearer" and value.strip():
            return value.strip()
    key = headers.get(b"x-api-key")
    return key.strip() or None if key is not None else None


def _same(presented: bytes, token: str) -> bool:
    return hmac.compare_digest(presented, token.encode())


def _key_digest(key: bytes) -> str | None:
    """The key's hash as configured keys are hashed (UTF-8), or None for bytes that are not
    UTF-8, which no configured key can be."""
    try:
        return hash_api_key(key.decode("utf-8"))
    except UnicodeDecodeError:
        return None


def _request_id(value: bytes | None) -> str:
    if value is not None:
        text = value.decode("latin-1")
        if REQUEST_ID.fullmatch(text):
            return text
    return f"{random.getrandbits(64):016x}"  # a correlation id, not a secret: no system call
