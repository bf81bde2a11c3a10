"""Where a request's time went: the `Server-Timing` phases and `aiorch_phase_duration_seconds`."""

from __future__ import annotations

import pytest

from tests.integration.service_support import Service, unique

PHASES = ("queue", "parse", "classify", "cache", "connect", "first_byte", "stream", "gateway")


def server_timing(header: str) -> dict[str, float]:
    """`name;dur=ms, ...` as seconds by name."""
    phases = {}
    for part in header.split(","):
        name, _, duration = part.strip().partition(";dur=")
        phases[name] = float(duration) / 1000
    return phases


@pytest.mark.parametrize("endpoint", ["/api/ai/query", "/v1/chat/completions"])
def test_the_phases_of_a_plain_answer_add_up_to_its_total(
    kimi_api_service: Service, endpoint: str
) -> None:
    text = unique("Why is the sky blue? [[mock: latency_ms=200]]")
    body = (
        {"query": text, "query_type": "reasoning"}
        if endpoint == "/api/ai/query"
        else {"model": "kimi", "messages": [{"role": "user", "content": text}]}
    )
    before = kimi_api_service.metric("aiorch_phase_duration_seconds_count", phase="total")
    with kimi_api_service.client() as client:
        response = client.post(endpoint, json=body)
    assert response.status_code == 200, response.text

    phases = server_timing(response.headers["server-timing"])
    print("\nServer-Timing:", {k: round(v * 1000, 3) for k, v in phases.items()})
    assert set(phases) <= {*PHASES, "total"}
    assert {"parse", "first_byte", "gateway", "total"} <= set(phases)
    named = sum(v for k, v in phases.items() if k != "total")
    assert abs(named - phases["total"]) <= 0.05 * phases["total"]
    assert phases["first_byte"] >= 0.2  # the mock's 200 ms are the upstream's, not ours
    assert phases["gateway"] < phases["first_byte"]
    after = kimi_api_service.metric("aiorch_phase_duration_seconds_count", phase="total")
    assert after == before + 1


def test_a_stream_says_its_phases_up_to_its_start_and_all_of_them_at_its_end(
    kimi_api_service: Service,
) -> None:
    text = unique("Why is the sky blue? [[mock: ttft_ms=150]]")
    with kimi_api_service.client() as client:
        with client.stream(
            "POST", "/api/ai/query", json={"query": text, "query_type": "reasoning", "stream": True}
        ) as response:
            head = server_timing(response.headers["server-timing"])
            body = response.read().decode()
    assert head["first_byte"] >= 0.15
    done = [line for line in body.split("\n\n") if line.startswith("event: done")]
    assert done, body[-300:]
    import json

    timings = json.loads(done[0].partition("data: ")[2])["timings_ms"]
    assert timings["stream"] > 0
    named = sum(v for k, v in timings.items() if k != "total")
    assert abs(named - timings["total"]) <= 0.05 * timings["total"]
