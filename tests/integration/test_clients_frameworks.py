"""The frameworks people already use, pointed at aiorch unchanged: LangChain's ChatOpenAI, the
OpenAI Agents SDK and LiteLLM as a client, over the mock upstream."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from pydantic import BaseModel

from tests.integration.service_support import Service, unique

# LiteLLM reads these when it is imported: no fetch of its price list from the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


class Weather(BaseModel):
    city: str
    celsius: float
    sky: str


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"rain, 4 C in {city}"


# ---------------------------------------------------------------------------- LangChain


def chat_model(service: Service, model: str, **kwargs: Any) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=model,
        base_url=f"{service.url}/v1",
        api_key="unused",  # type: ignore[arg-type]
        max_retries=0,
        timeout=30,
        **kwargs,
    )


@pytest.mark.parametrize("model", ["kimi", "qwen"])
def test_langchain_bind_tools_calls_the_tool(kimi_api_service: Service, model: str) -> None:
    llm = chat_model(kimi_api_service, model).bind_tools([get_weather])

    message = llm.invoke(unique("What is the weather in Paris? Use get_weather."))

    assert [call["name"] for call in message.tool_calls] == ["get_weather"]
    assert message.tool_calls[0]["args"]["city"]
    assert message.response_metadata["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("model", ["kimi", "qwen"])
def test_langchain_with_structured_output_fills_the_model(
    kimi_api_service: Service, model: str
) -> None:
    llm = chat_model(kimi_api_service, model).with_structured_output(Weather)

    weather = llm.invoke(unique("The weather in Paris, as JSON."))

    assert isinstance(weather, Weather)


def test_langchain_counts_streamed_usage_once(kimi_api_service: Service) -> None:
    """Usage arrives in one chunk only, so summing it over the chunks (as LangChain does) gives
    the same count as the plain answer's."""
    llm = chat_model(kimi_api_service, "qwen", stream_usage=True)
    prompt = unique("Why is the sky blue?")

    plain = llm.invoke(prompt)
    total: Any = None
    for chunk in llm.stream(prompt):
        total = chunk if total is None else total + chunk

    assert plain.usage_metadata is not None
    assert total.usage_metadata is not None
    assert total.usage_metadata["output_tokens"] == plain.usage_metadata["output_tokens"]
    assert total.usage_metadata["input_tokens"] == plain.usage_metadata["input_tokens"]
    assert total.content == plain.content


# ---------------------------------------------------------------------------- Agents SDK


def test_the_openai_agents_sdk_runs_an_agent_with_a_function_tool(
    kimi_api_service: Service,
) -> None:
    from agents import (
        Agent,
        OpenAIChatCompletionsModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # no export to OpenAI's servers
    seen: list[str] = []

    @function_tool
    def weather(city: str) -> str:
        """The weather in a city."""
        seen.append(city)
        return get_weather(city)

    async def run() -> str:
        client = AsyncOpenAI(base_url=f"{kimi_api_service.url}/v1", api_key="unused")
        agent = Agent(
            name="assistant",
            instructions="Answer with the tools you have.",
            model=OpenAIChatCompletionsModel(model="qwen", openai_client=client),
            tools=[weather],
        )
        result = await Runner.run(agent, unique("What is the weather in Paris? Use weather."))
        await client.close()
        return str(result.final_output)

    answer = asyncio.run(run())

    assert seen  # the agent called our function
    assert "rain" in answer  # and answered from what it returned


# ---------------------------------------------------------------------------- LiteLLM


# LiteLLM's own types make pydantic warn when it streams (the suite treats warnings as errors):
# its warnings, not ours.
def litellm_warnings_ignored(test: Any) -> Any:
    test = pytest.mark.filterwarnings("ignore:Item '.*' on TypedDict class:UserWarning")(test)
    return pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211")(test)


@litellm_warnings_ignored
@pytest.mark.parametrize("stream", [False, True])
def test_litellm_as_a_client(kimi_api_service: Service, stream: bool) -> None:
    import litellm

    options: dict[str, Any] = {
        "model": "openai/qwen",
        "api_base": f"{kimi_api_service.url}/v1",
        "api_key": "unused",
        "messages": [{"role": "user", "content": unique("Why is the sky blue?")}],
        "num_retries": 0,
    }
    if not stream:
        response = litellm.completion(**options)
        assert response.choices[0].message.content
        assert response.choices[0].finish_reason == "stop"
        assert response.usage.completion_tokens > 0
        return
    chunks = list(
        litellm.completion(**options, stream=True, stream_options={"include_usage": True})
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]


@litellm_warnings_ignored
def test_litellm_tool_calls(kimi_api_service: Service) -> None:
    import litellm

    response = litellm.completion(
        model="openai/kimi",
        api_base=f"{kimi_api_service.url}/v1",
        api_key="unused",
        messages=[
            {"role": "user", "content": unique("What is the weather in Paris? Use get_weather.")}
        ],
        tools=[
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                },
            }
        ],
        num_retries=0,
    )

    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls[0].function.name == "get_weather"
