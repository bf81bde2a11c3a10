"""`aiorch mock-upstream` over real HTTP: both dialects, every fault, every control layer."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.mock_support import (
    KIMI,
    QWEN,
    chat,
    configure,
    is_json,
    ndjson,
    post_json,
    read_broken,
    reset,
    sse,
    start_mock,
    stats,
)
from tests.support.procs import AIORCH, REPO, Server

FAULT_STATUS = {
    "http_500": 500,
    "http_502": 502,
    "http_503": 503,
    "rate_limit": 429,
    "overloaded": 429,
    "quota": 429,
}


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_mock(tmp_path_factory.mktemp("mock")) as server:
        yield server


@pytest.fixture
async def http(mock: Server) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=mock.url) as session:
        await reset(session, config=True)
        yield session


# --- OpenAI / Moonshot dialect -------------------------------------------------------------


async def test_completion_shape_usage_and_reasoning(http: aiohttp.ClientSession) -> None:
    status, body, _ = await post_json(http, "/v1/chat/completions", chat("explain caching"))
    assert status == 200
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    assert body["model"] == KIMI
    (choice,) = body["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    message = choice["message"]
    assert message["role"] == "assistant"
    content, reasoning = message["content"], message["reasoning_content"]
    assert len(content.split()) == 30
    assert len(reasoning.split()) == 20
    assert body["usage"] == {
        "prompt_tokens": 2,
        "completion_tokens": 50,
        "total_tokens": 52,
        "completion_tokens_details": {"reasoning_tokens": 20},
    }


@pytest.mark.parametrize(
    ("model", "thinking", "has_reasoning"),
    [
        (KIMI, None, True),
        (KIMI, "disabled", False),
        ("kimi-k2.6", None, True),  # thinking is on by default, as on Moonshot
        ("kimi-k2.6", "disabled", False),
        ("moonshot-v1-8k", None, False),
    ],
)
async def test_reasoning_follows_model_and_thinking_switch(
    http: aiohttp.ClientSession, model: str, thinking: str | None, has_reasoning: bool
) -> None:
    extra = {} if thinking is None else {"thinking": {"type": thinking}}
    _, body, _ = await post_json(http, "/v1/chat/completions", chat("hi", model, **extra))
    message = body["choices"][0]["message"]
    assert ("reasoning_content" in message) is has_reasoning
    expected = 30 + (20 if has_reasoning else 0)
    assert body["usage"]["completion_tokens"] == expected


async def test_answers_are_deterministic_per_prompt_and_model(http: aiohttp.ClientSession) -> None:
    async def content(prompt: str, model: str = KIMI) -> str:
        _, body, _ = await post_json(http, "/v1/chat/completions", chat(prompt, model))
        text: str = body["choices"][0]["message"]["content"]
        return text

    first = await content("what is a circuit breaker?")
    assert first == await content("what is a circuit breaker?")
    assert first != await content("what is a token bucket?")
    # By default the conversation alone decides the text, whatever the model (so that a prefix
    # from one model and a continuation from another make the whole answer) ...
    assert first == await content("what is a circuit breaker?", "kimi-k2.6")
    assert first == await content("what is a circuit breaker?", QWEN)
    # ... unless the model should count too.
    varied = "what is a circuit breaker? [[mock: vary_by_model=true]]"
    assert await content(varied) != await content(varied, "kimi-k2.6")
    assert "```" in await content("implement a python function to sort", QWEN)


async def test_max_tokens_cuts_reasoning_first_then_content(http: aiohttp.ClientSession) -> None:
    _, body, _ = await post_json(http, "/v1/chat/completions", chat("hi", max_tokens=25))
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert len(choice["message"]["reasoning_content"].split()) == 20
    assert len(choice["message"]["content"].split()) == 5
    assert body["usage"]["completion_tokens"] == 25


async def test_stream_moonshot_usage_in_last_choice(http: aiohttp.ClientSession) -> None:
    events = await sse(http, chat("stream me", stream=True))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert all("usage" not in c for c in chunks)  # no top-level usage without include_usage
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0]["role"] == "assistant"
    kinds = ["reasoning" if "reasoning_content" in d else "content" for d in deltas[1:-1]]
    assert kinds == ["reasoning"] * 20 + ["content"] * 30
    last = chunks[-1]["choices"][0]
    assert last["finish_reason"] == "stop"
    assert last["usage"] == {
        "prompt_tokens": 2,
        "completion_tokens": 50,
        "total_tokens": 52,
        "completion_tokens_details": {"reasoning_tokens": 20},
    }
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])

    _, whole, _ = await post_json(http, "/v1/chat/completions", chat("stream me"))
    streamed = "".join(d.get("content", "") for d in deltas)
    assert streamed == whole["choices"][0]["message"]["content"]
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    assert reasoning == whole["choices"][0]["message"]["reasoning_content"]


async def test_stream_include_usage_adds_openai_usage_chunk(http: aiohttp.ClientSession) -> None:
    body = chat("hi", "moonshot-v1-8k", stream=True, stream_options={"include_usage": True})
    events = await sse(http, body)
    assert events[-1] == "[DONE]"
    usage_chunk = json.loads(events[-2])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": 1,
        "completion_tokens": 30,
        "total_tokens": 31,
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    moonshot_last = json.loads(events[-3])
    assert moonshot_last["choices"][0]["usage"] == usage_chunk["usage"]
    assert moonshot_last["choices"][0]["finish_reason"] == "stop"


async def test_validation_errors_and_unknown_model(http: aiohttp.ClientSession) -> None:
    for bad in (
        {"messages": [{"role": "user", "content": "x"}]},
        {"model": KIMI, "messages": []},
        {"model": KIMI, "messages": [{"role": "wizard", "content": "x"}]},
        chat("x", max_tokens=0),
        chat("x", temperature=7),
        chat("x", thinking={"type": "sometimes"}),
    ):
        status, body, _ = await post_json(http, "/v1/chat/completions", bad)
        assert status == 400, bad
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["message"]
    async with http.post("/v1/chat/completions", data=b"{not json") as response:
        assert response.status == 400
    status, body, _ = await post_json(http, "/v1/chat/completions", chat("x", "gpt-9"))
    assert status == 404
    assert body["error"]["type"] == "resource_not_found_error"


async def test_models_list(http: aiohttp.ClientSession) -> None:
    async with http.get("/v1/models") as response:
        body = await response.json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert KIMI in ids
    assert QWEN in ids


# --- Ollama dialect ------------------------------------------------------------------------


async def test_ollama_streams_by_default_with_nanosecond_timings(
    http: aiohttp.ClientSession,
) -> None:
    lines = await ndjson(http, chat("hello", QWEN))
    *parts, final = lines
    assert all(p["done"] is False and p["model"] == QWEN for p in parts)
    assert all(p["message"]["role"] == "assistant" for p in parts)
    assert len(parts) == 30
    assert final["done"] is True
    assert final["done_reason"] == "stop"
    assert final["message"] == {"role": "assistant", "content": ""}
    assert final["prompt_eval_count"] == 1
    assert final["eval_count"] == 30
    for name in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[name], int)
        assert final[name] > 0
    assert final["total_duration"] >= final["prompt_eval_duration"]
    assert final["created_at"].endswith("Z")


async def test_ollama_think_num_predict_and_non_stream(http: aiohttp.ClientSession) -> None:
    thinker = "kimi-k2-thinking:cloud"
    body = chat("hello", thinker, think=True, options={"num_predict": 24, "temperature": 0.1})
    lines = await ndjson(http, body)
    thinking = [p for p in lines[:-1] if "thinking" in p["message"]]
    assert len(thinking) == 20
    assert lines.index(thinking[-1]) == 19  # thinking comes first
    assert lines[-1]["done_reason"] == "length"
    assert lines[-1]["eval_count"] == 24

    status, whole, _ = await post_json(http, "/api/chat", {**body, "stream": False})
    assert status == 200
    assert whole["done"] is True
    assert whole["done_reason"] == "length"
    assert whole["eval_count"] == 24
    streamed = "".join(p["message"]["content"] for p in lines)
    assert whole["message"]["content"] == streamed
    assert whole["message"]["thinking"] == "".join(p["message"]["thinking"] for p in thinking)
    assert len(whole["message"]["content"].split()) == 4


async def test_ollama_errors(http: aiohttp.ClientSession) -> None:
    status, body, _ = await post_json(http, "/api/chat", chat("x", "llama9:1b"))
    assert status == 404
    assert body == {"error": 'model "llama9:1b" not found, try pulling it first'}
    status, body, _ = await post_json(http, "/api/chat", {"messages": []})
    assert status == 400
    assert body == {"error": "model is required"}
    status, body, _ = await post_json(http, "/api/chat", {"model": QWEN, "stream": "yes"})
    assert status == 400
    assert isinstance(body["error"], str)


async def test_ollama_tags_version_ps_and_coldstart_mock(http: aiohttp.ClientSession) -> None:
    async with http.get("/api/tags") as response:
        tags = await response.json()
    entry = next(m for m in tags["models"] if m["name"] == QWEN)
    assert set(entry) >= {"name", "model", "modified_at", "size", "digest", "details"}
    assert entry["details"]["parameter_size"] == "7.6B"  # what Ollama reports for it
    async with http.get("/api/version") as response:
        assert "version" in await response.json()
    async with http.get("/api/ps") as response:
        assert (await response.json())["models"] == []

    await configure(http, cold_start_ms=300)
    cold = chat("x", QWEN, stream=False)
    results = await asyncio.gather(*(post_json(http, "/api/chat", cold) for _ in range(2)))
    for _, body, _ in results:
        assert body["load_duration"] >= 0.25e9  # both waited for the one load
    _, warm, _ = await post_json(http, "/api/chat", cold)
    assert warm["load_duration"] < 0.25e9
    async with http.get("/api/ps") as response:
        loaded = (await response.json())["models"]
    assert [m["name"] for m in loaded] == [QWEN]
    assert "expires_at" in loaded[0]

    await reset(http)
    async with http.get("/api/ps") as response:
        assert (await response.json())["models"] == []
    _, again, _ = await post_json(http, "/api/chat", cold)
    assert again["load_duration"] >= 0.25e9


# --- Faults --------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", sorted(FAULT_STATUS))
async def test_error_faults_in_both_dialects(http: aiohttp.ClientSession, fault: str) -> None:
    headers = {"X-Mock-Fault": fault}
    status, body, response = await post_json(
        http, "/v1/chat/completions", chat("x"), headers=headers
    )
    assert status == FAULT_STATUS[fault]
    assert set(body["error"]) == {"type", "message"}
    expected_type = {
        "rate_limit": "rate_limit_reached_error",
        "overloaded": "engine_overloaded_error",
        "quota": "exceeded_current_quota_error",
    }.get(fault, "server_error")
    assert body["error"]["type"] == expected_type
    assert (response.headers.get("Retry-After") == "1") is (fault == "rate_limit")

    status, body, response = await post_json(http, "/api/chat", chat("x", QWEN), headers=headers)
    assert status == (503 if fault == "overloaded" else FAULT_STATUS[fault])
    assert isinstance(body["error"], str)
    assert fault in body["error"]
    counted = await stats(http)
    assert counted["by_fault"] == {fault: 2}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat"])
async def test_reset_fault_is_a_connection_error(http: aiohttp.ClientSession, path: str) -> None:
    with pytest.raises((aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
        await post_json(http, path, chat("x", QWEN), headers={"X-Mock-Fault": "reset"})


async def test_hang_until_the_client_gives_up(http: aiohttp.ClientSession) -> None:
    timeout = aiohttp.ClientTimeout(total=0.5)
    with pytest.raises(TimeoutError):
        await post_json(http, "/v1/chat/completions", chat("[[mock: fault=hang]]"), timeout=timeout)
    for _ in range(50):  # the mock notices the disconnect and drops the request
        counted = await stats(http)
        if counted["client_disconnects"] == 1:
            break
        await asyncio.sleep(0.05)
    assert counted["client_disconnects"] == 1
    assert counted["in_flight"] == 0
    assert counted["by_fault"] == {"hang": 1}


async def test_malformed_bodies(http: aiohttp.ClientSession) -> None:
    headers = {"X-Mock-Fault": "malformed"}
    for path in ("/v1/chat/completions", "/api/chat"):
        async with http.post(path, json=chat("x", QWEN, stream=False), headers=headers) as r:
            assert r.status == 200
            with pytest.raises(json.JSONDecodeError):
                json.loads(await r.read())
    events = await sse(http, chat("x", stream=True), headers=headers)
    assert events[-1] == "[DONE]"
    assert [is_json(e) for e in events[:-1]] == [True, False]
    async with http.post("/api/chat", json=chat("x", QWEN), headers=headers) as r:
        lines = (await r.read()).decode().splitlines()
    assert [is_json(line) for line in lines] == [True, False, True]


async def test_cut_streams_end_without_done(http: aiohttp.ClientSession) -> None:
    headers = {"X-Mock-Fault": "cut", "X-Mock-Cut-After": "3"}
    received = await read_broken(http, "/v1/chat/completions", chat("x", stream=True), headers)
    events = [e for e in received.decode().split("\n\n") if e]
    assert len(events) == 4  # the role chunk and three tokens
    assert all(is_json(e.removeprefix("data: ")) for e in events)
    assert "[DONE]" not in received.decode()

    lines = (await read_broken(http, "/api/chat", chat("x", QWEN), headers)).splitlines()
    assert len(lines) == 3
    assert all(json.loads(line)["done"] is False for line in lines)

    whole = await read_broken(http, "/v1/chat/completions", chat("x"), {"X-Mock-Fault": "cut"})
    assert not is_json(whole.decode())


async def test_slow_first_token_and_timing_knobs(http: aiohttp.ClientSession) -> None:
    async with http.post(
        "/v1/chat/completions",
        json=chat("[[mock: fault=slow_first_token slow_first_token_ms=400]]", stream=True),
    ) as response:
        assert response.status == 200
        headers_at = time.monotonic()
        await response.read()
    assert time.monotonic() - headers_at >= 0.35  # the wait is after the headers

    started = time.monotonic()
    headers = {
        "X-Mock-Latency-Ms": "200",
        "X-Mock-TTFT-Ms": "100",
        "X-Mock-Tokens-Per-Second": "100",
    }
    status, _, _ = await post_json(
        http, "/v1/chat/completions", chat("x", "moonshot-v1-8k", max_tokens=11), headers=headers
    )
    assert status == 200
    assert time.monotonic() - started >= 0.39  # 200 + 100 + 10 tokens at 100/s


# --- Control surface -----------------------------------------------------------------------


async def test_precedence_header_over_directive_over_model_over_run(
    http: aiohttp.ClientSession,
) -> None:
    await configure(http, tokens=9, model_config={"qwen3-coder:30b": {"tokens": 7}})

    async def tokens(prompt: str, model: str, headers: dict[str, str] | None = None) -> int:
        _, body, _ = await post_json(
            http, "/v1/chat/completions", chat(prompt, model), headers=headers or {}
        )
        count: int = body["usage"]["completion_tokens"]
        return count

    assert await tokens("x", "moonshot-v1-8k") == 9
    assert await tokens("x", "qwen3-coder:30b") == 7
    assert await tokens("x [[mock: tokens=5]]", "qwen3-coder:30b") == 5
    assert await tokens("x [[mock: tokens=5]]", "qwen3-coder:30b", {"X-Mock-Tokens": "3"}) == 3


async def test_directive_is_removed_from_the_prompt(http: aiohttp.ClientSession) -> None:
    _, plain, _ = await post_json(http, "/v1/chat/completions", chat("same question"))
    _, directed, _ = await post_json(
        http, "/v1/chat/completions", chat("same question [[mock: latency_ms=1]]")
    )
    assert directed["choices"] == plain["choices"]
    assert directed["usage"]["prompt_tokens"] == 2


async def test_bad_overrides_are_rejected(http: aiohttp.ClientSession) -> None:
    for headers, prompt in (
        ({"X-Mock-Fault": "meteor"}, "x"),
        ({"X-Mock-Latency-Ms": "-5"}, "x"),
        ({"X-Mock-Nonsense": "1"}, "x"),
        ({}, "x [[mock: tokens=lots]]"),
        ({}, "x [[mock: tokens]]"),
    ):
        status, body, _ = await post_json(
            http, "/v1/chat/completions", chat(prompt), headers=headers
        )
        assert status == 400, (headers, prompt)
        assert body["error"]["type"] == "invalid_request_error"
    status, body, _ = await post_json(http, "/api/chat", chat("x [[mock: fault=meteor]]", QWEN))
    assert status == 400
    assert "meteor" in body["error"]


async def test_fault_limit_fails_a_prompt_once(http: aiohttp.ClientSession) -> None:
    prompt = chat("retry me [[mock: fault=http_503 fault_limit=1]]")
    statuses = [(await post_json(http, "/v1/chat/completions", prompt))[0] for _ in range(3)]
    assert statuses == [503, 200, 200]


async def test_runtime_config_rate_seed_models_and_stats(http: aiohttp.ClientSession) -> None:
    config = await configure(
        http, fault=["http_503"], fault_rate=0.5, seed=7, fault_models=["kimi"]
    )
    assert config["fault"] == ["http_503"]

    async def run() -> list[int]:
        return [
            (await post_json(http, "/v1/chat/completions", chat(f"q{i}")))[0] for i in range(20)
        ]

    first = await run()
    assert set(first) == {200, 503}  # rate 0.5 over 20 requests: both outcomes
    await reset(http)
    assert await run() == first  # same seed, same sequence
    status, _, _ = await post_json(http, "/api/chat", chat("q", QWEN, stream=False))
    assert status == 200  # fault_models spares qwen
    spared = [
        (
            await post_json(
                http, "/v1/chat/completions", chat("q"), headers={"X-Mock-Fault": "none"}
            )
        )[0]
        for _ in range(5)
    ]
    assert spared == [200] * 5

    counted = await stats(http)
    assert counted["by_endpoint"] == {"/v1/chat/completions": 25, "/api/chat": 1}
    assert counted["by_model"] == {KIMI: 25, QWEN: 1}
    assert counted["by_fault"] == {"http_503": first.count(503)}
    assert counted["by_status"]["503"] == first.count(503)
    assert counted["requests_total"] == 26

    await reset(http, config=True)
    counted = await stats(http)
    assert counted["requests_total"] == 0
    async with http.get("/_mock/config") as response:
        assert (await response.json())["fault"] == []


async def test_runtime_config_rejects_bad_fields(http: aiohttp.ClientSession) -> None:
    for body in (
        {"latency": 5},
        {"fault_rate": 2},
        {"fault": ["meteor"]},
        {"model_config": {"kimi-k2.6": {"tokens": -1}}},
        {"responses": [{"match": "(", "content": "x"}]},
        [1, 2],
    ):
        status, answer, _ = await post_json(http, "/_mock/config", body)
        assert status == 400, body
        assert answer["error"]["message"]


async def test_inline_responses_and_recent_requests(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    stories = json.dumps([{"as_a": "user", "i_want": "login"}])
    await configure(
        http,
        responses=[{"match": "(?i)user stories", "content": stories, "reasoning": "Thinking."}],
        models=["ba-model-thinking"],
    )
    _, body, _ = await post_json(
        http, "/v1/chat/completions", chat("Write user stories", "ba-model-thinking")
    )
    message = body["choices"][0]["message"]
    assert json.loads(message["content"]) == json.loads(stories)
    assert message["reasoning_content"] == "Thinking."
    assert body["usage"]["completion_tokens"] == len(stories.split()) + 1
    status, _, _ = await post_json(http, "/v1/chat/completions", chat("x", KIMI))
    assert status == 404  # `models` replaced the list

    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"responses": [{"match": "ping", "content": "pong"}]}))
    await configure(http, responses=str(rules))
    _, body, _ = await post_json(http, "/v1/chat/completions", chat("ping", "ba-model-thinking"))
    assert body["choices"][0]["message"]["content"] == "pong"

    async with http.get("/_mock/requests", params={"limit": "2"}) as response:
        refused, last = (await response.json())["requests"]
    assert refused["endpoint"] == last["endpoint"] == "/v1/chat/completions"
    assert refused["body"]["model"] == KIMI  # logged even though it was refused
    assert last["body"]["messages"] == [{"role": "user", "content": "ping"}]


# --- Command line, files, environment, process ---------------------------------------------


async def test_cli_files_env_and_auth(tmp_path: Path) -> None:
    rules = tmp_path / "responses.toml"
    rules.write_text(
        '[[responses]]\nmatch = "^ping"\ncontent = "pong pong"\n\n'
        '[[responses]]\nmatch = "coder system"\ncontent = "from the system prompt"\n'
    )
    config = tmp_path / "mock.json"
    config.write_text(json.dumps({"tokens": 5, "model_config": {"moonshot-v1-8k": {"tokens": 2}}}))
    env = {"AIORCH_MOCK_API_KEY": "sekret", "AIORCH_MOCK_TOKENS": "4"}
    args = [
        *("--config", str(config), "--responses", str(rules)),
        *("--model-config", f"{QWEN}:tokens=6,latency_ms=1"),
    ]
    with start_mock(tmp_path, *args, env=env) as server:
        async with aiohttp.ClientSession(base_url=server.url) as http:
            status, body, _ = await post_json(http, "/v1/chat/completions", chat("ping"))
            assert status == 401
            assert body["error"]["type"] == "invalid_authentication_error"
            auth = {"Authorization": "Bearer sekret"}
            _, body, _ = await post_json(
                http, "/v1/chat/completions", chat("ping", "qwen3-coder:30b"), headers=auth
            )
            assert body["choices"][0]["message"]["content"] == "pong pong"
            _, body, _ = await post_json(
                http, "/v1/chat/completions", chat("other", "qwen3-coder:30b"), headers=auth
            )
            assert body["usage"]["completion_tokens"] == 4  # the environment beats the file
            _, body, _ = await post_json(
                http, "/v1/chat/completions", chat("other", "moonshot-v1-8k"), headers=auth
            )
            assert body["usage"]["completion_tokens"] == 2  # per-model, from the file
            system = {
                "model": QWEN,
                "stream": False,
                "messages": [
                    {"role": "system", "content": "you are the coder system"},
                    {"role": "user", "content": "hello"},
                ],
            }
            _, body, _ = await post_json(http, "/api/chat", system)  # Ollama has no auth
            assert body["message"]["content"] == "from the system prompt"
            _, body, _ = await post_json(http, "/api/chat", chat("x", QWEN, stream=False))
            assert body["eval_count"] == 6  # --model-config beats the run default


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fault", "meteor"], "unknown fault meteor"),
        (["--fault-rate", "2"], "--fault-rate"),
        (["--model-config", "nonsense"], "MODEL:field=value"),
        (["--model-config", f"{QWEN}:tokens=-3"], "tokens"),
    ],
)
def test_bad_cli_values_exit_non_zero(args: list[str], message: str) -> None:
    result = subprocess.run(
        [*AIORCH, "mock-upstream", *args], capture_output=True, text=True, cwd=REPO, timeout=30
    )
    assert result.returncode == 2
    assert message in result.stderr


def test_help_lists_every_knob() -> None:
    result = subprocess.run(
        [*AIORCH, "mock-upstream", "--help"], capture_output=True, text=True, cwd=REPO, timeout=30
    )
    assert result.returncode == 0
    for option in ("--latency-ms", "--ttft-ms", "--tokens-per-second", "--fault", "--seed",
                   "--cold-start-ms", "--model-config", "--responses", "--workers",
                   "--model-caps", "--capabilities", "--stall-ms", "--malformed-at",
                   "--stream-error-after", "--down-s", "--down-from", "--tool-calls",
                   "--vary-by-model", "--ollama-num-ctx", "AIORCH_MOCK_PORT"):  # fmt: skip
        assert option in result.stdout


async def test_workers_share_the_port_and_stop_on_sigterm(tmp_path: Path) -> None:
    with start_mock(tmp_path, "--workers", "2") as server:
        async with aiohttp.ClientSession(base_url=server.url) as http:
            for _ in range(4):
                status, _, _ = await post_json(http, "/v1/chat/completions", chat("x"))
                assert status == 200
            status, body, _ = await post_json(http, "/_mock/config", {"tokens": 1})
            assert status == 409
            assert "--workers 1" in body["error"]["message"]
        server.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.process.wait, 15) == 0


def test_sigterm_stops_a_busy_mock_cleanly(tmp_path: Path) -> None:
    with start_mock(tmp_path, "--shutdown-timeout", "0.5") as server:
        hung = subprocess.Popen(  # a client stuck on a hung request must not block shutdown
            [sys.executable, "-c", _HUNG_CLIENT, server.url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                with urllib.request.urlopen(f"{server.url}/_mock/stats", timeout=5) as response:
                    if json.load(response)["in_flight"] == 1:
                        break
                time.sleep(0.05)
            else:
                raise AssertionError("the hung request never arrived")
            server.process.send_signal(signal.SIGTERM)
            assert server.process.wait(timeout=10) == 0
        finally:
            hung.kill()
            hung.wait()
    assert "Traceback" not in server.output()


_HUNG_CLIENT = """
import sys, urllib.request
request = urllib.request.Request(
    sys.argv[1] + "/v1/chat/completions",
    data=b'{"model":"kimi-k2-thinking","messages":[{"role":"user","content":"x"}]}',
    headers={"X-Mock-Fault": "hang", "Content-Type": "application/json"},
)
try:
    urllib.request.urlopen(request, timeout=30)
except Exception:
    pass
"""
