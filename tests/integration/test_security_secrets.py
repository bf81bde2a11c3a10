"""Passwords in upstream URLs never show: not in `/readyz`, the start-up banner, the log, or an
answer (issue 17, finding 3). The Redis URL is masked already (see test_security.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.reliability_support import (
    QWEN_MODEL,
    UPSTREAM_KEY,
    aiorch_service,
    mock_upstream,
)
from tests.integration.service_support import Mock, unique
from tests.integration.service_support import Service as Running

PASSWORD = "pw-in-url-5e1d2c"
USER = "user-in-url-77a0b1"
METRICS_TOKEN = "metrics-token-secrets-4b2e"


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mock]:
    with mock_upstream(tmp_path_factory.mktemp("secrets-mock")) as running:
        yield running


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, mock: Mock) -> Iterator[Running]:
    host = mock.url.removeprefix("http://")
    with aiorch_service(
        tmp_path_factory.mktemp("secrets"),
        None,
        name="secrets",
        args=("--log-level", "debug", "--access-log"),
        # Ollama with basic auth in its URL; Kimi with credentials and no key (sent as basic
        # auth, which the mock refuses: a failing backend whose error is shown too).
        QWEN_OLLAMA_URL=f"http://{USER}:{PASSWORD}@{host}",
        QWEN_OLLAMA_MODEL=QWEN_MODEL,
        KIMI_BASE_URL=f"http://{USER}:{PASSWORD}@{host}/v1?key={PASSWORD}",
        AIORCH_METRICS_TOKEN=METRICS_TOKEN,
    ) as running:
        yield running


def test_no_password_from_an_upstream_url_is_shown(service: Running) -> None:
    token = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    with service.client() as client:
        anonymous = client.get("/readyz")
        detailed = client.get("/readyz", headers=token)
        answer = client.post("/api/ai/query", json={"query": unique("hi"), "query_type": "code"})
        failed = client.post(
            "/api/ai/query", json={"query": unique("why?"), "query_type": "reasoning"}
        )
    assert anonymous.status_code in (200, 503)
    assert answer.status_code == 200  # through Ollama, basic auth and all
    backends = {b["service"]: b for b in detailed.json()["backends"]}
    assert backends["qwen"]["ready"] is True
    assert backends["qwen"]["url"].startswith("http://***@")
    banner = service.server.output().partition("Application startup")[0]
    assert "qwen: ollama backend" in banner
    places = {
        "banner": banner,
        "log": service.server.output(),
        "/readyz": anonymous.text + detailed.text,
        "answers": answer.text + failed.text,
    }
    for place, text in places.items():
        assert PASSWORD not in text, f"the password is in {place}"
        assert USER not in text, f"the user name is in {place}"
    assert UPSTREAM_KEY not in service.server.output()
