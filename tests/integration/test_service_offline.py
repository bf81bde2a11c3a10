"""Offline mode: no keys, no URLs; the service still starts and answers, labelled offline."""

from __future__ import annotations

import json

import openai

from tests.integration.service_support import Service, sse_events, unique


def test_offline_query_answers_and_says_it_is_offline(offline_service: Service) -> None:
    response = offline_service.query({"query": unique("Why is the sky blue?")})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["offline"] is True
    assert body["answer"].startswith("[offline: no model is configured for ")
    assert body["model"] in {"offline-kimi", "offline-qwen"}
    assert body["selected_service"] in {"kimi", "qwen", "multi"}
    assert body["cached"] is False
    assert body["fallback"] is None


def test_offline_multi_service_answer_is_offline_too(offline_service: Service) -> None:
    response = offline_service.query({"query": unique("hmm"), "query_type": "unknown"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["selected_service"] == "multi"
    assert body["offline"] is True
    assert set(body["answers"]) == {"kimi", "qwen"}


def test_offline_stream_labels_meta_as_offline(offline_service: Service) -> None:
    body = {"query": unique("write a python function"), "stream": True}
    with offline_service.client() as client:
        with client.stream("POST", "/api/ai/query", json=body) as response:
            assert response.status_code == 200
            events = list(sse_events(response.iter_lines()))

    assert events[0].event == "meta"
    assert '"offline":true' in events[0].data
    text = "".join(json.loads(e.data)["delta"] for e in events if e.event is None)
    assert text.startswith("[offline: no model is configured for ")
    assert events[-1].event == "done"


def test_readyz_says_offline(offline_service: Service) -> None:
    with offline_service.client() as client:
        response = client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "offline"
    assert body["offline"] is True
    assert {b["service"]: b["kind"] for b in body["backends"]} == {
        "kimi": "offline",
        "qwen": "offline",
    }
    assert all("offline" in b["detail"] for b in body["backends"])


def test_openai_sdk_works_offline(offline_service: Service) -> None:
    client = openai.OpenAI(api_key="unused", base_url=f"{offline_service.url}/v1", max_retries=0)

    completion = client.chat.completions.create(
        model="qwen", messages=[{"role": "user", "content": unique("hello")}]
    )

    assert completion.model == "offline-qwen"
    assert completion.choices[0].message.content is not None
    assert completion.choices[0].message.content.startswith("[offline")
    assert completion.model_extra is not None
    assert completion.model_extra["aiorch"]["offline"] is True
    models = {m.id for m in client.models.list()}
    assert {"auto", "kimi", "qwen", "offline-kimi", "offline-qwen"} <= models
    client.close()


def test_serve_warns_loudly_when_offline(offline_service: Service) -> None:
    log = offline_service.server.output()
    assert "OFFLINE MODE" in log
    assert "kimi: offline backend" in log
