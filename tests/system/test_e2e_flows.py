"""Flows end to end over HTTP: other flows, the cache, streamed stage events, upstream failures
inside a stage, and `aiorch flow --url` against the running service."""

from __future__ import annotations

import json
import subprocess

import httpx

from tests.integration.service_support import Service, sse_events, unique, wait_until
from tests.support.procs import AIORCH, REPO
from tests.system.conftest import QWEN_MODEL, TIMEOUT, chat_calls, run_flow, stream_flow


def test_flows_are_listed_and_an_unknown_one_is_404(service: Service) -> None:
    with service.client() as client:
        listed = client.get("/api/ai/flows")
        missing = client.post("/api/ai/flows/ba-qa", json={"request": "x"})

    assert listed.status_code == 200
    assert {"name": "dev-qa", "stages": ["dev", "qa"]} in listed.json()["flows"]
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert "configured flows: ba-dev-qa, dev-qa" in missing.json()["error"]["message"]


def test_the_dev_qa_flow_skips_the_analyst(service: Service) -> None:
    assert service.mock is not None
    request = unique("Add a CSV export of the orders table")

    response = run_flow(service, {"request": request}, flow="dev-qa")

    assert response.status_code == 200, response.text
    body = response.json()
    assert [(s["stage"], s["model"]) for s in body["stages"]] == [
        ("dev", QWEN_MODEL),
        ("qa", QWEN_MODEL),
    ]
    assert body["verdict"] == "pass"
    assert chat_calls(service.mock, request) == {"/api/chat": 2}


def test_a_repeated_flow_is_answered_from_the_cache(service: Service) -> None:
    assert service.mock is not None
    body = {"request": unique("Users can change their e-mail address")}
    first = run_flow(service, body).json()
    upstream_before = service.mock.stats()["requests_total"]
    hits_before = service.metric("orchestrator_cache_hits_total")

    second = run_flow(service, body).json()

    assert [s["cached"] for s in first["stages"]] == [False, False, False]
    assert [s["cached"] for s in second["stages"]] == [True, True, True]
    assert second["status"] == "completed"
    assert [s["artefact"] for s in second["stages"]] == [s["artefact"] for s in first["stages"]]
    assert service.mock.stats()["requests_total"] == upstream_before  # no new upstream call
    assert service.metric("orchestrator_cache_hits_total") == hits_before + 3
    # Opting out goes upstream again.
    third = run_flow(service, {**body, "use_cache": False}).json()
    assert not any(s["cached"] for s in third["stages"])
    assert service.mock.stats()["requests_total"] == upstream_before + 3


def test_a_stage_whose_answer_could_not_be_parsed_is_asked_again(service: Service) -> None:
    """The QA answer is prose without a verdict: the flow fails at QA. Run again, the stages
    that parsed come from the cache and QA goes to the model again: a useless answer is never
    cached, or the same flow would replay the failure for the cache's lifetime."""
    assert service.mock is not None
    body = {"request": unique("Users can export their data REFUSE-REVIEW")}
    first = run_flow(service, body)
    upstream_before = service.mock.stats()["requests_total"]

    second = run_flow(service, body)

    assert first.status_code == second.status_code == 502
    assert [s["status"] for s in second.json()["stages"]] == ["completed", "completed", "failed"]
    assert [s["cached"] for s in first.json()["stages"]] == [False, False, False]
    assert [s["cached"] for s in second.json()["stages"]] == [True, True, False]
    assert service.mock.stats()["requests_total"] == upstream_before + 1  # only QA, again


def test_streamed_flows_send_an_event_per_finished_stage(service: Service) -> None:
    events = stream_flow(service, {"request": unique("Users can upload an avatar")})

    assert [name for name, _ in events] == ["start", "stage", "stage", "stage", "done"]
    start = events[0][1]
    assert start["flow"] == "ba-dev-qa"
    assert start["stages"] == ["ba", "dev", "qa"]
    stages = [data for name, data in events if name == "stage"]
    assert [(s["stage"], s["status"]) for s in stages] == [
        ("ba", "completed"),
        ("dev", "completed"),
        ("qa", "completed"),
    ]
    assert stages[0]["artefact"]["kind"] == "requirements"
    done = events[-1][1]
    assert done["status"] == "completed"
    assert done["verdict"] == "pass"
    assert done["request_id"] == start["request_id"]
    assert [s["stage"] for s in done["stages"]] == ["ba", "dev", "qa"]


def test_stage_events_arrive_while_the_flow_runs_and_leaving_cancels_it(service: Service) -> None:
    assert service.mock is not None
    # QA's upstream call hangs (see HOLD-QA in conftest.py): the flow cannot finish by itself.
    # Without the cache nobody else can be waiting for the same answer, so the orchestrator
    # does not keep the abandoned call going for them.
    body = {"request": unique("Users can pin messages HOLD-QA"), "use_cache": False}
    cancelled_before = service.metric("ai_flow_runs_total", flow="ba-dev-qa", status="cancelled")
    disconnects_before = service.mock.stats()["client_disconnects"]
    seen: list[str] = []
    with (
        httpx.Client(base_url=service.url, timeout=TIMEOUT) as client,
        client.stream("POST", "/api/ai/flows/ba-dev-qa", json={**body, "stream": True}) as response,
    ):
        for event in sse_events(response.iter_lines()):
            seen.append(event.event or "")
            if event.event == "stage" and json.loads(event.data)["stage"] == "dev":
                break  # BA and Dev are done and delivered; QA is still waiting upstream

    assert seen == ["start", "stage", "stage"]
    # Going away cancels the flow, and with it the hanging upstream call.
    wait_until(
        lambda: (
            service.metric("ai_flow_runs_total", flow="ba-dev-qa", status="cancelled")
            == cancelled_before + 1
        ),
        "the flow to be recorded as cancelled",
    )
    wait_until(
        lambda: (
            service.mock is not None
            and service.mock.stats()["client_disconnects"] > disconnects_before
        ),
        "the mock to see the QA call abandoned",
    )


def test_a_stage_whose_upstream_calls_all_fail_names_the_stage(service: Service) -> None:
    # The BA's stories carry a fault directive into the Dev prompt (BREAK-DEV in conftest.py).
    response = run_flow(service, {"request": unique("Users can mute a thread BREAK-DEV")})

    assert response.status_code == 502
    body = response.json()
    assert [(s["stage"], s["status"]) for s in body["stages"]] == [
        ("ba", "completed"),
        ("dev", "failed"),
    ]
    error = body["error"]
    assert error["stage"] == "dev"
    assert error["code"] == "all_backends_failed"
    assert "stage dev (developer) failed" in error["message"]
    assert [a["service"] for a in error["attempts"]] == ["qwen", "kimi"]
    assert all(a["error_type"] == "upstream_error" for a in error["attempts"])


def test_the_cli_runs_a_flow_on_the_service(service: Service) -> None:
    ok = subprocess.run(
        [*AIORCH, "flow", unique("Users can rename a project"), "--url", service.url, "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip
    failed = subprocess.run(
        [*AIORCH, "flow", unique("Users can archive a chat REFUSE-REVIEW"), "--url", service.url],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip

    assert ok.returncode == 0, ok.stderr
    result = json.loads(ok.stdout)
    assert result["status"] == "completed"
    assert [s["stage"] for s in result["stages"]] == ["ba", "dev", "qa"]
    assert "flow ba-dev-qa: ba -> dev -> qa" in ok.stderr
    assert ok.stderr.count("done ") == 3
    assert failed.returncode == 1
    assert "FAIL qa failed" in failed.stderr
    assert "# Flow ba-dev-qa: failed" in failed.stdout
    assert "I would rather not say." in failed.stdout  # the unparseable answer is shown
