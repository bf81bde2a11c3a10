"""Streaming on `POST /api/ai/query`: `event: meta`, data chunks as they come, `event: done`.

Incremental delivery is shown without timing: while the client holds its first chunk, the mock
still counts the upstream request as in flight, so nothing waited for the whole answer.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import pytest

from tests.integration.service_support import Event, Service, sse_events, unique, wait_until

SLOW = "[[mock: tokens_per_second=20 tokens=30 reasoning_tokens=10]]"  # two seconds
THINKS_FOR_A_MINUTE = "[[mock: ttft_ms=60000]]"
ENDLESS = "[[mock: tokens_per_second=20 tokens=5000]]"  # minutes of output


def stream(service: Service, body: dict[str, Any]) -> tuple[int, str, list[Event]]:
    with service.client() as client:
        with client.stream("POST", "/api/ai/query", json={**body, "stream": True}) as response:
            response.read()
            events = list(sse_events(response.text.splitlines()))
            return response.status_code, response.headers["content-type"], events


def test_stream_has_meta_chunks_and_done(online_service: Service) -> None:
    prompt = unique("Why do cats purr?")
    status, content_type, events = stream(
        online_service, {"query": prompt, "query_type": "reasoning", "use_cache": False}
    )

    assert status == 200
    assert content_type.startswith("text/event-stream")
    meta, *chunks, done = events
    assert meta.event == "meta"
    head = json.loads(meta.data)
    assert head["selected_service"] == "kimi"
    assert head["query_type"] == "reasoning"
    assert head["model"].startswith("kimi-k2-thinking")
    assert head["offline"] is False
    assert len(chunks) > 5  # one per token, as the upstream sent them
    assert all(c.event is None for c in chunks)
    deltas = [json.loads(c.data) for c in chunks]
    assert done.event == "done"
    tail = json.loads(done.data)
    assert tail["finish_reason"] == "stop"
    assert tail["request_id"] == head["request_id"]
    assert tail["usage"]["completion_tokens"] > 0
    # The streamed text is the answer the same upstream gives without streaming.
    whole = online_service.query({"query": prompt, "query_type": "reasoning", "use_cache": False})
    assert "".join(d["delta"] for d in deltas) == whole.json()["answer"]
    assert "".join(d["reasoning"] for d in deltas) == whole.json()["reasoning_content"]


def test_stream_forwards_chunks_before_upstream_finishes(kimi_api_service: Service) -> None:
    mock = kimi_api_service.mock
    assert mock is not None
    body = {"query": unique(f"Why? {SLOW}"), "query_type": "reasoning", "stream": True}
    seen_in_flight: list[int] = []
    with kimi_api_service.client() as client:
        with client.stream("POST", "/api/ai/query", json=body) as response:
            events = sse_events(response.iter_lines())
            assert next(events).event == "meta"
            first = next(events)
            seen_in_flight.append(mock.stats()["in_flight"])
            rest = list(events)

    assert first.event is None
    assert json.loads(first.data)["reasoning"]
    # The upstream was still generating when the first chunk reached the client.
    assert seen_in_flight == [1]
    assert rest[-1].event == "done"
    assert mock.stats()["in_flight"] == 0


def test_client_disconnect_cancels_the_upstream_call(online_service: Service) -> None:
    mock = online_service.mock
    assert mock is not None
    disconnects = mock.stats()["client_disconnects"]
    body = {"query": unique(f"Tell me everything. {ENDLESS}"), "query_type": "code"}
    with online_service.client() as client:
        with client.stream("POST", "/api/ai/query", json={**body, "stream": True}) as response:
            events = sse_events(response.iter_lines())
            assert next(events).event == "meta"
            assert next(events).event is None
            assert mock.stats()["in_flight"] == 1
            assert online_service.metric("orchestrator_in_flight_requests") == 1
        # Leaving the block closes the connection mid-stream.

    wait_until(lambda: mock.stats()["in_flight"] == 0, "the upstream request to be cancelled")
    assert mock.stats()["client_disconnects"] == disconnects + 1
    wait_until(
        lambda: online_service.metric("orchestrator_in_flight_requests") == 0,
        "the in-flight gauge to return to 0",
    )


def test_stream_falls_back_before_the_first_chunk(kimi_api_service: Service) -> None:
    before = kimi_api_service.metric(
        "orchestrator_fallback_total", from_service="kimi", to_service="qwen"
    )
    prompt = unique("Why? [[mock: fault=http_503 fault_models=kimi]]")
    status, _, events = stream(kimi_api_service, {"query": prompt, "query_type": "reasoning"})

    assert status == 200
    head = json.loads(events[0].data)
    assert head["selected_service"] == "qwen"
    assert head["fallback"] == {
        "from_service": "kimi",
        "to_service": "qwen",
        "reason": "overloaded",
    }
    assert events[-1].event == "done"
    after = kimi_api_service.metric(
        "orchestrator_fallback_total", from_service="kimi", to_service="qwen"
    )
    assert after == before + 1


def test_stream_cut_mid_way_ends_with_an_error_event(online_service: Service) -> None:
    prompt = unique("Why? [[mock: fault=cut cut_after=4]]")
    status, _, events = stream(online_service, {"query": prompt, "query_type": "reasoning"})

    assert status == 200
    assert events[0].event == "meta"
    assert any(e.event is None for e in events)  # some text made it out
    last = events[-1]
    assert last.event == "error", events
    error = json.loads(last.data)["error"]
    assert error["code"] == "stream_interrupted"
    assert "kimi" in error["message"]
    assert not any(e.event == "done" for e in events)


def test_stream_that_fails_before_any_output_is_a_json_error(kimi_api_service: Service) -> None:
    prompt = unique("Why? [[mock: fault=http_500]]")
    with kimi_api_service.client() as client:
        response = client.post(
            "/api/ai/query", json={"query": prompt, "query_type": "reasoning", "stream": True}
        )

    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "all_backends_failed"
    assert [a["service"] for a in error["attempts"]] == ["kimi", "qwen"]


def test_cached_answer_streams_as_one_chunk(kimi_api_service: Service) -> None:
    body = {"query": unique("What is entropy?"), "query_type": "reasoning"}
    _, _, first = stream(kimi_api_service, body)
    _, _, second = stream(kimi_api_service, body)

    assert json.loads(first[0].data)["cached"] is False
    assert json.loads(second[0].data)["cached"] is True
    text = [json.loads(e.data)["delta"] for e in second if e.event is None]
    assert text == ["".join(json.loads(e.data)["delta"] for e in first if e.event is None)]
    assert second[-1].event == "done"


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "plain"])
@pytest.mark.parametrize("endpoint", ["/api/ai/query", "/v1/chat/completions"])
def test_client_leaving_before_the_first_token_cancels_the_upstream_call(
    kimi_api_service: Service, endpoint: str, stream: bool
) -> None:
    """Streamed or not, a client that gives up stops the (minutes-long) upstream call."""
    mock = kimi_api_service.mock
    assert mock is not None
    prompt = unique(f"Think hard. {THINKS_FOR_A_MINUTE}")
    if endpoint == "/api/ai/query":
        body: dict[str, Any] = {"query": prompt, "query_type": "reasoning", "stream": stream}
    else:
        body = {
            "model": "kimi",
            "stream": stream,
            "messages": [{"role": "user", "content": prompt}],
        }
    payload = json.dumps(body).encode()
    head = (
        f"POST {endpoint} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    gone_before = kimi_api_service.metric(
        "aiorch_http_requests_total", route=endpoint, status="499"
    )

    with socket.create_connection(("127.0.0.1", kimi_api_service.server.port)) as client:
        client.sendall(head.encode() + payload)
        wait_until(lambda: mock.stats()["in_flight"] == 1, "the upstream call to start")
    # The socket is closed while the model is still "thinking", before any byte of answer.

    wait_until(lambda: mock.stats()["in_flight"] == 0, "the upstream call to be cancelled")
    wait_until(
        lambda: kimi_api_service.metric("orchestrator_in_flight_requests") == 0,
        "the in-flight gauge to return to 0",
    )
    wait_until(
        lambda: (
            kimi_api_service.metric("aiorch_http_requests_total", route=endpoint, status="499")
            == gone_before + 1
        ),
        "the request to be recorded as closed by the client",
    )


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
def test_client_that_leaves_before_the_first_byte_cancels_the_upstream_call(
    online_service: Service, streamed: bool
) -> None:
    # The upstream takes five seconds to begin; the client gives up after one. aiorch starts
    # watching the connection a quarter of a second in, and must cancel its call then.
    mock = online_service.mock
    assert mock is not None
    disconnects = mock.stats()["client_disconnects"]
    body = {"query": unique("Slow. [[mock: latency_ms=5000]]"), "stream": streamed}
    with online_service.client() as client, pytest.raises(httpx.ReadTimeout):
        client.post("/api/ai/query", json=body, timeout=httpx.Timeout(5.0, read=1.0))

    wait_until(lambda: mock.stats()["in_flight"] == 0, "the upstream request to be cancelled")
    assert mock.stats()["client_disconnects"] == disconnects + 1
    wait_until(
        lambda: online_service.metric("orchestrator_in_flight_requests") == 0,
        "the in-flight gauge to return to 0",
    )
