"""Keys and the metrics token are compared as UTF-8 bytes (issue 17, finding 9), in the real app
driven by Starlette's TestClient (offline: no upstream is needed to check a key)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from aiorch.config import load_settings
from aiorch.server.app import create_app

KEY = "sk-cl\u00e9-\u043a\u043b\u044e\u0447"
TOKEN = "m\u00e9triques-\u0442\u043e\u043a\u0435\u043d"


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = load_settings({"AIORCH_API_KEYS": KEY, "AIORCH_METRICS_TOKEN": TOKEN})
    with TestClient(create_app(settings)) as client:
        yield client


def test_a_non_ascii_metrics_token_is_accepted(client: TestClient) -> None:
    token = b"Bearer " + TOKEN.encode()

    assert client.get("/metrics", headers={"Authorization": token}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": b"Bearer m\xe9"}).status_code == 401


def test_a_non_ascii_api_key_is_accepted(client: TestClient) -> None:
    assert client.get("/v1/models", headers={"X-API-Key": KEY.encode()}).status_code == 200
    assert client.get("/v1/models", headers={"X-API-Key": b"\xff"}).status_code == 401
