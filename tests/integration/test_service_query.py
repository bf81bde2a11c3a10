"""`POST /api/ai/query` over raw HTTP, as `curl` would send it, with the mock as the upstream."""

from __future__ import annotations

import asyncio
import re

import httpx

from tests.integration.service_support import Service, unique

FIELDS = {
    "answer": str,
    "query_type": str,
    "selected_service": str,
    "model": str,
    "cached": bool,
    "usage": dict,
    "latency_ms": float,
    "request_id": str,
}


def test_answer_has_every_documented_field(online_service: Service) -> None:
    # Exactly what `curl -d '{"query": ...}'` sends: no Content-Type header at all.
    with online_service.client() as client:
        response = client.post(
            "/api/ai/query",
            content=b'{"query": "%s"}' % unique("Why is the sky blue?").encode(),
        )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    for field, kind in FIELDS.items():
        assert isinstance(body[field], kind), (field, body)
    assert "fallback" in body
    assert body["fallback"] is None
    assert body["offline"] is False
    assert body["answer"].strip()
    assert body["usage"]["prompt_tokens"] > 0
    assert body["usage"]["completion_tokens"] > 0
    assert body["request_id"] == response.headers["x-request-id"]


def test_reasoning_goes_to_kimi_and_returns_its_thinking(online_service: Service) -> None:
    prompt = unique("Think it through: why do the seasons change?")
    response = online_service.query({"query": prompt, "query_type": "reasoning"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query_type"] == "reasoning"
    assert body["selected_service"] == "kimi"
    assert body["model"].startswith("kimi-k2-thinking")
    # The mock's thinking model thinks; the text comes back beside the answer.
    assert body["reasoning_content"]
    assert body["reasoning_content"] not in body["answer"]
    # The upstream really was called, with that prompt and that model.
    assert online_service.mock is not None
    (call,) = online_service.mock.requests_mentioning(prompt)
    assert call["body"]["model"] == body["model"]


def test_code_goes_to_qwen(online_service: Service) -> None:
    response = online_service.query(
        {"query": unique("Write a python function that reverses a list"), "query_type": "code"}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["selected_service"] == "qwen"
    assert body["model"] == "qwen2.5-coder:7b"


def test_query_type_is_classified_when_not_given(kimi_api_service: Service) -> None:
    response = kimi_api_service.query(
        {"query": unique("Write a Python function that reverses a list")}
    )

    assert response.status_code == 200, response.text
    assert response.json()["query_type"] == "code"
    assert response.json()["selected_service"] == "qwen"


def test_second_identical_query_is_cached(kimi_api_service: Service) -> None:
    body = {"query": unique("Explain the CAP theorem"), "query_type": "reasoning"}

    first = kimi_api_service.query(body).json()
    second = kimi_api_service.query(body).json()
    uncached = kimi_api_service.query({**body, "use_cache": False}).json()

    assert (first["cached"], second["cached"], uncached["cached"]) == (False, True, False)
    assert second["answer"] == first["answer"]
    assert second["request_id"] != first["request_id"]
    assert kimi_api_service.mock is not None
    assert len(kimi_api_service.mock.requests_mentioning(body["query"])) == 2


def test_unknown_query_asks_both_models(online_service: Service) -> None:
    prompt = unique("hmm")
    response = online_service.query({"query": prompt, "query_type": "unknown"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["selected_service"] == "multi"
    assert set(body["answers"]) == {"kimi", "qwen"}
    assert online_service.mock is not None
    models = {r["body"]["model"] for r in online_service.mock.requests_mentioning(prompt)}
    assert len(models) == 2


def test_model_pins_one_service(kimi_api_service: Service) -> None:
    # A reasoning query, but the caller asked for Qwen by its model id.
    response = kimi_api_service.query(
        {"query": unique("Why?"), "query_type": "reasoning", "model": "qwen2.5-coder:7b"}
    )

    assert response.status_code == 200, response.text
    assert response.json()["selected_service"] == "qwen"


def test_parameters_reach_the_upstream(kimi_api_service: Service) -> None:
    prompt = unique("Summarise the plot of Hamlet")
    response = kimi_api_service.query(
        {
            "query": prompt,
            "query_type": "reasoning",
            "context": "The reader is twelve years old.",
            "max_tokens": 77,
            "temperature": 0.3,
        }
    )

    assert response.status_code == 200, response.text
    assert kimi_api_service.mock is not None
    (call,) = kimi_api_service.mock.requests_mentioning(prompt)
    sent = call["body"]
    assert sent["max_tokens"] == 77
    assert sent["temperature"] == 0.3
    assert sent["messages"][0] == {
        "role": "system",
        "content": "Context:\nThe reader is twelve years old.",
    }
    assert sent["messages"][-1] == {"role": "user", "content": prompt}
    # That the call was answered at all shows KIMI_API_KEY went along as the Bearer token:
    # this mock runs with --api-key and answers 401 without it.


def test_request_id_round_trip(kimi_api_service: Service) -> None:
    with kimi_api_service.client() as client:
        given = client.post(
            "/api/ai/query",
            json={"query": unique("hello")},
            headers={"X-Request-ID": "trace-42.abc:def"},
        )
        hostile = client.post(
            "/api/ai/query",
            json={"query": unique("hello")},
            headers={"X-Request-ID": "no spaces or \u00e9 allowed".encode("latin-1")},
        )
        error = client.post(
            "/api/ai/query", content=b"{", headers={"X-Request-ID": "broken-body-1"}
        )

    assert given.headers["x-request-id"] == "trace-42.abc:def"
    assert given.json()["request_id"] == "trace-42.abc:def"
    # An unusable id is replaced by a fresh one, never echoed.
    assert re.fullmatch(r"[0-9a-f]{16}", hostile.headers["x-request-id"])
    assert hostile.json()["request_id"] == hostile.headers["x-request-id"]
    # Errors carry the id too, so a failed call can be found in the logs.
    assert error.status_code == 400
    assert error.headers["x-request-id"] == "broken-body-1"


def test_request_id_reaches_responses_of_every_endpoint(kimi_api_service: Service) -> None:
    with kimi_api_service.client(headers={"X-Request-ID": "rid-7"}) as client:
        for method, path in (
            ("GET", "/healthz"),
            ("GET", "/readyz"),
            ("GET", "/metrics"),
            ("GET", "/v1/models"),
            ("GET", "/nowhere"),
        ):
            response = client.request(method, path)
            assert response.headers["x-request-id"] == "rid-7", path


def test_keep_alive_connection_serves_many_queries(kimi_api_service: Service) -> None:
    transport = httpx.HTTPTransport(retries=0)
    with httpx.Client(base_url=kimi_api_service.url, transport=transport, timeout=30.0) as client:
        ids = {
            client.post("/api/ai/query", json={"query": unique("ping")}).json()["request_id"]
            for _ in range(5)
        }
    assert len(ids) == 5


async def test_identical_concurrent_queries_share_one_upstream_call(
    kimi_api_service: Service,
) -> None:
    mock = kimi_api_service.mock
    assert mock is not None
    body = {"query": unique("Why? [[mock: latency_ms=500]]"), "query_type": "reasoning"}
    coalesced = kimi_api_service.metric("orchestrator_coalesced_total")

    async with httpx.AsyncClient(base_url=kimi_api_service.url, timeout=30.0) as client:
        answers = await asyncio.gather(*(client.post("/api/ai/query", json=body) for _ in range(3)))

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert len({a.json()["answer"] for a in answers}) == 1
    assert len({a.json()["request_id"] for a in answers}) == 3
    assert len(mock.requests_mentioning(body["query"])) == 1
    assert kimi_api_service.metric("orchestrator_coalesced_total") == coalesced + 2


def test_stream_responses_carry_the_request_id(kimi_api_service: Service) -> None:
    body = {"query": unique("Why?"), "query_type": "reasoning", "stream": True}
    with kimi_api_service.client() as client:
        with client.stream(
            "POST", "/api/ai/query", json=body, headers={"X-Request-ID": "stream-rid-3"}
        ) as response:
            text = response.read().decode()

    assert response.headers["x-request-id"] == "stream-rid-3"
    assert '"request_id":"stream-rid-3"' in text
