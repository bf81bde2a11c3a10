"""Errors in OpenAI's shape with the right status: bad input, unknown paths and methods, oversized
bodies, missing keys, and every backend failing (502/503/504 with each attempt listed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.service_support import Service, unique, wait_until

ENDPOINTS = ("/api/ai/query", "/v1/chat/completions")


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json", response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error["type"], str)
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


@pytest.mark.parametrize(
    ("payload", "status", "param", "says"),
    [
        (b"", 400, None, "empty"),
        (b"{", 400, None, "not valid JSON"),
        (b"\xff\xfe{}", 400, None, "not UTF-8"),
        # Wrong shapes: our words and the field; msgspec's own account follows ours.
        (b"[1, 2]", 422, None, "invalid request body"),
        (b"{}", 422, "query", "invalid request body"),
        (b'{"query": 42}', 422, "query", "invalid request body"),
        (b'{"query": "hi", "stream": "yes"}', 422, "stream", "invalid request body"),
        (b'{"query": "hi", "max_tokens": 1.5}', 422, "max_tokens", "invalid request body"),
        (b'{"query": "hi", "surprise": 1}', 422, "surprise", "invalid request body"),
        (b'{"query": "   "}', 400, "query", "empty"),
        (b'{"query": "hi", "query_type": "poetry"}', 400, "query_type", "poetry"),
        (b'{"query": "hi", "agent_type": "ceo"}', 400, "agent_type", "ceo"),
        (b'{"query": "hi", "model": "gpt-17"}', 404, "model", "gpt-17"),
        (b'{"query": "hi", "max_tokens": 0}', 400, "max_tokens", "max_tokens"),
        (b'{"query": "hi", "temperature": 7}', 400, "temperature", "temperature"),
        (b'{"query": "hi", "temperature": 1e999}', 422, "temperature", "invalid request body"),
    ],
)
def test_bad_query_bodies_say_what_is_wrong(
    kimi_api_service: Service, payload: bytes, status: int, param: str | None, says: str
) -> None:
    with kimi_api_service.client() as client:
        response = client.post(
            "/api/ai/query", content=payload, headers={"Content-Type": "application/json"}
        )

    assert response.status_code == status, response.text
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == ("model_not_found" if status == 404 else "invalid_request")
    assert error["param"] == param
    assert says in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "auto"}, "messages"),
        ({"model": "auto", "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"model": "auto", "messages": [{"content": "hi"}]}, "messages[0].role"),
        ({"model": "auto", "messages": []}, "messages"),
        ({"model": "auto", "messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
        ({"model": "auto", "messages": [{"role": "user", "content": ""}]}, "messages"),
        ({"model": "auto", "messages": "hi"}, "messages"),
        ({"model": "kimi", "thinking": {"type": "maybe"}, "messages": []}, "thinking.type"),
        (
            {"model": "kimi", "stream_options": {"include_usage": 1}, "messages": []},
            ("stream_options.include_usage"),
        ),
    ],
)
def test_bad_chat_bodies_name_the_field(
    kimi_api_service: Service, body: dict[str, Any], param: str
) -> None:
    with kimi_api_service.client() as client:
        response = client.post("/v1/chat/completions", json=body)

    assert response.status_code in (400, 422), response.text
    assert error_of(response)["param"] == param


def test_unknown_path_is_an_openai_shaped_404(kimi_api_service: Service) -> None:
    with kimi_api_service.client() as client:
        response = client.get("/v1/engines")

    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "not_found"
    assert "/v1/engines" in error["message"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/api/ai/query", "POST"),
        ("PUT", "/v1/chat/completions", "POST"),
        ("DELETE", "/v1/models", "GET"),
        ("POST", "/metrics", "GET"),
    ],
)
def test_wrong_method_is_405_with_allow(
    kimi_api_service: Service, method: str, path: str, allowed: str
) -> None:
    with kimi_api_service.client() as client:
        response = client.request(method, path)

    assert response.status_code == 405
    assert allowed in response.headers["allow"]
    assert error_of(response)["code"] == "method_not_allowed"


def oversized_query() -> bytes:
    return b'{"query": "' + b"a" * (1024 * 1024 + 10) + b'"}'


def test_oversized_body_is_413(kimi_api_service: Service) -> None:
    with kimi_api_service.client() as client:
        response = client.post("/api/ai/query", content=oversized_query())

    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "payload_too_large"
    assert "limit" in error["message"]


def test_oversized_chunked_body_is_413(kimi_api_service: Service) -> None:
    # No Content-Length: the limit must hold while the body streams in.
    def body() -> Iterator[bytes]:
        data = oversized_query()
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]

    with kimi_api_service.client() as client:
        response = client.post("/v1/chat/completions", content=body())

    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"


def test_query_longer_than_the_character_limit_is_400(kimi_api_service: Service) -> None:
    with kimi_api_service.client() as client:
        response = client.post("/api/ai/query", json={"query": "b" * 100_001})

    assert response.status_code == 400
    assert error_of(response)["param"] == "query"


def test_api_keys_are_required_when_configured(keyed_service: Service) -> None:
    with keyed_service.client() as client:
        missing = client.post("/api/ai/query", json={"query": "hi"})
        wrong = client.get("/v1/models", headers={"Authorization": "Bearer nope"})
        good = client.post(
            "/api/ai/query",
            json={"query": unique("hi")},
            headers={"Authorization": "Bearer client-key-2"},
        )
        other_header = client.get("/v1/models", headers={"X-API-Key": "client-key-1"})
        health = client.get("/healthz")

    assert missing.status_code == 401
    assert error_of(missing)["code"] == "authentication"
    assert wrong.status_code == 401
    assert good.status_code == 200, good.text
    assert other_header.status_code == 200
    assert health.status_code == 200


def assert_every_attempt_listed(error: dict[str, Any], error_type: str) -> None:
    assert error["code"] == "all_backends_failed"
    assert sorted(a["service"] for a in error["attempts"]) == ["kimi", "qwen"]
    assert {a["error_type"] for a in error["attempts"]} == {error_type}
    for attempt in error["attempts"]:
        assert attempt["model"]
        assert attempt["service"] in attempt["message"]
        assert attempt["service"] in error["message"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_all_backends_failing_is_502(kimi_api_service: Service, endpoint: str) -> None:
    prompt = unique("Why? [[mock: fault=http_500]]")
    with kimi_api_service.client() as client:
        response = client.post(endpoint, json=request_body(endpoint, prompt))

    assert response.status_code == 502
    assert_every_attempt_listed(error_of(response), "upstream_error")


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [("overloaded", "overloaded"), ("quota", "quota_exceeded")],
)
def test_all_backends_unavailable_is_503(
    kimi_api_service: Service, fault: str, error_type: str
) -> None:
    prompt = unique(f"Why? [[mock: fault={fault} retry_after_s=0]]")
    response = kimi_api_service.query({"query": prompt, "query_type": "reasoning"})

    assert response.status_code == 503
    assert_every_attempt_listed(error_of(response), error_type)


def test_all_backends_refusing_connections_is_502(dead_service: Service) -> None:
    response = dead_service.query({"query": unique("Why?"), "query_type": "reasoning"})

    assert response.status_code == 502
    assert_every_attempt_listed(error_of(response), "connection_error")


@pytest.mark.parametrize("stream", [False, True])
def test_all_backends_timing_out_is_504(impatient_service: Service, stream: bool) -> None:
    prompt = unique("Why? [[mock: fault=hang]]")
    response = impatient_service.query(
        {"query": prompt, "query_type": "reasoning", "stream": stream}
    )

    assert response.status_code == 504
    assert_every_attempt_listed(error_of(response), "timeout")
    mock = impatient_service.mock
    assert mock is not None
    # The hung upstream calls were abandoned, not left running.
    wait_until(lambda: mock.stats()["in_flight"] == 0, "the hung upstream calls to be dropped")


def request_body(endpoint: str, prompt: str) -> dict[str, Any]:
    if endpoint == "/api/ai/query":
        return {"query": prompt, "query_type": "reasoning"}
    return {"model": "auto", "messages": [{"role": "user", "content": prompt}]}


HOSTILE = [
    b'{"query": "hi", "context": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    b'{"query": "hi", "max_tokens": 1' + b"0" * 400 + b"}",
    b'{"query": "\\u0000\\ud83d\\ude00", "query_type": "code"}',
    b'{"query": "hi", "query": "twice"}',
    b'{"model": "auto", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
    b'{"model": "auto", "messages": [{"role": "user", "content": null}]}',
    b'{"model": "auto", "messages": [{"role": "tool", "content": "x"}]}',
    b'{"model": "auto", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}',
]


@pytest.mark.parametrize("payload", HOSTILE)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_hostile_bodies_never_cause_a_5xx(
    kimi_api_service: Service, endpoint: str, payload: bytes
) -> None:
    with kimi_api_service.client() as client:
        response = client.post(endpoint, content=payload)
        alive = client.get("/healthz")

    assert response.status_code < 500, response.text
    assert alive.status_code == 200
