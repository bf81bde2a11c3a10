"""The flow routes inside the real app (Starlette's TestClient), over scripted backends."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from aiorch.errors import ConfigError
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.orchestrator import AIOrchestrator
from aiorch.server.app import create_app
from tests.unit.test_agents_flow import ScriptedBackend, scripted, settings_with_models


def refuse_review(prompt: str) -> str:
    return "No." if "Role: QA engineer" in prompt else scripted(prompt)


@contextlib.contextmanager
def app_client(
    answer: Callable[[str], str],
) -> Iterator[tuple[TestClient, dict[str, ScriptedBackend]]]:
    settings = settings_with_models()
    backends = {n: ScriptedBackend(s, answer) for n, s in settings.services.items()}
    orchestrator = AIOrchestrator(settings, backends=backends, metrics=Metrics(CollectorRegistry()))
    with TestClient(create_app(settings, orchestrator=orchestrator)) as client:
        yield client, backends


@pytest.fixture
def client() -> Iterator[TestClient]:
    """An app whose QA agent refuses to give a verdict: every full flow fails at QA."""
    with app_client(refuse_review) as (client, _):
        yield client


def events(text: str) -> list[tuple[str, dict[str, object]]]:
    found = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        found.append((lines["event"], json.loads(lines["data"])))
    return found


def test_the_flows_are_listed(client: TestClient) -> None:
    response = client.get("/api/ai/flows")
    assert response.status_code == 200
    assert response.json()["flows"] == [
        {"name": "ba-dev-qa", "stages": ["ba", "dev", "qa"]},
        {"name": "dev-qa", "stages": ["dev", "qa"]},
    ]


def test_a_failed_flow_answers_with_the_error_and_every_stage(client: TestClient) -> None:
    response = client.post("/api/ai/flows/ba-dev-qa", json={"request": "Reset passwords"})

    assert response.status_code == 502
    body = response.json()
    assert body["status"] == "failed"
    assert body["error"]["type"] == "flow_error"
    assert body["error"]["stage"] == "qa"
    assert body["error"]["code"] == "parse_error"
    assert [(s["stage"], s["status"]) for s in body["stages"]] == [
        ("ba", "completed"),
        ("dev", "completed"),
        ("qa", "failed"),
    ]
    assert body["stages"][0]["artefact"]["kind"] == "requirements"
    assert body["stages"][2]["answer"] == "No."
    assert response.headers["x-request-id"] == body["request_id"]


def test_a_completed_flow_is_200_and_every_stage_gets_the_context() -> None:
    with app_client(scripted) as (client, backends):
        response = client.post(
            "/api/ai/flows/dev-qa", json={"request": "Add search", "context": "Python 3.11"}
        )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "completed"
    assert body["error"] is None
    assert body["verdict"] == "fail"
    assert [s["artefact"]["kind"] for s in body["stages"]] == ["code", "review"]
    systems = [r.messages[0].content for r in backends["qwen"].requests]
    assert systems == ["Context:\nPython 3.11"] * 2


def test_streamed_flows_send_one_event_per_finished_stage(client: TestClient) -> None:
    response = client.post(
        "/api/ai/flows/ba-dev-qa", json={"request": "Reset passwords", "stream": True}
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    found = events(response.text)
    assert [name for name, _ in found] == ["start", "stage", "stage", "stage", "error"]
    assert found[0][1]["stages"] == ["ba", "dev", "qa"]
    assert [data["stage"] for _, data in found[1:4]] == ["ba", "dev", "qa"]
    final = found[-1][1]
    assert final["status"] == "failed"
    assert isinstance(final["error"], dict)
    assert final["error"]["stage"] == "qa"


@pytest.mark.parametrize(
    ("body", "status", "param", "says"),
    [
        (b"{not json", 400, None, "not valid JSON"),
        (b'{"request": "\xff\xfe"}', 400, None, "not UTF-8"),
        (b"", 400, None, "empty"),
        (b'{"stream": true}', 422, "request", "invalid request body"),
        (b'{"request": 42}', 422, "request", "invalid request body"),
        (b'{"request": "x", "use_cache": "no"}', 422, "use_cache", "invalid request body"),
        (b'{"request": "x", "steram": true}', 422, "steram", "invalid request body"),
        (b'{"request": "   "}', 422, "request", "must not be empty"),
    ],
)
def test_bad_bodies_say_what_is_wrong(
    client: TestClient, body: bytes, status: int, param: str | None, says: str
) -> None:
    """Our part of the error: its type, the field it names and our words (a library's own
    message may follow ours, and changes between its releases)."""
    response = client.post(
        "/api/ai/flows/ba-dev-qa", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["param"] == param
    assert says in error["message"]


def test_an_unknown_flow_is_404_and_lists_the_flows(client: TestClient) -> None:
    response = client.post("/api/ai/flows/qa-dev-ba", json={"request": "x"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "not_found"
    assert "ba-dev-qa, dev-qa" in error["message"]


def test_an_oversized_request_is_refused(client: TestClient) -> None:
    response = client.post("/api/ai/flows/ba-dev-qa", json={"request": "x" * 100_001})
    assert response.status_code == 422
    assert "limit" in response.json()["error"]["message"]


def test_a_bad_prompt_directory_stops_the_app_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AIORCH_PROMPTS_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="is not a directory"):
        create_app(settings_with_models())
