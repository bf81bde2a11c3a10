"""Per-model capabilities and parameters in the mock, over real HTTP: what each model refuses,
what it honours, and how it describes itself."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.mock_support import (
    KIMI,
    OLLAMA_KIMI,
    QWEN,
    chat,
    chunks,
    completion,
    configure,
    ndjson,
    ollama,
    post_json,
    reset,
    start_mock,
    stats,
)
from tests.support.procs import Server

K26 = "kimi-k2.6"
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_mock(tmp_path_factory.mktemp("mock-caps")) as server:
        yield server


@pytest.fixture
async def http(mock: Server) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=mock.url) as session:
        await reset(session, config=True)
        yield session


async def _status(http: aiohttp.ClientSession, path: str, body: Any) -> tuple[int, Any]:
    status, answer, _ = await post_json(http, path, body)
    return status, answer


async def test_thinking_only_where_the_model_has_it(http: aiohttp.ClientSession) -> None:
    status, body = await _status(http, "/api/chat", {**chat("hi", QWEN), "think": True})
    assert status == 400
    assert body == {"error": f'"{QWEN}" does not support thinking'}
    status, body = await _status(
        http, "/v1/chat/completions", chat("hi", "moonshot-v1-8k", thinking={"type": "enabled"})
    )
    assert status == 400
    assert body["error"]["param"] == "thinking"
    # Ollama thinks by default where the model can, as Ollama does when `think` is not sent.
    assert (await ollama(http, chat("hi", OLLAMA_KIMI)))["message"]["thinking"]
    assert "thinking" not in (await ollama(http, chat("hi", QWEN)))["message"]


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"temperature": 0.2}, "invalid temperature: only 1 is allowed"),
        ({"top_p": 0.5}, "invalid top_p: only 0.95 is allowed"),
        ({"n": 2}, "invalid n: only 1 is allowed"),
        ({"presence_penalty": 0.5}, "invalid presence_penalty"),
        ({"frequency_penalty": -1}, "invalid frequency_penalty"),
        ({"temperature": 1.0, "thinking": {"type": "disabled"}}, "only 0.6 is allowed"),
    ],
)
async def test_kimi_k2_6_fixes_its_sampling_parameters(
    http: aiohttp.ClientSession, extra: dict[str, Any], error: str
) -> None:
    for model in (K26, "kimi-k3"):
        status, body = await _status(http, "/v1/chat/completions", chat("hi", model, **extra))
        assert status == 400
        assert body["error"]["type"] == "invalid_request_error"
        assert error in body["error"]["message"]


async def test_kimi_k2_6_accepts_its_own_values_and_max_completion_tokens(
    http: aiohttp.ClientSession,
) -> None:
    fixed = {"temperature": 1.0, "top_p": 0.95, "n": 1, "presence_penalty": 0}
    answer = await completion(http, chat("hi", K26, **fixed))
    assert answer["usage"]["completion_tokens"] == 50  # 20 thinking (on by default) + 30
    cool = await completion(http, chat("hi", K26, temperature=0.6, thinking={"type": "disabled"}))
    assert "reasoning_content" not in cool["choices"][0]["message"]
    ignored = await completion(http, chat("hi", K26, max_tokens=5))  # deprecated, not honoured
    assert ignored["choices"][0]["finish_reason"] == "stop"
    cut = await completion(http, chat("hi", K26, max_completion_tokens=5))
    assert cut["choices"][0]["finish_reason"] == "length"
    assert cut["usage"]["completion_tokens"] == 5
    assert cut["usage"]["completion_tokens_details"] == {"reasoning_tokens": 5}


async def test_vision_only_where_the_model_has_it(http: aiohttp.ClientSession) -> None:
    parts = [{"type": "text", "text": "what is this?"}, IMAGE]
    message = {"role": "user", "content": parts}
    status, body = await _status(
        http, "/v1/chat/completions", {"model": QWEN, "messages": [message]}
    )
    assert status == 400
    assert body["error"]["param"] == "messages.[0].content"
    seen = await completion(http, {"model": K26, "messages": [message]})
    assert seen["usage"]["prompt_tokens"] == 3 + 768  # an image costs tokens
    ollama_message = {"role": "user", "content": "what is this?", "images": ["iVBORw0KGgo="]}
    status, body = await _status(http, "/api/chat", {"model": QWEN, "messages": [ollama_message]})
    assert status == 400
    assert body["error"].endswith("does not support vision")


async def test_context_window_openai_refuses_with_context_length_exceeded(
    http: aiohttp.ClientSession,
) -> None:
    long_prompt = "word " * 9000
    status, body = await _status(http, "/v1/chat/completions", chat(long_prompt, "moonshot-v1-8k"))
    assert status == 400
    assert body["error"]["code"] == "context_length_exceeded"
    assert body["error"]["type"] == "invalid_request_error"
    status, body = await _status(
        http, "/v1/chat/completions", chat("word " * 5000, "moonshot-v1-8k", max_tokens=4000)
    )
    assert status == 400  # the prompt fits, prompt and completion together do not
    assert body["error"]["code"] == "context_length_exceeded"
    assert (await stats(http))["refusals"] == {"context_length_exceeded": 2}


async def test_ollama_cuts_long_prompts_silently_unless_num_ctx_is_set(
    http: aiohttp.ClientSession,
) -> None:
    old = {"role": "user", "content": "old " * 3000}
    system = {"role": "system", "content": "be brief"}
    messages = [
        system,
        old,
        {"role": "assistant", "content": "ok " * 2000},
        {"role": "user", "content": "now the question"},
    ]
    short = await ollama(http, {"model": QWEN, "messages": messages})
    assert short["prompt_eval_count"] == 2 + 2000 + 3  # the oldest user message was dropped
    counted = await stats(http)
    assert counted["truncated"] == {"prompts": 1, "tokens": 3000}
    roomy = await ollama(http, {"model": QWEN, "messages": messages, "options": {"num_ctx": 8192}})
    assert roomy["prompt_eval_count"] == 2 + 3000 + 2000 + 3
    assert roomy["message"]["content"] != short["message"]["content"]  # it saw more
    assert (await stats(http))["truncated"]["prompts"] == 1
    status, body = await _status(
        http, "/api/chat", {"model": QWEN, "messages": messages, "truncate": False}
    )
    assert status == 400
    assert body == {"error": "the input length exceeds the context length"}


async def test_stop_seed_n_and_logprobs(http: aiohttp.ClientSession) -> None:
    model = "moonshot-v1-8k"
    whole = (await completion(http, chat("tell me", model)))["choices"][0]["message"]["content"]
    word = whole.split()[5]
    stopped = await completion(http, chat("tell me", model, stop=[word, "zzz"]))
    text = stopped["choices"][0]["message"]["content"]
    assert whole.startswith(text)
    assert word not in text
    assert stopped["choices"][0]["finish_reason"] == "stop"

    seeded = [
        (await completion(http, chat("tell me", model, seed=s)))["choices"][0]["message"]["content"]
        for s in (1, 1, 2)
    ]
    assert seeded[0] == seeded[1] != seeded[2]

    several = await completion(http, chat("tell me", model, n=3))
    assert [c["index"] for c in several["choices"]] == [0, 1, 2]
    assert len({c["message"]["content"] for c in several["choices"]}) == 3
    assert several["usage"]["completion_tokens"] == 90
    streamed = await chunks(http, chat("tell me", model, n=2, stream=True))
    finals = [c["choices"][0] for c in streamed if c["choices"][0]["finish_reason"]]
    assert sorted(f["index"] for f in finals) == [0, 1]

    scored = await completion(http, chat("tell me", model, logprobs=True, top_logprobs=2))
    entries = scored["choices"][0]["logprobs"]["content"]
    assert "".join(e["token"] for e in entries) == scored["choices"][0]["message"]["content"]
    assert all(len(e["top_logprobs"]) == 2 and e["logprob"] <= 0 for e in entries)
    status, body = await _status(http, "/v1/chat/completions", chat("tell me", KIMI, logprobs=True))
    assert status == 400
    assert body["error"]["param"] == "logprobs"

    options = {"stop": [word], "seed": 1}
    lines = await ndjson(http, {**chat("tell me", QWEN), "options": options, "logprobs": True})
    assert all("logprobs" in line for line in lines[:-1])


async def test_models_endpoints_describe_each_model(http: aiohttp.ClientSession) -> None:
    async with http.get(f"/v1/models/{K26}") as response:
        assert response.status == 200
        described = await response.json()
    assert described["id"] == K26
    assert described["object"] == "model"
    assert described["context_length"] == 262_144
    async with http.get("/v1/models/gpt-9") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "model_not_found"

    status, show = await _status(http, "/api/show", {"model": QWEN})
    assert status == 200
    assert show["capabilities"] == ["completion", "tools"]
    assert show["model_info"]["qwen2.context_length"] == 32_768
    assert show["details"]["family"] == "qwen2"
    status, show = await _status(http, "/api/show", {"model": OLLAMA_KIMI})
    assert "thinking" in show["capabilities"]
    status, body = await _status(http, "/api/show", {"model": "llama9"})
    assert status == 404
    assert isinstance(body["error"], str)


async def test_capabilities_change_at_run_time(http: aiohttp.ClientSession) -> None:
    config = await configure(http, capabilities={QWEN: {"thinking": True, "vision": True}})
    assert config["capabilities"] == {QWEN: {"thinking": True, "vision": True}}
    answer = await ollama(http, {**chat("hi", QWEN), "think": True})
    assert answer["message"]["thinking"]
    status, show = await _status(http, "/api/show", {"model": QWEN})
    assert show["capabilities"] == ["completion", "tools", "thinking", "vision"]
    status, body = await _status(http, "/_mock/config", {"capabilities": {QWEN: {"wings": 2}}})
    assert status == 400
    assert "wings" in body["error"]["message"]


async def test_capabilities_from_the_command_line_and_a_file(tmp_path: Path) -> None:
    caps = tmp_path / "caps.json"
    caps.write_text(json.dumps({"capabilities": {"tiny": {"context_window": 10}}}))
    args = ("--models", "tiny,qwen2.5-coder:7b", "--capabilities", str(caps))
    with start_mock(tmp_path, *args, "--model-caps", f"{QWEN}:context_window=20") as server:
        async with aiohttp.ClientSession(base_url=server.url) as http:
            for model, words in (("tiny", 11), (QWEN, 21)):
                status, body = await _status(
                    http, "/v1/chat/completions", chat("a " * words, model)
                )
                assert status == 400
                assert body["error"]["code"] == "context_length_exceeded"
            assert (await completion(http, chat("a " * 19, QWEN)))["choices"]
