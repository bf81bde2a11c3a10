"""Helpers for the service's integration tests: the mock's control surface, SSE and /metrics.

Everything here talks real HTTP to real processes; nothing reaches into either server.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from aiorch.config import ENV_KEYS
from tests.support.procs import Server

UPSTREAM_KEY = "sk-mock-upstream"  # the mock runs with --api-key, so KIMI_API_KEY must be sent

# Generous: only there so that a broken build fails instead of hanging the suite.
HTTP_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
WAIT_TIMEOUT = 20.0

# Every variable the service reads, blanked so that the developer's shell cannot leak a real key
# or URL into a test (the settings loader ignores empty values).
BLANK_ENV: dict[str, str] = {
    **dict.fromkeys(ENV_KEYS, ""),
    "AIORCH_API_KEYS": "",
    "AIORCH_TRUSTED_PROXIES": "",
    "AIORCH_CONFIG": "",
    "AIORCH_WORKERS": "",
}


def service_env(**values: str) -> dict[str, str]:
    return {**BLANK_ENV, **values}


def unique(text: str) -> str:
    """A prompt no other test sends: keeps answers out of the cache and faults per test."""
    return f"{text} (case {uuid.uuid4().hex[:10]})"


@dataclass
class Mock:
    """The mock upstream as the tests see it: a URL and its `/_mock/*` control endpoints."""

    server: Server

    @property
    def url(self) -> str:
        return self.server.url

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/_mock/stats", timeout=HTTP_TIMEOUT)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def requests(self) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/_mock/requests", timeout=HTTP_TIMEOUT)
        response.raise_for_status()
        items: list[dict[str, Any]] = response.json()["requests"]
        return items

    def requests_mentioning(self, marker: str) -> list[dict[str, Any]]:
        """Chat requests whose messages contain `marker` (a unique prompt)."""
        return [r for r in self.requests() if marker in str(r.get("body"))]


@dataclass
class Service:
    """A running `aiorch serve` and the mock it talks to (None when offline)."""

    server: Server
    mock: Mock | None
    name: str

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=HTTP_TIMEOUT, **kwargs)

    def query(self, body: Mapping[str, Any], **kwargs: Any) -> httpx.Response:
        with self.client() as client:
            return client.post("/api/ai/query", json=dict(body), **kwargs)

    def metrics(self) -> str:
        with self.client() as client:
            response = client.get("/metrics")
        response.raise_for_status()
        return response.text

    def metric(self, name: str, **labels: str) -> float:
        return metric_value(self.metrics(), name, **labels)


def metric_value(exposition: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 if none)."""
    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@dataclass(frozen=True)
class Event:
    event: str | None
    data: str


def sse_events(lines: Iterable[str]) -> Iterator[Event]:
    """Server-sent events from a stream of lines, yielded as each one completes."""
    name: str | None = None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield Event(name, "\n".join(data))
            name, data = None, []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
    if data:
        yield Event(name, "\n".join(data))


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT_TIMEOUT) -> None:
    """Poll until `predicate` holds; the timeout only turns a failure into a message."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)
