"""The mock's failover faults and assistant-prefill continuation, over real HTTP.

These are what the gateway's stream-rescue and failover scenarios are built from: a stream cut,
stalled or broken mid-way, a slow or refused first token, a model down for a while, and a second
model that continues the first one's text exactly.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from tests.integration.mock_support import (
    KIMI,
    QWEN,
    chat,
    completion,
    configure,
    is_json,
    ollama,
    post_json,
    read_broken,
    reset,
    start_mock,
    stats,
)
from tests.support.procs import Server

K26 = "kimi-k2.6"


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_mock(tmp_path_factory.mktemp("mock-failover")) as server:
        yield server


@pytest.fixture
async def http(mock: Server) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=mock.url) as session:
        await reset(session, config=True)
        yield session


async def _timed_lines(
    http: aiohttp.ClientSession, path: str, body: Any, headers: dict[str, str]
) -> list[tuple[float, bytes]]:
    """Each non-empty line of a streamed answer with when it arrived."""
    out: list[tuple[float, bytes]] = []
    async with http.post(path, json=body, headers=headers) as response:
        assert response.status == 200
        async for line in response.content:
            if line.strip():
                out.append((time.monotonic(), line.strip()))
    return out


def _content(events: list[bytes]) -> str:
    text = ""
    for event in events:
        payload = event.removeprefix(b"data: ")
        if payload == b"[DONE]" or not is_json(payload.decode()):
            continue
        for choice in json.loads(payload).get("choices", []):
            text += choice["delta"].get("content") or ""
    return text


@pytest.mark.parametrize(("path", "model"), [("/v1/chat/completions", K26), ("/api/chat", QWEN)])
async def test_stall_goes_silent_after_n_tokens_then_finishes(
    http: aiohttp.ClientSession, path: str, model: str
) -> None:
    headers = {"X-Mock-Fault": "stall", "X-Mock-Stall-After": "3", "X-Mock-Stall-Ms": "400"}
    body = chat("stall here", model, stream=True, thinking={"type": "disabled"})
    lines = await _timed_lines(http, path, body, headers)
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(lines)]
    assert max(gaps) >= 0.35
    role_chunks = 1 if path == "/v1/chat/completions" else 0
    assert gaps.index(max(gaps)) == role_chunks + 2  # right after the third token
    last = lines[-1][1]
    assert last == b"data: [DONE]" or json.loads(last)["done"] is True


@pytest.mark.parametrize(("path", "model"), [("/v1/chat/completions", K26), ("/api/chat", QWEN)])
async def test_one_malformed_event_in_an_otherwise_good_stream(
    http: aiohttp.ClientSession, path: str, model: str
) -> None:
    body = chat("malformed here", model, thinking={"type": "disabled"})
    headers = {"X-Mock-Fault": "malformed_event", "X-Mock-Malformed-At": "4"}
    lines = [line for _, line in await _timed_lines(http, path, {**body, "stream": True}, headers)]
    if path == "/v1/chat/completions":
        assert lines.pop() == b"data: [DONE]"
    good = [is_json(line.decode().removeprefix("data: ")) for line in lines]
    assert good.count(False) == 1
    assert good.index(False) == 3  # the fourth event
    kept = [line for line, ok in zip(lines, good, strict=True) if ok]
    if path == "/api/chat":
        content = "".join(json.loads(line)["message"]["content"] for line in kept)
        whole = (await ollama(http, body))["message"]["content"]
    else:
        content = _content(kept)
        whole = (await completion(http, body))["choices"][0]["message"]["content"]
    assert content == whole  # nothing was lost around the bad event


async def test_stream_error_mid_stream_in_both_dialects(http: aiohttp.ClientSession) -> None:
    headers = {"X-Mock-Fault": "stream_error", "X-Mock-Stream-Error-After": "2"}
    sse = [
        line
        for _, line in await _timed_lines(
            http, "/v1/chat/completions", chat("e", K26, stream=True), headers
        )
    ]
    error = json.loads(sse[-1].removeprefix(b"data: "))
    assert error["error"]["type"] == "server_error"
    assert b"data: [DONE]" not in sse
    lines = [
        json.loads(line)
        for _, line in await _timed_lines(http, "/api/chat", chat("e", QWEN), headers)
    ]
    assert len(lines) == 3
    assert isinstance(lines[-1]["error"], str)
    status, body, _ = await post_json(
        http, "/api/chat", chat("e", QWEN, stream=False), headers=headers
    )
    assert status == 500
    assert isinstance(body["error"], str)


@pytest.mark.parametrize(
    ("fault", "code", "error_type"),
    [
        ("content_filter", "content_filter", "content_filter"),
        ("context_length", "context_length_exceeded", "invalid_request_error"),
    ],
)
async def test_request_faults_are_400s_with_the_provider_code(
    http: aiohttp.ClientSession, fault: str, code: str, error_type: str
) -> None:
    headers = {"X-Mock-Fault": fault}
    status, body, response = await post_json(
        http, "/v1/chat/completions", chat("x"), headers=headers
    )
    assert status == 400
    assert body["error"]["code"] == code
    assert body["error"]["type"] == error_type
    assert response.headers["X-Mock-Fault"] == fault
    status, body, _ = await post_json(http, "/api/chat", chat("x", QWEN), headers=headers)
    assert status == 400
    assert isinstance(body["error"], str)


async def test_down_for_a_while_from_the_first_request(http: aiohttp.ClientSession) -> None:
    prompt = "[[mock: fault=down down_s=0.6]] are you up?"
    first = (await post_json(http, "/v1/chat/completions", chat(prompt)))[0]
    second = (await post_json(http, "/v1/chat/completions", chat("other " + prompt)))[0]
    other_model = (await post_json(http, "/api/chat", chat(prompt, QWEN, stream=False)))[0]
    await asyncio.sleep(0.7)
    later = (await post_json(http, "/v1/chat/completions", chat(prompt)))[0]
    assert (first, second, later) == (503, 503, 200)
    assert other_model == 503  # its own window, opened by its own first request
    assert (await stats(http))["by_fault"] == {"down": 3}


async def test_down_from_a_config_change_with_a_chosen_failure(
    http: aiohttp.ClientSession,
) -> None:
    await configure(
        http, fault=["down"], down_s=0.5, down_from="config", down_fault="rate_limit",
        fault_models=["kimi"],
    )  # fmt: skip
    status, body, response = await post_json(http, "/v1/chat/completions", chat("x"))
    assert status == 429
    assert body["error"]["type"] == "rate_limit_reached_error"
    assert response.headers["X-Mock-Fault"] == "down"
    assert (await post_json(http, "/api/chat", chat("x", QWEN, stream=False)))[0] == 200
    await asyncio.sleep(0.6)
    assert (await post_json(http, "/v1/chat/completions", chat("x")))[0] == 200


# --- Continuation ----------------------------------------------------------------------------


async def _cut_prefix(http: aiohttp.ClientSession, prompt: str, after: int) -> str:
    """The answer text a `cut` stream delivered before it broke."""
    headers = {"X-Mock-Fault": "cut", "X-Mock-Cut-After": str(after)}
    received = await read_broken(
        http, "/v1/chat/completions", chat(prompt, KIMI, stream=True), headers
    )
    return _content([e for e in received.split(b"\n\n") if e.strip()])


async def test_a_cut_stream_is_finished_by_another_model_in_another_dialect(
    http: aiohttp.ClientSession,
) -> None:
    prompt = "Explain how a token bucket limits requests"
    whole = (await completion(http, chat(prompt, KIMI)))["choices"][0]["message"]["content"]
    prefix = await _cut_prefix(http, prompt, after=20 + 7)  # thinking, then 7 answer tokens
    assert prefix
    assert whole.startswith(prefix)
    assert whole != prefix

    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": prefix}]
    rest = (await ollama(http, {"model": QWEN, "messages": messages}))["message"]
    assert prefix + rest["content"] == whole
    assert "thinking" not in rest

    partial = [messages[0], {**messages[1], "partial": True}]
    moonshot = await completion(http, {"model": K26, "messages": partial})
    assert prefix + moonshot["choices"][0]["message"]["content"] == whole
    streamed = [
        line
        for _, line in await _timed_lines(
            http, "/v1/chat/completions", {"model": KIMI, "messages": partial, "stream": True}, {}
        )
    ]
    assert prefix + _content(streamed) == whole
    assert (await stats(http))["continuations"] == 3


async def test_which_trailing_assistant_messages_are_continued(
    http: aiohttp.ClientSession,
) -> None:
    prompt = "Describe a circuit breaker"
    whole = (await completion(http, chat(prompt, QWEN)))["choices"][0]["message"]["content"]
    prefix = whole[: len(whole) // 2]  # mid-word
    trailing = [{"role": "user", "content": prompt}, {"role": "assistant", "content": prefix}]
    generic = await completion(http, {"model": QWEN, "messages": trailing})
    assert prefix + generic["choices"][0]["message"]["content"] == whole
    # Moonshot's models continue only in partial mode; a bare trailing turn is history.
    moonshot = await completion(http, {"model": K26, "messages": trailing})
    assert not whole.startswith(prefix + moonshot["choices"][0]["message"]["content"])
    # A prefix that is not the answer's beginning: the answer goes on after as many words.
    other = [trailing[0], {"role": "assistant", "content": "Something else entirely"}]
    answer = await completion(http, {"model": QWEN, "messages": other})
    assert answer["choices"][0]["message"]["content"] == " " + " ".join(whole.split()[3:])


async def test_prefill_refused_by_capability_and_by_fault(http: aiohttp.ClientSession) -> None:
    partial = [
        {"role": "user", "content": "go on"},
        {"role": "assistant", "content": "So", "partial": True},
    ]
    status, body, response = await post_json(
        http,
        "/v1/chat/completions",
        {"model": KIMI, "messages": partial},
        headers={"X-Mock-Fault": "prefill_refused"},
    )
    assert status == 400
    assert body["error"]["code"] == "prefill_unsupported"
    assert response.headers["X-Mock-Fault"] == "prefill_refused"
    status, _, _ = await post_json(
        http,
        "/v1/chat/completions",
        chat("no prefill here"),
        headers={"X-Mock-Fault": "prefill_refused"},
    )
    assert status == 200  # the fault only bites a prefill

    await configure(http, capabilities={QWEN: {"prefill": "none"}})
    ollama_turns = [partial[0], {"role": "assistant", "content": "So"}]
    status, body, _ = await post_json(
        http, "/api/chat", {"model": QWEN, "messages": ollama_turns, "stream": False}
    )
    assert status == 400
    assert "does not support continuing" in body["error"]
    status, body, _ = await post_json(
        http, "/v1/chat/completions", {"model": QWEN, "messages": partial}
    )
    assert status == 400
    assert body["error"]["code"] == "prefill_unsupported"
