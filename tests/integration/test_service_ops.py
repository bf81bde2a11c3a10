"""Operations endpoints over HTTP: /healthz, /readyz per backend, /metrics, /openapi.json."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.service_support import Service, metric_value, unique


def test_healthz(kimi_api_service: Service) -> None:
    with kimi_api_service.client() as client:
        response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_lists_each_backend_through_the_mock(online_service: Service) -> None:
    with online_service.client() as client:
        response = client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["offline"] is False
    backends = {b["service"]: b for b in body["backends"]}
    assert set(backends) == {"kimi", "qwen"}
    assert online_service.mock is not None
    for backend in backends.values():
        assert backend["ready"] is True
        assert backend["url"].startswith(online_service.mock.url)
    assert backends["qwen"]["kind"] == "ollama"
    expected = "openai" if online_service.name == "kimi-api" else "ollama"
    assert backends["kimi"]["kind"] == expected


def test_readyz_is_degraded_when_one_backend_is_down(half_dead_service: Service) -> None:
    with half_dead_service.client() as client:
        response = client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    backends = {b["service"]: b for b in body["backends"]}
    assert backends["kimi"]["ready"] is False
    assert "connection" in backends["kimi"]["detail"]
    assert backends["qwen"]["ready"] is True


def test_readyz_does_not_hang_on_an_upstream_that_never_answers(
    black_hole_service: Service,
) -> None:
    with black_hole_service.client() as client:
        response = client.get("/readyz")  # the client's own timeout is 30 s

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    backends = {b["service"]: b for b in body["backends"]}
    assert backends["kimi"]["ready"] is False
    assert "timed out" in backends["kimi"]["detail"]


def test_readyz_is_503_when_every_backend_is_down(dead_service: Service) -> None:
    with dead_service.client() as client:
        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"


def test_metrics_carry_the_guide_names_after_traffic(kimi_api_service: Service) -> None:
    prompt = unique("Why is the sky blue? Explain step by step.")
    body = {"query": prompt, "query_type": "reasoning"}
    assert kimi_api_service.query(body).status_code == 200
    assert kimi_api_service.query(body).json()["cached"] is True

    with kimi_api_service.client() as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        metric_value(
            text, "orchestrator_queries_total", query_type="reasoning", selected_service="kimi"
        )
        >= 2
    )
    assert metric_value(text, "orchestrator_cache_hits_total") >= 1
    assert metric_value(text, "orchestrator_cache_misses_total") >= 1
    assert metric_value(text, "kimi_queries_total", mode="thinking", status="success") >= 1
    assert metric_value(text, "kimi_tokens_used_total", token_type="completion") > 0
    assert metric_value(text, "ai_queries_total", agent_type="direct", status="success") >= 1
    # The SLO thresholds are bucket boundaries, so the guide's p95 queries can use them.
    buckets = {
        s.labels["le"]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "kimi_response_duration_seconds_bucket"
    }
    assert {"15.0", "60.0"} <= buckets
    assert "ai_response_duration_seconds_bucket" in text


def test_metrics_in_openmetrics_on_request(kimi_api_service: Service) -> None:
    with kimi_api_service.client() as client:
        response = client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_raw_paths_never_become_label_values(kimi_api_service: Service) -> None:
    with kimi_api_service.client() as client:
        client.get("/zz-attacker-controlled-path")
        client.request("PROPFIND", "/api/ai/query")
        text = client.get("/metrics").text

    assert "zz-attacker-controlled-path" not in text
    assert "PROPFIND" not in text
    assert metric_value(text, "aiorch_http_requests_total", route="other", status="404") >= 1
    assert metric_value(text, "aiorch_http_requests_total", method="other") >= 1


def test_openapi_document_is_served(kimi_api_service: Service) -> None:
    with kimi_api_service.client() as client:
        response = client.get("/openapi.json")

    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    for path in ("/api/ai/query", "/v1/chat/completions", "/v1/models", "/readyz"):
        assert path in document["paths"], path
    query = document["paths"]["/api/ai/query"]["post"]
    assert {"200", "400", "413", "422", "502", "503", "504"} <= set(query["responses"])
