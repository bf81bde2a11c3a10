"""The mock upstream in the test's own event loop, on a free port: real HTTP, no subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
from aiohttp import web

from aiorch.answer import Collector, Delta, End, Event, Skipped, Timings
from aiorch.backends import Backend, Call
from aiorch.catalog import model_of
from aiorch.clients import Reply
from aiorch.mock import MockConfig, create_app
from aiorch.models import prepare
from aiorch.request import ChatMessage, ChatRequest
from aiorch.service_settings import ServiceSettings
from aiorch.types import Usage
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


def openai_settings(url: str, **fields: Any) -> ServiceSettings:
    values: dict[str, Any] = {
        "name": "kimi",
        "base_url": f"{url}/v1",
        "api_key": API_KEY,
        "model": "kimi-k2-thinking",
    }
    return ServiceSettings(**{**values, **fields})


def ollama_settings(url: str, **fields: Any) -> ServiceSettings:
    values: dict[str, Any] = {
        "name": "qwen",
        "ollama_url": url,
        "ollama_model": "qwen2.5-coder:7b",
    }
    return ServiceSettings(**{**values, **fields})


def ask(text: str, **fields: Any) -> ChatRequest:
    return ChatRequest(messages=(ChatMessage(role="user", content=text),), model="any", **fields)


def call_of(backend: Backend, request: ChatRequest, stream: bool, prefill: str = "") -> Call:
    """The call the core would make: the service's default model, its rules applied."""
    model = model_of(backend.settings, backend.settings.model_id)
    prepared = prepare(model, request)
    return Call(
        request=prepared.request,
        model=model,
        thinking=prepared.thinking,
        max_tokens=prepared.max_tokens,
        stream=stream,
        prefill=prefill,
    )


async def complete(backend: Backend, request: ChatRequest) -> Whole:
    """A plain call, made whole."""
    collector = Collector()
    end = End(Usage())
    async for event in backend.generate(call_of(backend, request, stream=False)):
        if isinstance(event, Delta):
            collector.add(event)
        elif isinstance(event, End):
            end = event
    return Whole(collector.choices(), end.usage, end.model, end.timings)


class Whole(Reply, frozen=True):
    """A backend's whole answer, with Ollama's timings when it sent them."""

    timings: Timings | None = None


def stream(backend: Backend, request: ChatRequest) -> AsyncIterator[Event]:
    return backend.generate(call_of(backend, request, stream=True))


async def collect(backend: Backend, text: str, **fields: Any) -> list[Event]:
    """Every event of a streamed answer to `text`: deltas, then the `End`."""
    return [event async for event in stream(backend, ask(text, **fields))]


def text_of(events: list[Event], *, reasoning: bool = False) -> str:
    deltas = [e for e in events if isinstance(e, Delta)]
    return "".join(d.reasoning if reasoning else d.content for d in deltas)


async def call(backend: Backend, prompt: str, streaming: bool) -> Whole | list[Event]:
    """One whole call, streamed or not: the two paths must fail the same way."""
    if streaming:
        return await collect(backend, prompt)
    return await complete(backend, ask(prompt))


async def drain(events: AsyncIterator[Event], into: list[Event]) -> None:
    async for event in events:
        if not isinstance(event, Skipped):
            into.append(event)


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
