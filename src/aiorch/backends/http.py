"""The HTTP transport shared by the network backends: one pooled aiohttp session per backend, and
the single place where transport exceptions and upstream error responses become `BackendError`s.

aiohttp over httpx: under concurrency httpx's pool serialises on a lock (encode/httpx#3215);
`docs/performance.md` has the side-by-side figures.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp
import msgspec
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

from aiorch.backends.sse import StreamFormatError
from aiorch.errors import (
    AiorchError,
    BackendConnectionError,
    BackendError,
    BackendOverloaded,
    BackendProtocolError,
    BackendRateLimited,
    BackendStatusError,
    BackendTimeout,
    QuotaExceeded,
    UpstreamRequestError,
)
from aiorch.redact import redact_text
from aiorch.service_settings import ServiceSettings
from aiorch.timing import Timeline

# Moonshot's 429 `error.type` values, and OpenAI's equivalents.
QUOTA_TYPES = frozenset({"exceeded_current_quota_error", "insufficient_quota"})
OVERLOAD_TYPES = frozenset({"engine_overloaded_error", "overloaded_error"})
# Ollama's errors are bare strings; its cloud models answer 429 "you have reached your
# session/hourly/weekly usage limit, ..." when the plan is used up: a quota, not a brief limit.
OLLAMA_QUOTA_MARK = "usage limit"
OLLAMA_CONTEXT_MARK = "exceeds the context length"
MAX_ERROR_BODY = 64 * 1024
MAX_MESSAGE = 300
# Upstream statuses that say "this request cannot succeed as it is": passed on to the client,
# never retried. 401 and 403 are not among them: they say our key is wrong, not the client.
REQUEST_STATUSES = frozenset({400, 404, 409, 413, 422})


# The timeline of the request whose call is opening a connection: set around `session.post`
# only, in the calling task, so that the connector can say how long the connection took.
_OPENING: ContextVar[Timeline | None] = ContextVar("aiorch_opening", default=None)


class _TimedConnector(aiohttp.TCPConnector):
    """A pooled connector that adds the wait for a connection (a new one, or a free one from the
    pool) to the `connect` phase of the request asking for it."""

    async def connect(  # the signature is aiohttp's
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109
    ) -> Connection:
        timeline = _OPENING.get()
        if timeline is None:
            return await super().connect(req, traces, timeout)
        started = time.perf_counter()
        try:
            return await super().connect(req, traces, timeout)
        finally:
            timeline.add("connect", time.perf_counter() - started)


class HttpTransport:
    """A lazily created, pooled session for one service (sessions need a running loop)."""

    def __init__(self, settings: ServiceSettings, headers: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self._headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = _TimedConnector(
                limit=self.settings.max_connections, keepalive_timeout=30, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                # The total deadline is enforced around each call (it must cover streams too).
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.settings.connect_timeout
                ),
                json_serialize=lambda obj: msgspec.json.encode(obj).decode(),
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @contextlib.asynccontextmanager
    async def post(
        self, path: str, body: bytes, model: str, timeline: Timeline | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST JSON; yields a 2xx response, raises the mapped error otherwise."""
        url = f"{self.settings.url}{path}"
        service = self.settings.name
        opening: Token[Timeline | None] = _OPENING.set(timeline)
        connecting = True
        try:
            async with (
                translate_errors(service, model),
                self.session.post(url, data=body, headers=JSON_HEADERS) as response,
            ):
                _OPENING.reset(opening)  # connected: what follows is not connecting
                connecting = False
                if response.status >= 400:
                    raw = await response.content.read(MAX_ERROR_BODY)
                    raise error_from_response(
                        response.status, raw, response.headers, service, model
                    )
                yield response
        finally:
            if connecting:
                _OPENING.reset(opening)


@contextlib.asynccontextmanager
async def translate_errors(service: str, model: str) -> AsyncIterator[None]:
    """Turn aiohttp and decoding exceptions into the `BackendError` tree."""
    try:
        yield
    except AiorchError:
        raise
    except TimeoutError as error:  # asyncio.timeout and aiohttp's socket timeouts
        raise BackendTimeout(
            f"{service} ({model}) timed out{_detail(error)}", service=service, model=model
        ) from error
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError) as error:
        raise BackendConnectionError(
            f"{service} ({model}) connection failed: {type(error).__name__}{_detail(error)}",
            service=service,
            model=model,
        ) from error
    except (
        msgspec.DecodeError,
        msgspec.ValidationError,
        UnicodeDecodeError,
        StreamFormatError,
    ) as error:
        raise BackendProtocolError(
            f"{service} ({model}) sent a malformed response: {_clip(str(error))}",
            service=service,
            model=model,
        ) from error
    except aiohttp.ClientError as error:
        raise BackendConnectionError(
            f"{service} ({model}) request failed: {type(error).__name__}{_detail(error)}",
            service=service,
            model=model,
        ) from error
    except ValueError as error:
        # aiohttp refuses to send some requests (URL credentials beside an Authorization header,
        # a header value with a line break): a setting start-up did not catch. The backend
        # failed, the client did nothing wrong: a 502 naming it, never a 500.
        raise BackendConnectionError(
            f"{service} ({model}) request could not be sent: {type(error).__name__}"
            f"{_detail(error)}",
            service=service,
            model=model,
        ) from error


def error_from_response(
    status: int, body: bytes, headers: Mapping[str, str], service: str, model: str
) -> BackendError | UpstreamRequestError:
    """Map an upstream error response (OpenAI/Moonshot or Ollama shape) to the right error."""
    error_type, message, code, param = _parse_error_body(body)
    if code is None and message is not None and OLLAMA_CONTEXT_MARK in message.lower():
        code = "context_length_exceeded"  # Ollama's errors are bare strings: name the case
    if status in REQUEST_STATUSES:
        return UpstreamRequestError(
            _clip(message or f"{service} ({model}) answered HTTP {status}"),
            status=status,
            upstream_type=error_type,
            code=code,
            param=param,
            service=service,
            model=model,
        )
    retry_after = parse_retry_after(headers.get("Retry-After"))
    text = f"{service} ({model}) answered HTTP {status}"
    if error_type:
        text += f" {error_type}"
    if message:
        text += f": {_clip(message)}"
    cls: type[BackendError]
    if status == 429:
        if error_type in QUOTA_TYPES or (
            error_type is None and message is not None and OLLAMA_QUOTA_MARK in message.lower()
        ):
            cls = QuotaExceeded
        elif error_type in OVERLOAD_TYPES:
            cls = BackendOverloaded
        else:
            cls = BackendRateLimited
    elif status in (408, 504):
        cls = BackendTimeout
    elif status == 503 or error_type in OVERLOAD_TYPES:
        cls = BackendOverloaded
    else:
        return BackendStatusError(
            text, upstream_status=status, service=service, model=model, retry_after=retry_after
        )
    return cls(text, service=service, model=model, retry_after=retry_after)


def _parse_error_body(body: bytes) -> tuple[str | None, str | None, str | None, str | None]:
    """(type, message, code, param) of an error body, as far as it has them."""
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        text = body.decode("utf-8", "replace").strip()
        return None, text or None, None, None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):  # OpenAI / Moonshot
            return tuple(  # type: ignore[return-value]
                str(error[k]) if error.get(k) not in (None, "") else None
                for k in ("type", "message", "code", "param")
            )
        if isinstance(error, str):  # Ollama
            return None, error, None, None
    return None, None, None, None


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


JSON_HEADERS = {"Content-Type": "application/json"}


def _detail(error: BaseException) -> str:
    text = redact_text(str(error))  # aiohttp's messages may quote the URL, credentials and all
    return f": {_clip(text)}" if text else ""


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."
