"""What a benchmark measures: one backend, the orchestrator in-process, or aiorch over HTTP.

A target answers `call(item)` with an `Outcome` or raises; `error_type_of` maps what it raised to
the closed `error_type` vocabulary of `aiorch.errors` (plus `http_<status>` for an HTTP answer
without an error body), which is how failures are counted.
"""

from __future__ import annotations

import time
from typing import Literal, Protocol

import aiohttp
import msgspec

from aiorch.bench.mix import QueryItem
from aiorch.clients import ModelClient
from aiorch.config import Settings
from aiorch.errors import AiorchError
from aiorch.orchestrator import AIOrchestrator
from aiorch.request import ChatMessage, ChatRequest, Thinking

Endpoint = Literal["query", "chat"]
PATHS: dict[Endpoint, str] = {"query": "/api/ai/query", "chat": "/v1/chat/completions"}


class Outcome(msgspec.Struct, frozen=True):
    service: str | None = None  # who answered: kimi, qwen, multi, or a backend's model
    cached: bool = False
    ttft: float | None = None  # seconds from the send to the first text (streams)


class BenchFailure(Exception):
    """A request that completed but failed; `error_type` is what it is counted as."""

    def __init__(self, error_type: str, message: str = "") -> None:
        super().__init__(message or error_type)
        self.error_type = error_type


def error_type_of(error: BaseException) -> str:
    if isinstance(error, BenchFailure | AiorchError):
        return error.error_type
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "stream_interrupted"
    if isinstance(error, aiohttp.ClientConnectionError | ConnectionError):
        return "connection_error"
    if isinstance(error, msgspec.DecodeError | msgspec.ValidationError | UnicodeDecodeError):
        return "bad_response"
    return type(error).__name__


class Target(Protocol):
    description: str

    async def call(self, item: QueryItem) -> Outcome: ...

    async def close(self) -> None: ...


class BackendTarget:
    """One model straight through `KimiClient`/`QwenClient`: no routing, no cache."""

    def __init__(
        self,
        client: ModelClient,
        *,
        max_tokens: int | None = None,
        thinking: bool | None = None,
        stream: bool = False,
    ) -> None:
        self.client = client
        service = client.config.service
        where = f" at {service.url}" if service.url else ""
        self.description = (
            f"{service.name} backend ({service.kind.value}, {service.model_id}{where})"
        )
        self._max_tokens = max_tokens
        self._thinking = thinking
        self._stream = stream

    async def call(self, item: QueryItem) -> Outcome:
        thinking = self._thinking
        request = ChatRequest(
            messages=(ChatMessage(role="user", content=item.query),),
            model=self.client.model.id,
            max_tokens=self._max_tokens,
            thinking=None if thinking is None else Thinking("enabled" if thinking else "disabled"),
        )
        model = self.client.config.model
        if not self._stream:
            await self.client.complete(request)
            return Outcome(service=model)
        started = time.perf_counter()
        ttft: float | None = None
        async for delta in self.client.stream(request):
            if ttft is None and delta.has_output:
                ttft = time.perf_counter() - started
        return Outcome(service=model, ttft=ttft)

    async def close(self) -> None:
        await self.client.close()


class OrchestratorTarget:
    """`AIOrchestrator.process_query` in this process: the core without HTTP."""

    def __init__(
        self,
        settings: Settings,
        *,
        use_cache: bool = True,
        max_tokens: int | None = None,
        thinking: bool | None = None,
    ) -> None:
        self.orchestrator = AIOrchestrator(settings)
        mode = "offline" if settings.offline else "configured backends"
        self.description = f"orchestrator in-process ({mode})"
        self._use_cache = use_cache
        self._max_tokens = max_tokens
        self._thinking = thinking

    async def call(self, item: QueryItem) -> Outcome:
        result = await self.orchestrator.process_query(
            item.query,
            item.query_type,
            use_cache=self._use_cache,
            max_tokens=self._max_tokens,
            thinking=self._thinking,
        )
        return Outcome(service=result.selected_service, cached=result.cached)

    async def close(self) -> None:
        await self.orchestrator.close()


class _QueryReply(msgspec.Struct):
    selected_service: str | None = None
    cached: bool = False


class _ChatMeta(msgspec.Struct):
    selected_service: str | None = None
    cached: bool = False


class _ChatReply(msgspec.Struct):
    aiorch: _ChatMeta | None = None


class _ErrorDetail(msgspec.Struct):
    type: str = "upstream_error"


class _ErrorBody(msgspec.Struct):
    error: _ErrorDetail | None = None


class _SseData(msgspec.Struct):
    """The fields of any SSE data event that we look at (both endpoints)."""

    error: _ErrorDetail | None = None
    selected_service: str | None = None
    cached: bool = False
    delta: str | dict[str, str] | None = None
    reasoning: str | None = None
    choices: list[dict[str, object]] = []


_decode_query = msgspec.json.Decoder(_QueryReply).decode
_decode_chat = msgspec.json.Decoder(_ChatReply).decode
_decode_error = msgspec.json.Decoder(_ErrorBody).decode
_decode_sse = msgspec.json.Decoder(_SseData).decode


class HttpTarget:
    """A running aiorch over HTTP: `/api/ai/query` or `/v1/chat/completions`, streamed or not."""

    def __init__(
        self,
        base_url: str,
        *,
        endpoint: Endpoint = "query",
        stream: bool = False,
        model: str = "auto",
        api_key: str | None = None,
        use_cache: bool = True,
        max_tokens: int | None = None,
        thinking: bool | None = None,
        pool_size: int = 1024,
    ) -> None:
        self.url = base_url.rstrip("/") + PATHS[endpoint]
        kind = "streamed" if stream else "not streamed"
        self.description = f"aiorch over HTTP: POST {self.url} ({kind})"
        self._endpoint: Endpoint = endpoint
        self._stream = stream
        self._model = model
        self._use_cache = use_cache
        self._max_tokens = max_tokens
        self._thinking = thinking
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size, limit_per_host=0),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                headers=self._headers,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    def body(self, item: QueryItem) -> bytes:
        payload: dict[str, object]
        if self._endpoint == "query":
            payload = {"query": item.query, "stream": self._stream}
            if item.query_type is not None:
                payload["query_type"] = item.query_type.value
            if not self._use_cache:
                payload["use_cache"] = False
            if self._model != "auto":
                payload["model"] = self._model
            if self._thinking is not None:
                payload["thinking"] = self._thinking
        else:
            payload = {
                "model": self._model,
                "messages": [{"role": "user", "content": item.query}],
                "stream": self._stream,
            }
            if self._thinking is not None:
                payload["thinking"] = {"type": "enabled" if self._thinking else "disabled"}
        if self._max_tokens is not None:
            payload["max_tokens"] = self._max_tokens
        return msgspec.json.encode(payload)

    async def call(self, item: QueryItem) -> Outcome:
        started = time.perf_counter()
        async with self._client().post(self.url, data=self.body(item)) as response:
            if response.status >= 400:
                raw = await response.read()
                raise BenchFailure(_http_error_type(response.status, raw), raw[:200].decode())
            if not self._stream:
                raw = await response.read()
                query = self._endpoint == "query"
                meta = _decode_query(raw) if query else _decode_chat(raw).aiorch
                if meta is None:
                    return Outcome()
                return Outcome(service=meta.selected_service, cached=meta.cached)
            return await self._read_stream(response, started)

    async def _read_stream(self, response: aiohttp.ClientResponse, started: float) -> Outcome:
        """Read SSE to its end: `event: done` (aiorch's API) or `data: [DONE]` (OpenAI's)."""
        service: str | None = None
        cached = False
        ttft: float | None = None
        event = ""
        async for raw_line in response.content:
            line = raw_line.strip()
            if not line:
                event = ""
                continue
            if line.startswith(b"event:"):
                event = line[6:].strip().decode()
                continue
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                return Outcome(service=service, cached=cached, ttft=ttft)
            data = _decode_sse(payload)
            if data.error is not None or event == "error":
                kind = data.error.type if data.error is not None else "upstream_error"
                raise BenchFailure(kind, "error event in the stream")
            if event == "meta":
                service, cached = data.selected_service, data.cached
            elif event == "done":
                return Outcome(service=service, cached=cached, ttft=ttft)
            elif ttft is None and _has_text(data):
                ttft = time.perf_counter() - started
        raise BenchFailure("stream_interrupted", "the stream ended without its final event")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _has_text(data: _SseData) -> bool:
    if isinstance(data.delta, str):
        return bool(data.delta or data.reasoning)
    for choice in data.choices:
        delta = choice.get("delta")
        if isinstance(delta, dict) and (delta.get("content") or delta.get("reasoning_content")):
            return True
    return False


def _http_error_type(status: int, raw: bytes) -> str:
    try:
        body = _decode_error(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return f"http_{status}"
    return body.error.type if body.error is not None else f"http_{status}"
