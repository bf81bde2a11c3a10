"""The Chat Completions contract over real HTTP: every field reaches the model or is refused by
name, answers say truthfully how they ended, and `/v1` caches only what is meant to repeat.

What reached the upstream is read back from the mock's request log.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.integration.service_support import Service, sse_events, unique

PIXEL = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


def chat(service: Service, body: dict[str, Any], **headers: str) -> httpx.Response:
    with service.client() as client:
        return client.post("/v1/chat/completions", json=body, headers=headers)


def sent(service: Service, marker: str) -> list[dict[str, Any]]:
    assert service.mock is not None
    return [r["body"] for r in service.mock.requests_mentioning(marker)]


def ask(text: str, model: str = "kimi", **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **fields}


def test_sampling_fields_reach_an_openai_compatible_model(kimi_api_service: Service) -> None:
    marker = unique("Why is the sky blue?")
    fields = {"top_p": 0.5, "stop": ["zz"], "seed": 7, "n": 2, "user": "u-1"}
    response = chat(kimi_api_service, ask(marker, **fields))
    assert response.status_code == 200, response.text

    (body,) = sent(kimi_api_service, marker)
    assert {k: body[k] for k in fields} == fields
    assert len(response.json()["choices"]) == 2  # n honoured end to end
    assert [c["index"] for c in response.json()["choices"]] == [0, 1]


def test_ollama_gets_them_in_its_own_form_and_the_client_is_told_what_was_left_out(
    kimi_api_service: Service,
) -> None:
    marker = unique("Write a Python function that sorts a list")
    fields = {"top_p": 0.5, "stop": "zz", "seed": 7, "user": "u-1", "temperature": 0.2}
    response = chat(kimi_api_service, ask(marker, model="qwen", **fields))
    assert response.status_code == 200, response.text

    (body,) = sent(kimi_api_service, marker)
    assert body["options"]["top_p"] == 0.5
    assert body["options"]["stop"] == ["zz"]
    assert body["options"]["seed"] == 7
    assert body["options"]["temperature"] == 0.2
    assert body["options"]["num_ctx"] > 4096  # never Ollama's small default
    assert "user" not in body
    assert "u-1" not in json.dumps(body)
    adjusted = response.headers["x-aiorch-adjusted"]
    assert "user" in adjusted
    assert "user: not sent" in " ".join(response.json()["aiorch"]["adjustments"])


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        ("qwen", "logprobs", True),
        ("qwen", "n", 3),
        ("qwen", "tool_choice", "required"),
        ("qwen", "reasoning_effort", "low"),  # both change the answer: never dropped
        ("qwen", "verbosity", "low"),
        ("kimi", "n", 9),  # kimi-k2-thinking: at most 5
    ],
)
def test_what_a_model_cannot_honour_is_refused_by_name(
    kimi_api_service: Service, model: str, field: str, value: Any
) -> None:
    fields: dict[str, Any] = {field: value}
    if field == "tool_choice":
        fields["tools"] = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    response = chat(
        kimi_api_service, ask(unique("hi"), model=model, **fields), **{"X-Aiorch-Fallback": "off"}
    )

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "unsupported_parameter",
        field,
    )


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": 1_000_001}, "max_completion_tokens"),
        ({"max_tokens": 10, "max_completion_tokens": 20}, "max_completion_tokens"),
    ],
    ids=["completion-zero", "tokens-zero", "completion-huge", "disagree"],
)
def test_a_token_limit_no_model_could_serve_is_refused_before_any_upstream_call(
    kimi_api_service: Service, fields: dict[str, Any], param: str
) -> None:
    marker = unique("Why?")
    response = chat(kimi_api_service, ask(marker, **fields))

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert sent(kimi_api_service, marker) == []


def test_an_unknown_field_is_forwarded_to_an_openai_compatible_model(
    kimi_api_service: Service,
) -> None:
    marker = unique("Why?")
    response = chat(kimi_api_service, ask(marker, top_k=5, model="kimi"))
    assert response.status_code == 200, response.text
    (body,) = sent(kimi_api_service, marker)
    assert body["top_k"] == 5


def test_an_unknown_field_inside_a_message_is_refused_by_name(kimi_api_service: Service) -> None:
    body = {"model": "kimi", "messages": [{"role": "user", "content": "hi", "mood": "happy"}]}
    response = chat(kimi_api_service, body)

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages[0].mood"


def test_images_reach_a_vision_model_and_are_refused_by_one_without(
    kimi_api_service: Service,
) -> None:
    content = [{"type": "image_url", "image_url": {"url": PIXEL}}]  # an image and no text
    marker = unique("vision")
    with_text = [*content, {"type": "text", "text": marker}]
    seeing = chat(
        kimi_api_service,
        {"model": "kimi/kimi-k2.6", "messages": [{"role": "user", "content": with_text}]},
    )
    blind = chat(
        kimi_api_service,
        {"model": "kimi", "messages": [{"role": "user", "content": content}]},
        **{"X-Aiorch-Fallback": "off"},
    )

    assert seeing.status_code == 200, seeing.text
    (body,) = sent(kimi_api_service, marker)
    assert body["messages"][0]["content"][0]["type"] == "image_url"
    assert blind.status_code == 400
    assert blind.json()["error"]["param"] == "messages[0].content"


def test_a_truncated_answer_says_length(kimi_api_service: Service) -> None:
    response = chat(kimi_api_service, ask(unique("Why?"), model="qwen", max_tokens=3))

    assert response.json()["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize("include_usage", [False, True])
def test_streamed_usage_comes_once_and_only_when_asked(
    kimi_api_service: Service, include_usage: bool
) -> None:
    fields: dict[str, Any] = {"stream": True}
    if include_usage:
        fields["stream_options"] = {"include_usage": True}
    with kimi_api_service.client() as client:
        text = client.post("/v1/chat/completions", json=ask(unique("Why?"), **fields)).text
    chunks = [json.loads(e.data) for e in sse_events(text.split("\n")) if e.data != "[DONE]"]

    with_usage = [c for c in chunks if c.get("usage")]
    assert len(with_usage) == (1 if include_usage else 0)
    if include_usage:
        assert with_usage[0]["choices"] == []  # its own chunk, after the finish
        assert chunks[-1] is with_usage[0]
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert finishes == ["stop"]


def test_a_fixed_parameter_is_not_sent_and_the_client_is_told(kimi_api_service: Service) -> None:
    marker = unique("Why?")
    response = chat(
        kimi_api_service, ask(marker, model="kimi/kimi-k2.6", temperature=0.3, max_tokens=50)
    )
    assert response.status_code == 200, response.text

    (body,) = sent(kimi_api_service, marker)
    assert "temperature" not in body  # kimi-k2.6 fixes it; the mock would answer 400
    assert body["max_completion_tokens"] == 50
    assert "max_tokens" not in body
    assert "temperature: not sent" in response.headers["x-aiorch-adjusted"]


def test_v1_serves_from_the_cache_only_what_is_meant_to_repeat(kimi_api_service: Service) -> None:
    sampled = ask(unique("Tell me a story"), model="qwen", temperature=1.0)
    fixed = ask(unique("Tell me a fact"), model="qwen", temperature=0)
    seeded = ask(unique("Tell me a joke"), model="qwen", seed=3)

    def cached(body: dict[str, Any], **headers: str) -> bool:
        response = chat(kimi_api_service, body, **headers)
        assert response.status_code == 200, response.text
        return bool(response.json()["aiorch"]["cached"])

    assert [cached(sampled), cached(sampled)] == [False, False]  # a fresh sample each time
    assert [cached(fixed), cached(fixed)] == [False, True]
    assert [cached(seeded), cached(seeded)] == [False, True]
    opted = ask(unique("Tell me another"), model="qwen", temperature=1.0)
    assert [
        cached(opted, **{"X-Aiorch-Cache": "on"}),
        cached(opted, **{"X-Aiorch-Cache": "on"}),
    ] == [
        False,
        True,
    ]


def test_auto_answers_an_ambiguous_query_with_one_model_that_v1_models_lists(
    kimi_api_service: Service,
) -> None:
    response = chat(kimi_api_service, ask(unique("hmm"), model="auto"))
    assert response.status_code == 200, response.text

    answer = response.json()
    assert "##" not in answer["choices"][0]["message"]["content"]  # never two answers merged
    with kimi_api_service.client() as client:
        listed = {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert answer["model"] in listed
    assert answer["aiorch"]["selected_service"] in ("kimi", "qwen")
