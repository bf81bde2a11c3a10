"""The mock upstream in the test's own event loop, on a free port: real HTTP, no subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
from aiohttp import web

from aiorch.backends import Backend
from aiorch.config import BackendSettings
from aiorch.mock import MockConfig, create_app
from aiorch.types import Completion, CompletionRequest, Message, Service, StreamChunk
from tests.support.procs import free_port

API_KEY = "sk-unit-mock"


@contextlib.asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    # As `aiorch mock-upstream` runs it: a client that goes away cancels its handler.
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def running_mock(config: MockConfig | None = None) -> AsyncIterator[str]:
    async with serve_app(create_app(config or MockConfig(api_key=API_KEY))) as url:
        yield url


async def mock_get(url: str, path: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(f"{url}{path}") as response:
        return await response.json()


async def sent_bodies(url: str) -> list[dict[str, Any]]:
    """The chat request bodies the mock received, oldest first."""
    recent = await mock_get(url, "/_mock/requests")
    return [
        r["body"]
        for r in recent["requests"]
        if r["endpoint"] in ("/v1/chat/completions", "/api/chat")
    ]


def openai_settings(url: str, **fields: Any) -> BackendSettings:
    values: dict[str, Any] = {
        "service": Service.KIMI,
        "base_url": f"{url}/v1",
        "api_key": API_KEY,
        "model": "kimi-k2-thinking",
    }
    return BackendSettings(**{**values, **fields})


def ollama_settings(url: str, **fields: Any) -> BackendSettings:
    values: dict[str, Any] = {
        "service": Service.QWEN,
        "ollama_url": url,
        "ollama_model": "qwen2.5-coder:7b",
    }
    return BackendSettings(**{**values, **fields})


async def collect(backend: Backend, text: str, **fields: Any) -> list[StreamChunk]:
    """Every chunk of a streamed answer to `text`."""
    return [chunk async for chunk in backend.stream(ask(text, **fields))]


def ask(text: str, **fields: Any) -> CompletionRequest:
    return CompletionRequest(messages=(Message("user", text),), **fields)


async def call(backend: Backend, prompt: str, streaming: bool) -> Completion | list[StreamChunk]:
    """One whole call, streamed or not: the two paths must fail the same way."""
    if streaming:
        return [chunk async for chunk in backend.stream(ask(prompt))]
    return await backend.complete(ask(prompt))


async def drain(chunks: AsyncIterator[StreamChunk], into: list[StreamChunk]) -> None:
    async for chunk in chunks:
        into.append(chunk)


async def wait_for_stats(
    url: str, predicate: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """Poll the mock's counters until `predicate` holds; gives up (fails) after 20 s."""
    for _ in range(2000):
        stats: dict[str, Any] = await mock_get(url, "/_mock/stats")
        if predicate(stats):
            return stats
        await asyncio.sleep(0.01)
    raise AssertionError(f"gave up waiting for {what}")


@contextlib.contextmanager
def black_hole() -> Iterator[str]:
    """A URL whose server accepts connections (the kernel's backlog does) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
