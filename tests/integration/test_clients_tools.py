"""Coding agents through aiorch: the OpenAI SDK's tool loops and structured output, unchanged.

Both dialects: `kimi` reaches the mock as Moonshot (a thinking model: each assistant tool-call
turn must keep its `reasoning_content`, or Moonshot answers 400), `qwen` as Ollama's native API
(whole-object tool calls turned into OpenAI's index-based deltas and back).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.integration.service_support import Mock, Service, unique

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The local time in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    },
]
RESULTS = {"get_weather": {"sky": "rain", "celsius": 4}, "get_time": {"time": "09:15"}}


@pytest.fixture
def sdk(kimi_api_service: Service) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(
        api_key="unused",
        base_url=f"{kimi_api_service.url}/v1",
        max_retries=0,
        timeout=httpx.Timeout(30.0, connect=5.0),
    )
    yield client
    client.close()


def results_for(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"role": "tool", "tool_call_id": c["id"], "content": json.dumps(RESULTS[c["name"]])}
        for c in calls
    ]


@pytest.mark.parametrize("model", ["kimi", "qwen"])
def test_a_tool_loop_over_several_turns_with_parallel_calls(sdk: openai.OpenAI, model: str) -> None:
    question = unique("What is the weather and the time in Paris? Use get_weather and get_time.")
    messages: list[Any] = [{"role": "user", "content": question}]

    first = sdk.chat.completions.create(model=model, messages=messages, tools=TOOLS)

    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert {c.function.name for c in calls} == {"get_weather", "get_time"}  # in parallel
    assert len({c.id for c in calls}) == 2
    for call in calls:
        assert json.loads(call.function.arguments)["city"]
    # The assistant turn goes back as the SDK gave it (reasoning_content included for Kimi).
    messages.append(choice.message.model_dump(exclude_none=True))
    messages += results_for([{"id": c.id, "name": c.function.name} for c in calls])

    second = sdk.chat.completions.create(model=model, messages=messages, tools=TOOLS)

    answer = second.choices[0]
    assert answer.finish_reason == "stop", answer
    assert answer.message.content
    assert "rain" in answer.message.content  # it read the tool results
    assert second.usage is not None

    # The conversation goes on: another question, another round of tools, with the first
    # round's calls, results and answer in the history.
    messages.append(answer.message.model_dump(exclude_none=True))
    messages.append({"role": "user", "content": "And in Oslo? Use get_weather."})
    third = sdk.chat.completions.create(model=model, messages=messages, tools=TOOLS)

    again = third.choices[0]
    assert again.finish_reason == "tool_calls"
    (call,) = again.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert call.id not in {c.id for c in calls}  # ids stay unique across the conversation
    messages.append(again.message.model_dump(exclude_none=True))
    messages += results_for([{"id": call.id, "name": call.function.name}])

    fourth = sdk.chat.completions.create(model=model, messages=messages, tools=TOOLS)

    last = fourth.choices[0]
    assert last.finish_reason == "stop", last
    assert "rain" in (last.message.content or "")
    roles = [m["role"] for m in messages]
    assert roles == ["user", "assistant", "tool", "tool", "assistant", "user", "assistant", "tool"]


@pytest.mark.parametrize("model", ["kimi", "qwen"])
def test_a_streamed_tool_loop_builds_calls_from_index_based_deltas(
    sdk: openai.OpenAI, model: str
) -> None:
    question = unique("What is the weather and the time in Oslo? Use get_weather and get_time.")
    messages: list[Any] = [{"role": "user", "content": question}]
    calls: dict[int, dict[str, Any]] = {}
    reasoning: list[str] = []
    finish = None
    stream = sdk.chat.completions.create(model=model, messages=messages, tools=TOOLS, stream=True)
    for chunk in stream:
        for choice in chunk.choices:
            delta = choice.delta
            extra = delta.model_extra or {}
            reasoning.append(extra.get("reasoning_content") or "")
            for piece in delta.tool_calls or []:
                call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
                call["id"] = piece.id or call["id"]
                if piece.function is not None:
                    call["name"] = piece.function.name or call["name"]
                    call["arguments"] += piece.function.arguments or ""
            finish = choice.finish_reason or finish

    assert finish == "tool_calls"
    assert {c["name"] for c in calls.values()} == {"get_weather", "get_time"}
    for call in calls.values():
        assert call["id"]
        assert json.loads(call["arguments"])["city"]
    turn: dict[str, Any] = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for c in calls.values()
        ],
    }
    if "".join(reasoning):
        turn["reasoning_content"] = "".join(reasoning)
    messages += [turn, *results_for(list(calls.values()))]

    text = ""
    for chunk in sdk.chat.completions.create(
        model=model, messages=messages, tools=TOOLS, stream=True
    ):
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert finish == "stop"
    assert "rain" in text


def test_kimi_refuses_a_tool_turn_without_its_reasoning_and_aiorch_says_so(
    sdk: openai.OpenAI,
) -> None:
    """A client that drops `reasoning_content` gets Moonshot's own 400, passed on as it said
    it, not a retry, not a fallback to another model."""
    question = unique("What is the weather in Rome? Use get_weather.")
    first = sdk.chat.completions.create(
        model="kimi", messages=[{"role": "user", "content": question}], tools=TOOLS
    )
    message = first.choices[0].message.model_dump(exclude_none=True)
    message.pop("reasoning_content", None)
    calls = [
        {"id": c.id, "name": c.function.name} for c in first.choices[0].message.tool_calls or []
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(
            model="kimi",
            messages=[{"role": "user", "content": question}, message, *results_for(calls)],
            tools=TOOLS,
        )
    assert "reasoning_content" in caught.value.message


class Weather(BaseModel):
    city: str
    celsius: float
    sky: str


@pytest.mark.parametrize("model", ["kimi", "qwen"])
def test_parse_fills_a_pydantic_model(sdk: openai.OpenAI, model: str) -> None:
    completion = sdk.chat.completions.parse(
        model=model,
        messages=[{"role": "user", "content": unique("The weather in Paris, as JSON.")}],
        response_format=Weather,
    )

    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Weather)
    assert completion.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("model", ["kimi", "qwen"])
def test_json_mode(sdk: openai.OpenAI, model: str) -> None:
    completion = sdk.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": unique("Reply in json: the weather in Paris.")}],
        response_format={"type": "json_object"},
    )

    assert isinstance(json.loads(completion.choices[0].message.content or ""), dict)


def test_a_field_no_model_of_the_route_can_honour_is_refused_by_name(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(
            model="qwen",
            messages=[{"role": "user", "content": unique("hi")}],
            logit_bias={"50256": -100},
            extra_headers={"X-Aiorch-Fallback": "off"},
        )

    assert caught.value.code == "unsupported_parameter"
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["param"] == "logit_bias"


def test_reasoning_effort_reaches_kimi_and_is_refused_by_name_on_ollama(
    sdk: openai.OpenAI, mock_upstream: Mock
) -> None:
    """It changes the answer, so it is never left out quietly: sent where the API has it."""
    marker = unique("hi")
    answered = sdk.chat.completions.create(
        model="kimi", messages=[{"role": "user", "content": marker}], reasoning_effort="low"
    )
    assert answered.choices[0].finish_reason == "stop"
    (sent,) = mock_upstream.requests_mentioning(marker)
    assert sent["body"]["reasoning_effort"] == "low"

    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(
            model="qwen",
            messages=[{"role": "user", "content": unique("hi")}],
            reasoning_effort="low",
        )

    assert caught.value.code == "unsupported_parameter"
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["param"] == "reasoning_effort"
