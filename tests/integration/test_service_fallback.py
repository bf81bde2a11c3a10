"""Fallback from Kimi to Qwen: recorded in the answer, in the attempts and on /metrics."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.service_support import Service, unique

FALLBACK = "orchestrator_fallback_total"


def kimi_calls(service: Service, prompt: str) -> list[dict[str, Any]]:
    assert service.mock is not None
    return [
        r for r in service.mock.requests_mentioning(prompt) if r["body"]["model"].startswith("kimi")
    ]


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("http_500", "upstream_error"),
        ("http_503", "overloaded"),
        ("quota", "quota_exceeded"),
        ("malformed", "bad_response"),
        ("reset", "connection_error"),
    ],
)
def test_kimi_failure_falls_back_to_qwen(
    kimi_api_service: Service, fault: str, reason: str
) -> None:
    labels = {"from_service": "kimi", "to_service": "qwen", "reason": reason}
    before = kimi_api_service.metric(FALLBACK, **labels)
    prompt = unique(f"Why is the sky blue? [[mock: fault={fault} fault_models=kimi]]")

    response = kimi_api_service.query({"query": prompt, "query_type": "reasoning"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["selected_service"] == "qwen"
    assert body["model"] == "qwen2.5-coder:7b"
    assert body["fallback"] == {"from_service": "kimi", "to_service": "qwen", "reason": reason}
    failed, answered = body["attempts"]
    assert (failed["service"], failed["error_type"]) == ("kimi", reason)
    assert "kimi" in failed["message"]
    assert (answered["service"], answered["error_type"]) == ("qwen", None)
    assert kimi_api_service.metric(FALLBACK, **labels) == before + 1


def test_fallback_shows_in_the_openai_response(kimi_api_service: Service) -> None:
    prompt = unique(
        "Why is the sky blue? Explain step by step. [[mock: fault=http_502 fault_models=kimi]]"
    )
    with kimi_api_service.client() as client:
        response = client.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": [{"role": "user", "content": prompt}]},
        )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "qwen2.5-coder:7b"
    assert body["aiorch"]["fallback"]["from_service"] == "kimi"


def test_a_named_model_falls_back_along_its_own_chain(kimi_api_service: Service) -> None:
    prompt = unique("Why? [[mock: fault=http_500 fault_models=kimi]]")
    response = kimi_api_service.query({"query": prompt, "model": "kimi"})

    assert response.status_code == 200, response.text
    assert response.json()["selected_service"] == "qwen"
    assert response.json()["fallback"]["from_service"] == "kimi"


def test_a_named_model_stays_alone_when_the_client_asks(kimi_api_service: Service) -> None:
    prompt = unique("Why? [[mock: fault=http_500 fault_models=kimi]]")
    with kimi_api_service.client() as client:
        response = client.post(
            "/api/ai/query",
            json={"query": prompt, "model": "kimi"},
            headers={"X-Aiorch-Fallback": "off"},
        )

    assert response.status_code == 502
    attempts = response.json()["error"]["attempts"]
    assert [a["service"] for a in attempts] == ["kimi"]


def test_refused_connection_falls_back_and_is_counted(half_dead_service: Service) -> None:
    labels = {"from_service": "kimi", "to_service": "qwen", "reason": "connection_error"}
    before = half_dead_service.metric(FALLBACK, **labels)

    response = half_dead_service.query({"query": unique("Why?"), "query_type": "reasoning"})

    assert response.status_code == 200, response.text
    assert response.json()["fallback"]["reason"] == "connection_error"
    assert half_dead_service.metric(FALLBACK, **labels) == before + 1
    assert (
        half_dead_service.metric("ai_errors_total", service="kimi", error_type="connection_error")
        >= 1
    )


def test_quota_is_not_retried_but_overload_is(fresh_service: Service) -> None:
    # Moonshot's 429 exceeded_current_quota_error: retrying cannot help, fall back at once.
    quota = unique("Why? [[mock: fault=quota fault_models=kimi]]")
    response = fresh_service.query({"query": quota, "query_type": "reasoning"})
    assert response.json()["fallback"]["reason"] == "quota_exceeded"
    assert len(kimi_calls(fresh_service, quota)) == 1

    # 429 engine_overloaded_error, once: the retry reaches Kimi, and no fallback is needed.
    busy = unique("Why? [[mock: fault=overloaded fault_models=kimi fault_limit=1]]")
    response = fresh_service.query({"query": busy, "query_type": "reasoning"})
    assert response.status_code == 200, response.text
    assert response.json()["selected_service"] == "kimi"
    assert response.json()["fallback"] is None
    assert len(kimi_calls(fresh_service, busy)) == 2
    assert (
        fresh_service.metric("orchestrator_retries_total", service="kimi", reason="overloaded") == 1
    )


def test_a_hung_upstream_falls_back_on_its_deadline(black_hole_service: Service) -> None:
    labels = {"from_service": "kimi", "to_service": "qwen", "reason": "timeout"}
    before = black_hole_service.metric(FALLBACK, **labels)

    response = black_hole_service.query({"query": unique("Why?"), "query_type": "reasoning"})

    assert response.status_code == 200, response.text
    assert response.json()["fallback"] == {**labels}
    assert black_hole_service.metric(FALLBACK, **labels) == before + 1
