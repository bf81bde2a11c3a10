"""Structured output and agent-shaped answers from the mock, over real HTTP."""

from __future__ import annotations

import enum
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx
import openai
import pydantic
import pytest

from aiorch.agents.parser import parse_implementation, parse_requirements, parse_review
from aiorch.agents.prompts import Prompts
from aiorch.types import AgentType
from tests.integration.mock_support import (
    KIMI,
    QWEN,
    chat,
    completion,
    ollama,
    post_json,
    reset,
    start_mock,
)
from tests.integration.service_support import Service, unique
from tests.support.procs import Server


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_mock(tmp_path_factory.mktemp("mock-structured")) as server:
        yield server


@pytest.fixture
async def http(mock: Server) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=mock.url) as session:
        await reset(session, config=True)
        yield session


class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Step(pydantic.BaseModel):
    title: str
    minutes: int = pydantic.Field(ge=1, le=90)


class Plan(pydantic.BaseModel):
    name: str
    priority: Priority
    steps: list[Step]
    owner: str | None
    done: bool
    score: float


async def test_sdk_parse_fills_a_pydantic_model(mock: Server) -> None:
    async with openai.AsyncOpenAI(base_url=f"{mock.url}/v1", api_key="unused") as client:
        result = await client.chat.completions.parse(
            model="moonshot-v1-8k",
            messages=[{"role": "user", "content": "Plan a database migration"}],
            response_format=Plan,
        )
        again = await client.chat.completions.parse(
            model="moonshot-v1-8k",
            messages=[{"role": "user", "content": "Plan a database migration"}],
            response_format=Plan,
        )
    plan = result.choices[0].message.parsed
    assert isinstance(plan, Plan)  # nested objects, an enum, a list, Optional ($defs, anyOf)
    assert plan.steps
    assert all(1 <= step.minutes <= 90 for step in plan.steps)
    assert again.choices[0].message.parsed == plan  # deterministic per prompt


SCHEMA = {
    "type": "object",
    "properties": {
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
        "kind": {"enum": ["a", "b"]},
        "ratio": {"type": "number", "minimum": 0, "maximum": 1},
        "when": {"type": "string", "format": "date-time"},
        "node": {"$ref": "#/$defs/node"},
    },
    "required": ["tags", "kind", "ratio", "when", "node"],
    "additionalProperties": False,
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "value": {"type": "integer"},
                "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]},
            },
            "required": ["value", "next"],
        }
    },
}


def _check(value: dict[str, Any]) -> None:
    assert set(value) == {"tags", "kind", "ratio", "when", "node"}
    assert len(value["tags"]) == 2
    assert all(isinstance(t, str) for t in value["tags"])
    assert value["kind"] in ("a", "b")
    assert 0 <= value["ratio"] <= 1
    assert value["when"].endswith("Z")
    node, depth = value["node"], 0
    while node is not None:  # the recursive schema ends
        assert isinstance(node["value"], int)
        node, depth = node["next"], depth + 1
    assert depth >= 1


async def test_json_schema_in_both_dialects(http: aiohttp.ClientSession) -> None:
    schema_format = {"type": "json_schema", "json_schema": {"name": "thing", "schema": SCHEMA}}
    answer = await completion(http, chat("describe a thing", KIMI, response_format=schema_format))
    message = answer["choices"][0]["message"]
    _check(json.loads(message["content"]))
    assert message["reasoning_content"]  # thinking still comes first
    whole = await ollama(http, {**chat("describe a thing", QWEN), "format": SCHEMA})
    _check(json.loads(whole["message"]["content"]))


async def test_json_mode_needs_the_word_json_and_follows_the_prompts_example(
    http: aiohttp.ClientSession,
) -> None:
    status, body, _ = await post_json(
        http, "/v1/chat/completions", chat("hi", QWEN, response_format={"type": "json_object"})
    )
    assert status == 400
    assert body["error"]["param"] == "messages"
    prompt = 'Reply in JSON like {"city": "Paris", "sights": ["..."]} about Madrid'
    answer = await completion(http, chat(prompt, QWEN, response_format={"type": "json_object"}))
    value = json.loads(answer["choices"][0]["message"]["content"])
    assert isinstance(value, dict)
    whole = await ollama(http, {**chat("any answer, as JSON", QWEN), "format": "json"})
    assert isinstance(json.loads(whole["message"]["content"]), dict)


# --- Agent-shaped answers --------------------------------------------------------------------


def _prompts(request: str) -> dict[AgentType, str]:
    prompts = Prompts.load()
    ba = prompts.render(AgentType.BA, {"request": request})
    return {
        AgentType.BA: ba,
        AgentType.DEV: prompts.render(
            AgentType.DEV, {"request": request, "requirements": "## US-1: Reset\nAs a user..."}
        ),
        AgentType.QA: prompts.render(
            AgentType.QA,
            {"request": request, "criteria": "- US-1: a link is sent", "code": "print('x')"},
        ),
    }


@pytest.mark.parametrize("dialect", ["openai", "ollama"])
async def test_each_agent_prompt_gets_the_shape_it_asks_for(
    http: aiohttp.ClientSession, dialect: str
) -> None:
    prompts = _prompts("Users can reset their password by e-mail")

    async def ask(prompt: str) -> str:
        if dialect == "openai":
            answer = await completion(http, chat(prompt, KIMI))
            text: str = answer["choices"][0]["message"]["content"]
        else:
            text = (await ollama(http, chat(prompt, QWEN)))["message"]["content"]
        return text

    stories = parse_requirements(await ask(prompts[AgentType.BA]))
    assert 1 <= len(stories.stories) <= 3
    assert all(s.id.startswith("US-") and s.acceptance_criteria for s in stories.stories)
    assert any(w in stories.render().lower() for w in ("password", "reset", "e-mail"))
    code = parse_implementation(await ask(prompts[AgentType.DEV]))
    for file in code.files:
        compile(file.content, file.path, "exec")  # runnable Python, not filler
    review = parse_review(await ask(prompts[AgentType.QA]))
    assert review.verdict.value == "pass"
    assert all(case.criterion.startswith("US-1") for case in review.test_cases)
    assert await ask(prompts[AgentType.BA]) == await ask(prompts[AgentType.BA])


async def test_shapes_without_an_example_and_overrides(http: aiohttp.ClientSession) -> None:
    text = (await completion(http, chat("Write user stories for a login page", QWEN)))["choices"]
    assert parse_requirements(text[0]["message"]["content"]).stories
    review = (await completion(http, chat("Give your verdict on this patch", QWEN)))["choices"]
    assert parse_review(review[0]["message"]["content"]).verdict.value == "pass"
    # A scripted rule still wins, and a fault directive still fails the call.
    await post_json(
        http, "/_mock/config", {"responses": [{"match": "login page", "content": "scripted"}]}
    )
    again = await completion(http, chat("Write user stories for a login page", QWEN))
    assert again["choices"][0]["message"]["content"] == "scripted"
    status, _, _ = await post_json(
        http, "/v1/chat/completions", chat("Write user stories [[mock: fault=http_500]]", QWEN)
    )
    assert status == 500


def test_the_flow_endpoint_completes_against_the_mock(kimi_api_service: Service) -> None:
    """The README's example: no rules file, three completed stages."""
    with httpx.Client(base_url=kimi_api_service.url, timeout=30) as client:
        response = client.post(
            "/api/ai/flows/ba-dev-qa",
            json={"request": unique("Users can reset their password by email")},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert [s["status"] for s in body["stages"]] == ["completed"] * 3
    assert body["verdict"] == "pass"
