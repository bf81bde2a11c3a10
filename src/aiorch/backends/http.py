"""The HTTP transport shared by the network backends: one pooled aiohttp session per backend, and
the single place where transport exceptions and upstream error responses become `BackendError`s.

aiohttp over httpx: under concurrency httpx's pool serialises on a lock (encode/httpx#3215);
`docs/performance.md` has the side-by-side figures.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp
import msgspec

from aiorch.config import BackendSettings
from aiorch.errors import (
    BackendConnectionError,
    BackendError,
    BackendOverloaded,
    BackendProtocolError,
    BackendRateLimited,
    BackendStatusError,
    BackendTimeout,
    QuotaExceeded,
)

# Moonshot's 429 `error.type` values, and OpenAI's equivalents.
QUOTA_TYPES = frozenset({"exceeded_current_quota_error", "insufficient_quota"})
OVERLOAD_TYPES = frozenset({"engine_overloaded_error", "overloaded_error"})
# Ollama's errors are bare strings; its cloud models answer 429 "you have reached your
# session/hourly/weekly usage limit, ..." when the plan is used up: a quota, not a brief limit.
OLLAMA_QUOTA_MARK = "usage limit"
MAX_ERROR_BODY = 64 * 1024
MAX_MESSAGE = 300


class HttpTransport:
    """A lazily created, pooled session for one backend (sessions need a running loop)."""

    def __init__(self, settings: BackendSettings, headers: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self._headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
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
    async def post(self, path: str, body: object) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST JSON; yields a 2xx response, raises the mapped error otherwise."""
        url = f"{self.settings.url}{path}"
        service, model = self.settings.service.value, self.settings.model_id
        async with (
            translate_errors(service, model),
            self.session.post(
                url, data=msgspec.json.encode(body), headers={"Content-Type": "application/json"}
            ) as response,
        ):
            if response.status >= 400:
                raw = await response.content.read(MAX_ERROR_BODY)
                raise error_from_response(response.status, raw, response.headers, service, model)
            yield response


@contextlib.asynccontextmanager
async def translate_errors(service: str, model: str) -> AsyncIterator[None]:
    """Turn aiohttp and decoding exceptions into the `BackendError` tree."""
    try:
        yield
    except BackendError:
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
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as error:
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


def error_from_response(
    status: int, body: bytes, headers: Mapping[str, str], service: str, model: str
) -> BackendError:
    """Map an upstream error response (OpenAI/Moonshot or Ollama shape) to the right error."""
    error_type, message = _parse_error_body(body)
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


def _parse_error_body(body: bytes) -> tuple[str | None, str | None]:
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        text = body.decode("utf-8", "replace").strip()
        return None, text or None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):  # OpenAI / Moonshot
            kind, message = error.get("type"), error.get("message")
            return (str(kind) if kind else None), (str(message) if message else None)
        if isinstance(error, str):  # Ollama
            return None, error
    return None, None


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


async def iter_lines(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """Non-empty lines of a streamed body, as they arrive."""
    async for line in response.content:
        line = line.strip()
        if line:
            yield line


def deadline(seconds: float | None) -> asyncio.Timeout:
    return asyncio.timeout(seconds)


def _detail(error: BaseException) -> str:
    text = str(error)
    return f": {_clip(text)}" if text else ""


def _clip(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."
