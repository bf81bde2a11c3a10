"""One mock upstream and one `aiorch serve` for every end-to-end flow test of the session.

The mock answers each agent's prompt from a rules file: the BA gets user stories as JSON in a
fence with a trailing comma, the developer answers in Markdown (a file label and a code block),
QA gives its verdict as JSON inside prose, as real models do. A few marker words in a test's
feature request pick other scripts, so one mock serves every scenario without shared state:

- REFUSE-REVIEW: QA answers with prose and no verdict (a stage whose output cannot be parsed);
- BREAK-DEV: the BA's stories carry a `[[mock: fault=http_500]]` directive, which the mock obeys
  wherever it finds it in the last user message, so only the Dev stage's calls (whose prompt
  holds the stories) fail, on both backends;
- HOLD-QA: the developer's code carries `[[mock: fault=hang]]`, so the QA stage's call hangs
  until the client goes away.

Tests make their requests unique (`unique()`), so the cache and per-prompt fault counters of
one test never touch another.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.service_support import Mock, Service, service_env, sse_events
from tests.support.procs import AIORCH, free_port, run_server

KIMI_MODEL = "kimi-k2-thinking"
QWEN_MODEL = "qwen2.5-coder:7b"
TIMEOUT = httpx.Timeout(30.0, connect=5.0)

STORIES = {
    "stories": [
        {
            "id": "US-1",
            "title": "Reset a forgotten password",
            "description": "As a user, I want a reset link by e-mail, so that I can log in again",
            "acceptance_criteria": [
                "Given a registered e-mail, when I ask for a reset, then a link is e-mailed",
                "The link expires after one hour",
            ],
        }
    ]
}
BA_ANSWER = (
    "Here are the user stories.\n\n```json\n" + json.dumps(STORIES, indent=2)[:-2] + ",\n}\n```"
)
BREAKING_STORIES = {
    "stories": [
        {
            "title": "Anything",
            "description": "As a user, I want something",
            "acceptance_criteria": ["[[mock: fault=http_500]] it works"],
        }
    ]
}
CODE = "def reset_link(email: str) -> str:\n    return f'https://example.com/reset?u={email}'\n"
DEV_ANSWER = f"Here is the implementation.\n\nFile: `reset.py`\n```python\n{CODE}```\n"
HOLDING_DEV_ANSWER = f"File: `reset.py`\n```python\n# [[mock: fault=hang]]\n{CODE}```\n"
REVIEW = {
    "test_cases": [
        {"name": "link is e-mailed", "criterion": "US-1", "status": "pass"},
        {"name": "link expires", "criterion": "US-1", "status": "pass"},
    ],
    "verdict": "pass",
    "reasons": ["Both acceptance criteria are met."],
}
QA_ANSWER = f"My review follows. {json.dumps(REVIEW)} Let me know if you need more."

RULES = [
    # Most specific first: the mock uses the first rule that matches.
    {"match": r"(?s)Role: QA engineer.*REFUSE-REVIEW", "content": "I would rather not say."},
    {"match": r"(?s)Role: software developer.*HOLD-QA", "content": HOLDING_DEV_ANSWER},
    {
        "match": r"(?s)Role: business analyst.*BREAK-DEV",
        "content": f"```json\n{json.dumps(BREAKING_STORIES)}\n```",
    },
    {"match": "Role: business analyst", "content": BA_ANSWER},
    {"match": "Role: software developer", "content": DEV_ANSWER},
    {"match": "Role: QA engineer", "content": QA_ANSWER},
]


@pytest.fixture(scope="session")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mock]:
    tmp = tmp_path_factory.mktemp("flows-mock")
    rules = tmp / "responses.json"
    rules.write_text(json.dumps(RULES), encoding="utf-8")
    port = free_port()
    argv = [*AIORCH, "mock-upstream", "--port", str(port), "--responses", str(rules)]
    with run_server(argv, port=port, ready_path="/healthz", tmp_path=tmp, name="mock") as server:
        yield Mock(server)


@pytest.fixture(scope="session")
def service(mock: Mock, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("flows-service")
    env = service_env(
        KIMI_BASE_URL=f"{mock.url}/v1",
        KIMI_API_KEY="test",
        QWEN_OLLAMA_URL=mock.url,
        AIORCH_PROMPTS_DIR="",
    )
    port = free_port()
    argv = [*AIORCH, "serve", "--port", str(port)]
    with run_server(
        argv, port=port, ready_path="/healthz", tmp_path=tmp, env=env, name="aiorch"
    ) as server:
        yield Service(server, mock, "flows")


def run_flow(service: Service, body: dict[str, Any], flow: str = "ba-dev-qa") -> httpx.Response:
    with service.client() as client:
        return client.post(f"/api/ai/flows/{flow}", json=body)


def stream_flow(
    service: Service, body: dict[str, Any], flow: str = "ba-dev-qa"
) -> list[tuple[str | None, Any]]:
    """Every SSE event of a streamed flow, data decoded."""
    with (
        httpx.Client(base_url=service.url, timeout=TIMEOUT) as client,
        client.stream("POST", f"/api/ai/flows/{flow}", json={**body, "stream": True}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return [(e.event, json.loads(e.data)) for e in sse_events(response.iter_lines())]


def chat_calls(mock: Mock, marker: str) -> dict[str, int]:
    """The mock's chat requests about one test's request, by endpoint."""
    calls: dict[str, int] = {}
    for item in mock.requests_mentioning(marker):
        calls[item["endpoint"]] = calls.get(item["endpoint"], 0) + 1
    return calls
