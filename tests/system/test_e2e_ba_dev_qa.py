"""The guide's end-to-end check of the BA -> Dev -> QA flow, over HTTP, against the mock upstream.

`aiorch serve` talks to Kimi through the Moonshot-compatible API and to Qwen through Ollama's
API, both served by `aiorch mock-upstream` (see conftest.py for the scripted answers).
"""

from __future__ import annotations

from tests.integration.service_support import Service, unique
from tests.system.conftest import KIMI_MODEL, QWEN_MODEL, chat_calls, run_flow


def test_ba_dev_qa_runs_all_three_stages_and_shows_them_on_metrics(service: Service) -> None:
    assert service.mock is not None
    request = unique("Users can reset a forgotten password by e-mail")
    before = {
        agent: service.metric("ai_queries_total", agent_type=agent, status="success")
        for agent in ("ba", "dev", "qa")
    }

    response = run_flow(service, {"request": request})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert body["error"] is None
    assert body["offline"] is False
    assert body["verdict"] == "pass"
    ba, dev, qa = body["stages"]
    assert [s["stage"] for s in body["stages"]] == ["ba", "dev", "qa"]
    assert all(s["status"] == "completed" and s["error"] is None for s in body["stages"])
    # BA on the reasoning route (Kimi), Dev and QA on the code route (Qwen).
    assert (ba["selected_service"], ba["model"]) == ("kimi", KIMI_MODEL)
    assert (dev["selected_service"], dev["model"]) == ("qwen", QWEN_MODEL)
    assert (qa["selected_service"], qa["model"]) == ("qwen", QWEN_MODEL)
    assert all(s["usage"]["completion_tokens"] > 0 and s["duration_ms"] > 0 for s in body["stages"])
    assert not any(s["cached"] or s["fallback"] for s in body["stages"])
    # Each stage's artefact, parsed from JSON in a fence, Markdown, and JSON inside prose.
    (story,) = ba["artefact"]["stories"]
    assert story["id"] == "US-1"
    assert story["acceptance_criteria"][1] == "The link expires after one hour"
    (file,) = dev["artefact"]["files"]
    assert file["path"] == "reset.py"
    assert file["content"].startswith("def reset_link(email: str) -> str:")
    assert qa["artefact"]["verdict"] == "pass"
    assert [t["name"] for t in qa["artefact"]["test_cases"]] == ["link is e-mailed", "link expires"]
    # One upstream call per stage: BA to Kimi's OpenAI-style API, Dev and QA to Ollama.
    assert chat_calls(service.mock, request) == {"/v1/chat/completions": 1, "/api/chat": 2}
    # The guide's check: all three agents on /metrics by agent_type, and the flow itself.
    exposition = service.metrics()
    for agent, model in (("ba", KIMI_MODEL), ("dev", QWEN_MODEL), ("qa", QWEN_MODEL)):
        after = service.metric("ai_queries_total", agent_type=agent, status="success")
        assert after == before[agent] + 1, agent
        assert f'agent_type="{agent}",model="{model}",status="success"' in exposition
        assert (
            service.metric("ai_flow_stage_duration_seconds_count", flow="ba-dev-qa", stage=agent)
            >= 1
        )
    assert service.metric("ai_flow_runs_total", flow="ba-dev-qa", status="completed") >= 1


def test_the_ba_stage_falls_back_to_qwen_when_kimi_is_down(service: Service) -> None:
    # The directive travels in every stage's prompt; only calls to Kimi models get the 503s.
    request = unique("Users can export reports [[mock: fault=http_503 fault_models=kimi]]")
    fallbacks_before = service.metric(
        "orchestrator_fallback_total", from_service="kimi", to_service="qwen"
    )

    response = run_flow(service, {"request": request})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    ba = body["stages"][0]
    assert (ba["selected_service"], ba["model"]) == ("qwen", QWEN_MODEL)
    assert ba["fallback"]["from_service"] == "kimi"
    assert ba["fallback"]["to_service"] == "qwen"
    assert ba["fallback"]["reason"]
    kimi, qwen = ba["attempts"]
    assert (kimi["service"], kimi["model"]) == ("kimi", KIMI_MODEL)
    assert kimi["error_type"] is not None
    assert (qwen["service"], qwen["error_type"]) == ("qwen", None)
    assert ba["artefact"]["stories"][0]["id"] == "US-1"  # Qwen's stories went on to Dev
    assert all(s["fallback"] is None for s in body["stages"][1:])
    after = service.metric("orchestrator_fallback_total", from_service="kimi", to_service="qwen")
    assert after == fallbacks_before + 1


def test_a_failing_stage_is_reported_with_the_stages_that_completed(service: Service) -> None:
    request = unique("Users can delete their account REFUSE-REVIEW")
    failed_before = service.metric("ai_flow_runs_total", flow="ba-dev-qa", status="failed")

    response = run_flow(service, {"request": request})

    assert response.status_code == 502
    body = response.json()
    assert body["status"] == "failed"
    assert [(s["stage"], s["status"]) for s in body["stages"]] == [
        ("ba", "completed"),
        ("dev", "completed"),
        ("qa", "failed"),
    ]
    assert body["stages"][0]["artefact"]["stories"][0]["id"] == "US-1"
    assert body["stages"][1]["artefact"]["files"][0]["path"] == "reset.py"
    qa = body["stages"][2]
    assert qa["artefact"] is None
    assert qa["answer"] == "I would rather not say."  # the model's words are kept
    error = body["error"]
    assert error["type"] == "flow_error"
    assert error["stage"] == "qa"
    assert error["code"] == "parse_error"
    assert error["message"].startswith("stage qa (QA): could not parse the answer")
    assert body["verdict"] is None
    after = service.metric("ai_flow_runs_total", flow="ba-dev-qa", status="failed")
    assert after == failed_before + 1
