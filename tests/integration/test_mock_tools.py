"""The mock's tool calling over real HTTP: both dialects, streamed deltas, and the OpenAI SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import aiohttp
import openai
import pydantic
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
)
from tests.support.procs import Server

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The local time in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_mock(tmp_path_factory.mktemp("mock-tools")) as server:
        yield server


@pytest.fixture
async def http(mock: Server) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=mock.url) as session:
        await reset(session, config=True)
        yield session


@pytest.fixture
async def client(mock: Server) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=f"{mock.url}/v1", api_key="unused") as sdk:
        yield sdk


def _check_weather_arguments(arguments: dict[str, Any]) -> None:
    assert isinstance(arguments["city"], str)
    assert arguments["city"]
    assert arguments["unit"] in ("celsius", "fahrenheit")
    if "days" in arguments:
        assert 1 <= arguments["days"] <= 7


async def test_offered_tools_are_called_with_arguments_that_fit_the_schema(
    http: aiohttp.ClientSession,
) -> None:
    body = chat("What is the weather in Paris?", "moonshot-v1-8k", tools=[WEATHER])
    answer = await completion(http, body)
    (choice,) = answer["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    (call,) = message["tool_calls"]
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert call["id"].startswith("call_")
    _check_weather_arguments(json.loads(call["function"]["arguments"]))
    assert answer["usage"]["completion_tokens"] > 0
    assert (await completion(http, body))["choices"] == answer["choices"]  # deterministic


async def test_kimi_numbers_its_tool_call_ids_across_the_conversation(
    http: aiohttp.ClientSession,
) -> None:
    first = await completion(http, chat("weather please", KIMI, tools=[WEATHER]))
    call = first["choices"][0]["message"]["tool_calls"][0]
    assert call["id"] == "functions.get_weather:0"
    assert first["choices"][0]["message"]["reasoning_content"]  # it thought before calling
    messages = [
        {"role": "user", "content": "weather please"},
        {**first["choices"][0]["message"]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21 C"},
        {"role": "user", "content": "and again with get_weather"},
    ]
    second = await completion(http, {"model": KIMI, "messages": messages, "tools": [WEATHER]})
    assert second["choices"][0]["message"]["tool_calls"][0]["id"] == "functions.get_weather:1"


async def test_streamed_tool_calls_are_index_based_deltas(http: aiohttp.ClientSession) -> None:
    prompt = "Call get_weather and get_time for Berlin"
    body = chat(prompt, QWEN, tools=[WEATHER, TIME])
    whole = await completion(http, body)
    expected = whole["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in expected] == ["get_weather", "get_time"]

    streamed = await chunks(http, {**body, "stream": True})
    deltas = [c["choices"][0]["delta"] for c in streamed]
    assert deltas[0] == {"role": "assistant", "content": None}
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    openings = [c for c in calls if "id" in c]
    assert [(c["index"], c["id"], c["function"]["name"]) for c in openings] == [
        (i, c["id"], c["function"]["name"]) for i, c in enumerate(expected)
    ]
    assert all(c["function"]["arguments"] == "" for c in openings)
    for index, call in enumerate(expected):
        fragments = [c["function"]["arguments"] for c in calls if c["index"] == index]
        assert len(fragments) > 2  # the arguments really are split across chunks
        assert "".join(fragments) == call["function"]["arguments"]
    assert streamed[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert all(c["choices"][0]["finish_reason"] is None for c in streamed[:-1])


async def test_tool_choice_and_parallel_tool_calls(http: aiohttp.ClientSession) -> None:
    both = "Use get_weather and get_time for Rome"

    async def names(prompt: str, **extra: Any) -> list[str]:
        answer = await completion(http, chat(prompt, QWEN, tools=[WEATHER, TIME], **extra))
        message = answer["choices"][0]["message"]
        return [c["function"]["name"] for c in message.get("tool_calls") or []]

    assert await names(both) == ["get_weather", "get_time"]
    assert await names(both, parallel_tool_calls=False) == ["get_weather"]
    forced = {"type": "function", "function": {"name": "get_time"}}
    assert await names("anything at all", tool_choice=forced) == ["get_time"]
    assert await names("anything at all") == ["get_weather"]  # none named: the first tool
    three = ["get_weather", "get_time", "get_weather"]
    assert await names("anything [[mock: tool_calls=3]]") == three
    assert await names(both, tool_choice="none") == []
    status, body, _ = await post_json(
        http,
        "/v1/chat/completions",
        chat(
            "x",
            QWEN,
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "nope"}},
        ),
    )
    assert status == 400
    assert body["error"]["param"] == "tool_choice"


async def test_tool_results_are_used_in_the_answer(http: aiohttp.ClientSession) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "weather in Oslo?"}]
    first = await completion(http, {"model": QWEN, "messages": messages, "tools": [WEATHER]})
    assistant = first["choices"][0]["message"]
    call = assistant["tool_calls"][0]
    messages += [assistant, {"role": "tool", "tool_call_id": call["id"], "content": "rain, 4 C"}]
    second = await completion(http, {"model": QWEN, "messages": messages, "tools": [WEATHER]})
    (choice,) = second["choices"]
    assert choice["finish_reason"] == "stop"
    assert "get_weather returned rain, 4 C" in choice["message"]["content"]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "x", "content": "1"}],
         "messages.[1].role"),
        (
            [
                {"role": "user", "content": "hi"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "call_1", "type": "function",
                         "function": {"name": "get_time", "arguments": "{}"}},
                    ],
                },
                {"role": "user", "content": "and?"},
            ],
            "messages.[1].role",
        ),
    ],
)  # fmt: skip
async def test_unpaired_tool_messages_are_refused(
    http: aiohttp.ClientSession, messages: list[dict[str, Any]], param: str
) -> None:
    status, body, _ = await post_json(
        http, "/v1/chat/completions", {"model": QWEN, "messages": messages, "tools": [TIME]}
    )
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] == param


async def test_kimi_wants_reasoning_content_back_on_tool_call_turns(
    http: aiohttp.ClientSession,
) -> None:
    first = await completion(http, chat("weather in Kyiv", KIMI, tools=[WEATHER]))
    assistant = first["choices"][0]["message"]
    call = assistant["tool_calls"][0]
    result = {"role": "tool", "tool_call_id": call["id"], "content": "snow"}

    def body(turn: dict[str, Any], **extra: Any) -> dict[str, Any]:
        messages = [{"role": "user", "content": "weather in Kyiv"}, turn, result]
        return {"model": KIMI, "messages": messages, "tools": [WEATHER], **extra}

    stripped = {k: v for k, v in assistant.items() if k != "reasoning_content"}
    status, error, _ = await post_json(http, "/v1/chat/completions", body(stripped))
    assert status == 400
    assert "reasoning_content is missing" in error["error"]["message"]
    assert "index 1" in error["error"]["message"]
    await completion(http, body(assistant))  # kept: fine
    await completion(http, body(stripped, thinking={"type": "disabled"}))  # no thinking: fine


async def test_a_model_without_tools_refuses_them_in_both_dialects(
    http: aiohttp.ClientSession,
) -> None:
    await configure(http, capabilities={QWEN: {"tools": False}})
    status, body, _ = await post_json(
        http, "/v1/chat/completions", chat("x", QWEN, tools=[WEATHER])
    )
    assert status == 400
    assert body["error"]["param"] == "tools"
    status, body, _ = await post_json(http, "/api/chat", chat("x", QWEN, tools=[WEATHER]))
    assert status == 400
    assert body["error"].endswith("does not support tools")


# --- Ollama ----------------------------------------------------------------------------------


async def test_ollama_tool_calls_are_whole_objects_and_results_come_back_by_name(
    http: aiohttp.ClientSession,
) -> None:
    ask = {"model": QWEN, "messages": [{"role": "user", "content": "weather in Lima"}]}
    whole = await ollama(http, {**ask, "tools": [WEATHER]})
    assert whole["done_reason"] == "stop"  # Ollama says stop after tool calls too
    message = whole["message"]
    assert message["content"] == ""
    (call,) = message["tool_calls"]
    assert call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert call["function"]["index"] == 0
    _check_weather_arguments(call["function"]["arguments"])  # an object, not a string

    lines = await ndjson(http, {**ask, "tools": [WEATHER]})
    with_calls = [line for line in lines if line["message"].get("tool_calls")]
    assert len(with_calls) == 1  # one line with the whole call, no deltas
    assert with_calls[0]["message"]["tool_calls"] == message["tool_calls"]
    assert lines[-1]["done"] is True

    follow_up = [
        *ask["messages"],
        message,
        {"role": "tool", "tool_name": "get_weather", "content": "fog, 15 C"},
    ]
    answer = await ollama(http, {"model": QWEN, "messages": follow_up, "tools": [WEATHER]})
    assert "get_weather returned fog, 15 C" in answer["message"]["content"]
    assert "tool_calls" not in answer["message"]


async def test_ollama_thinking_model_thinks_before_calling(http: aiohttp.ClientSession) -> None:
    body = {"model": OLLAMA_KIMI, "messages": [{"role": "user", "content": "weather in Quito"}]}
    answer = await ollama(http, {**body, "tools": [WEATHER], "think": True})
    assert answer["message"]["thinking"]
    assert answer["message"]["tool_calls"]


# --- The OpenAI SDK --------------------------------------------------------------------------


class Weather(pydantic.BaseModel):
    city: str
    unit: Literal["celsius", "fahrenheit"]


class Clock(pydantic.BaseModel):
    city: str
    timezone: str | None


def _run_tool(name: str, arguments: pydantic.BaseModel) -> str:
    return f"{name} for {getattr(arguments, 'city', '?')}: ok-{name}"


@pytest.mark.parametrize("streamed", [False, True])
async def test_sdk_tool_loop_with_parallel_calls(
    client: openai.AsyncOpenAI, streamed: bool
) -> None:
    tools = [openai.pydantic_function_tool(Weather), openai.pydantic_function_tool(Clock)]
    messages: list[Any] = [
        {"role": "user", "content": "Use Weather and Clock for Lisbon, then tell me."}
    ]
    for turn in range(3):
        if streamed:
            async with client.chat.completions.stream(
                model=QWEN, messages=messages, tools=tools
            ) as stream:
                result = await stream.get_final_completion()
        else:
            result = await client.chat.completions.parse(model=QWEN, messages=messages, tools=tools)
        message = result.choices[0].message
        if not message.tool_calls:
            break
        assert result.choices[0].finish_reason == "tool_calls"
        assert turn == 0  # the results answer the question: no second round of calls
        assert [c.function.name for c in message.tool_calls] == ["Weather", "Clock"]
        messages.append(message)
        for call in message.tool_calls:
            parsed = call.function.parsed_arguments
            assert isinstance(parsed, (Weather, Clock))  # strict schema, parsed by the SDK
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": call.id,
                    "content": _run_tool(call.function.name, parsed),
                }
            )
    assert result.choices[0].finish_reason == "stop"
    content = result.choices[0].message.content or ""
    assert "Weather returned Weather for" in content
    assert "ok-Clock" in content
