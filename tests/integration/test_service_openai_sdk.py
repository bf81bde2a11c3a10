"""The official OpenAI Python SDK as a client of `/v1`: plain, streaming, models, errors."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.integration.service_support import Service, unique, wait_until

ENDLESS = "[[mock: tokens_per_second=20 tokens=5000]]"  # minutes of output


@pytest.fixture
def sdk(online_service: Service) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(
        api_key="not-checked-here",
        base_url=f"{online_service.url}/v1",
        max_retries=0,  # a retry would hide the status the service answered with
        timeout=httpx.Timeout(30.0, connect=5.0),
    )
    yield client
    client.close()


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_plain_completion(sdk: openai.OpenAI, online_service: Service) -> None:
    completion = sdk.chat.completions.create(
        model="kimi", messages=user(unique("Why is the sky blue?"))
    )

    assert completion.object == "chat.completion"
    assert completion.model.startswith("kimi-k2-thinking")
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content
    # Moonshot's reasoning_content is passed through on the message.
    assert choice.message.model_extra is not None
    assert choice.message.model_extra["reasoning_content"]
    assert completion.usage is not None
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert completion.model_extra is not None
    assert completion.model_extra["aiorch"]["selected_service"] == "kimi"


def test_auto_model_routes_by_query_type(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model="auto",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": unique("Write a Python function that reverses a list")},
        ],
    )

    assert completion.model_extra is not None
    assert completion.model_extra["aiorch"]["query_type"] == "code"
    assert completion.model == "qwen2.5-coder:7b"


def test_developer_role_and_content_parts_are_understood(
    sdk: openai.OpenAI, online_service: Service
) -> None:
    prompt = unique("Name a prime number")
    sdk.chat.completions.create(
        model="qwen",
        messages=[
            {"role": "developer", "content": "Answer in one word."},
            {"role": "user", "content": [{"type": "text", "text": prompt}]},
        ],
        max_completion_tokens=64,
        temperature=0.2,
    )

    assert online_service.mock is not None
    (call,) = online_service.mock.requests_mentioning(prompt)
    messages = call["body"]["messages"]
    assert messages[0] == {"role": "system", "content": "Answer in one word."}
    assert messages[-1] == {"role": "user", "content": prompt}
    assert call["body"]["options"]["num_predict"] == 64


def test_streaming_passes_reasoning_content_and_usage(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="kimi",
        messages=user(unique("Why do we dream?")),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    assert chunks[0].choices[0].delta.role == "assistant"
    reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
        for c in chunks
        if c.choices
    )
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert reasoning
    assert content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert finishes.count("stop") == 1
    # With include_usage, the last chunk has no choices and carries the usage (OpenAI's shape).
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_streamed_text_equals_the_plain_answer(sdk: openai.OpenAI) -> None:
    prompt = unique("Explain recursion")
    plain = sdk.chat.completions.create(model="qwen", messages=user(prompt))
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in sdk.chat.completions.create(model="qwen", messages=user(prompt), stream=True)
        if c.choices
    )

    assert streamed == plain.choices[0].message.content


def test_sdk_stream_is_incremental_and_closing_it_cancels_the_upstream_call(
    sdk: openai.OpenAI, online_service: Service
) -> None:
    mock = online_service.mock
    assert mock is not None
    disconnects = mock.stats()["client_disconnects"]
    stream = sdk.chat.completions.create(
        model="kimi", messages=user(unique(f"Go on forever. {ENDLESS}")), stream=True
    )
    chunks = iter(stream)
    assert next(chunks).choices[0].delta.role == "assistant"
    first = next(chunks).choices[0].delta
    # Text reached the client while the upstream is still generating: nothing was buffered.
    assert (first.model_extra or {}).get("reasoning_content") or first.content
    assert mock.stats()["in_flight"] == 1
    stream.close()

    wait_until(lambda: mock.stats()["in_flight"] == 0, "the upstream request to be cancelled")
    assert mock.stats()["client_disconnects"] == disconnects + 1
    wait_until(
        lambda: online_service.metric("orchestrator_in_flight_requests") == 0,
        "the in-flight gauge to return to 0",
    )


def test_models_list(sdk: openai.OpenAI, online_service: Service) -> None:
    models = {m.id: m.owned_by for m in sdk.models.list()}

    assert models["auto"] == "aiorch"
    assert models["kimi"] == "kimi"
    assert models["qwen"] == "qwen"
    assert models["qwen2.5-coder:7b"] == "qwen"
    kimi_model = (
        "kimi-k2-thinking" if online_service.name == "kimi-api" else "kimi-k2-thinking:cloud"
    )
    assert models[kimi_model] == "kimi"


def test_models_retrieve(sdk: openai.OpenAI) -> None:
    assert sdk.models.retrieve("qwen2.5-coder:7b").owned_by == "qwen"
    assert sdk.models.retrieve("auto").owned_by == "aiorch"
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.models.retrieve("gpt-9")
    assert "gpt-9" in str(caught.value)


def test_every_listed_model_can_be_used(sdk: openai.OpenAI) -> None:
    for model in sdk.models.list():
        completion = sdk.chat.completions.create(model=model.id, messages=user(unique("hi")))
        assert completion.choices[0].message.content, model.id


def test_unknown_model_is_model_not_found_naming_the_field(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(model="gpt-17", messages=user("hi"))

    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"
    assert caught.value.type == "invalid_request_error"
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["param"] == "model"
    assert "gpt-17" in body["message"]


def test_request_id_round_trip_through_the_sdk(sdk: openai.OpenAI) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="qwen", messages=user(unique("hi")), extra_headers={"X-Request-ID": "sdk-rid-1"}
    )

    assert raw.headers["x-request-id"] == "sdk-rid-1"
    assert raw.parse().id == "chatcmpl-sdk-rid-1"


def test_all_backends_failing_is_an_api_error_listing_attempts(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(
            model="auto", messages=user(unique("Why? [[mock: fault=http_500]]"))
        )

    assert caught.value.status_code == 502
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["code"] == "all_backends_failed"
    assert {a["service"] for a in body["attempts"]} == {"kimi", "qwen"}


def test_stream_failing_mid_way_without_a_fallback_raises_instead_of_ending_short(
    sdk: openai.OpenAI,
) -> None:
    stream = sdk.chat.completions.create(
        model="kimi",
        messages=user(unique("Why? [[mock: fault=cut cut_after=4]]")),
        stream=True,
        extra_headers={"X-Aiorch-Fallback": "off"},
    )
    chunks = iter(stream)
    assert next(chunks).choices[0].delta.role == "assistant"
    assert next(chunks).choices[0].delta.model_extra  # thinking had started to arrive
    with pytest.raises(openai.APIError) as caught:
        list(chunks)

    assert "broke off" in caught.value.message


def test_stream_failing_before_any_output_is_a_status_error(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(
            model="qwen", messages=user(unique("hi [[mock: fault=http_500]]")), stream=True
        )

    assert caught.value.status_code == 502
    assert caught.value.response.headers["content-type"] == "application/json"


def test_russian_query_round_trips(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model="auto",
        messages=user(unique("Напиши функцию на Python, которая сортирует список")),
    )

    assert completion.model_extra is not None
    assert completion.model_extra["aiorch"]["query_type"] == "code"
    assert completion.choices[0].message.content
