"""Helpers for the mock upstream's own tests: start it, talk to it, read its streams."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.procs import AIORCH, free_port, run_server

KIMI = "kimi-k2-thinking"
QWEN = "qwen2.5-coder:7b"
OLLAMA_KIMI = "kimi-k2-thinking:cloud"


def start_mock(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    port = free_port()
    argv = [*AIORCH, "mock-upstream", "--port", str(port), *args]
    return run_server(argv, port=port, ready_path="/healthz", tmp_path=tmp, env=env, name="mock")


def chat(content: str, model: str = KIMI, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


async def post_json(
    http: aiohttp.ClientSession, path: str, body: Any, **kwargs: Any
) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with http.post(path, json=body, **kwargs) as response:
        return response.status, await response.json(content_type=None), response


async def sse(http: aiohttp.ClientSession, body: Any, **kwargs: Any) -> list[str]:
    """The `data:` payloads of an SSE response, in order."""
    async with http.post("/v1/chat/completions", json=body, **kwargs) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        text = (await response.read()).decode()
    assert text.endswith("\n\n")
    events = [block for block in text.split("\n\n") if block]
    assert all(e.startswith("data: ") for e in events)
    return [e[len("data: ") :] for e in events]


async def ndjson(http: aiohttp.ClientSession, body: Any) -> list[dict[str, Any]]:
    async with http.post("/api/chat", json=body) as response:
        assert response.status == 200
        assert response.content_type == "application/x-ndjson"
        lines = (await response.read()).decode().splitlines()
    return [json.loads(line) for line in lines]


async def stats(http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get("/_mock/stats") as response:
        result: dict[str, Any] = await response.json()
        return result


async def reset(http: aiohttp.ClientSession, *, config: bool = False) -> None:
    async with http.post("/_mock/reset", json={"config": config}) as response:
        assert response.status == 200


async def configure(http: aiohttp.ClientSession, **fields: Any) -> dict[str, Any]:
    status, body, _ = await post_json(http, "/_mock/config", fields)
    assert status == 200, body
    result: dict[str, Any] = body
    return result


def is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


async def read_broken(
    http: aiohttp.ClientSession, path: str, body: Any, headers: dict[str, str]
) -> bytes:
    """What arrived before the connection broke; fails if it did not break."""
    received = b""
    try:
        async with http.post(path, json=body, headers=headers) as response:
            assert response.status == 200
            async for data in response.content.iter_any():
                received += data
    except aiohttp.ClientPayloadError:
        return received
    raise AssertionError(f"{path} ended cleanly: {received!r}")


async def chunks(http: aiohttp.ClientSession, body: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """The decoded chunks of an SSE stream (without `[DONE]`, which must end it)."""
    events = await sse(http, body, **kwargs)
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


async def completion(http: aiohttp.ClientSession, body: Any, **kwargs: Any) -> dict[str, Any]:
    """A non-streamed answer that must succeed."""
    status, answer, _ = await post_json(http, "/v1/chat/completions", body, **kwargs)
    assert status == 200, answer
    result: dict[str, Any] = answer
    return result


async def ollama(http: aiohttp.ClientSession, body: Any) -> dict[str, Any]:
    """A non-streamed Ollama answer that must succeed."""
    status, answer, _ = await post_json(http, "/api/chat", {"stream": False, **body})
    assert status == 200, answer
    result: dict[str, Any] = answer
    return result
