"""Helpers for the reliability and security suites: private stacks, requests in bulk, label sets.

Each suite starts its own mock upstream and `aiorch serve` (free ports, a TOML config written to
the test's temporary directory), so that it may change breakers, limits and timeouts without
touching the servers the general service tests share.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.service_support import Event, Mock, Service, service_env, sse_events
from tests.support.procs import AIORCH, free_port, run_server

UPSTREAM_KEY = "sk-mock-reliability"
KIMI_MODEL = "kimi-k2-thinking"  # through the Moonshot-style API
QWEN_MODEL = "qwen2.5-coder:7b"  # through Ollama's native API
# Short deadlines: a hung upstream must become an answer or an error quickly.
TIMEOUT_S = 2.0
FIRST_TOKEN_S = 1.0
# The slowest a request may take: a backend's deadline, the next one's, and slack for retries
# and a loaded machine. Only there so that a hang fails the test instead of stalling it.
ANTI_HANG_S = 2 * TIMEOUT_S + 6.0


@contextlib.contextmanager
def mock_upstream(tmp_path: Path, *args: str, port: int | None = None) -> Iterator[Mock]:
    """A mock upstream on a free port, or on `port` (to bring a stopped one back where it was)."""
    port = port or free_port()
    argv = [*AIORCH, "mock-upstream", "--port", str(port), "--api-key", UPSTREAM_KEY]
    argv += ["--seed", "7", "--hang-max-s", "30", "--slow-first-token-ms", "5000", *args]
    with run_server(argv, port=port, ready_path="/healthz", tmp_path=tmp_path, name="mock") as s:
        yield Mock(s)


def backend_env(mock: Mock) -> dict[str, str]:
    """Kimi through the Moonshot-style API, Qwen through Ollama, both with short deadlines."""
    return {
        "KIMI_BASE_URL": f"{mock.url}/v1",
        "KIMI_API_KEY": UPSTREAM_KEY,
        "KIMI_MODEL": KIMI_MODEL,
        "KIMI_TIMEOUT": str(TIMEOUT_S),
        "QWEN_OLLAMA_URL": mock.url,
        "QWEN_OLLAMA_MODEL": QWEN_MODEL,
        "QWEN_TIMEOUT": str(TIMEOUT_S),
    }


DEFAULT_TOML = f"""
[kimi]
first_token_timeout = {FIRST_TOKEN_S}
connect_timeout = 1.0
[qwen]
first_token_timeout = {FIRST_TOKEN_S}
connect_timeout = 1.0
[breaker]
enabled = false  # suites that test breakers set their own
"""


@contextlib.contextmanager
def aiorch_service(
    tmp_path: Path,
    mock: Mock | None,
    *,
    toml: str = DEFAULT_TOML,
    name: str = "aiorch",
    port: int | None = None,
    args: Sequence[str] = (),
    **env: str,
) -> Iterator[Service]:
    config = tmp_path / f"{name}.toml"
    config.write_text(toml)
    values = {**(backend_env(mock) if mock else {}), "AIORCH_CONFIG": str(config), **env}
    port = port or free_port()
    with run_server(
        [*AIORCH, "serve", "--port", str(port), *args],
        port=port,
        ready_path="/healthz",
        tmp_path=tmp_path,
        env=service_env(**values),
        name=name,
    ) as server:
        yield Service(server, mock, name)


def directive(fault: str | None = None, **fields: object) -> str:
    """`[[mock: ...]]` for the last user message; faults hit only the models in fault_models."""
    items = {**({"fault": fault} if fault else {}), **fields}
    return "[[mock: " + " ".join(f"{k}={v}" for k, v in items.items()) + "]]" if items else ""


@dataclass
class Outcome:
    """What the client saw: status, JSON body or SSE events, time taken, transport trouble."""

    status: int
    seconds: float
    body: Any = None
    events: list[Event] = field(default_factory=list)
    text: str = ""
    transport_error: str | None = None

    @property
    def error_events(self) -> list[Event]:
        return [e for e in self.events if e.event == "error" or e.data.startswith('{"error"')]

    def event(self, name: str) -> dict[str, Any] | None:
        for e in self.events:
            if e.event == name:
                data: dict[str, Any] = json.loads(e.data)
                return data
        return None


async def send(
    client: httpx.AsyncClient, path: str, body: Mapping[str, Any], **kwargs: Any
) -> Outcome:
    """One request, read to the end; a transport failure is an outcome too, never an exception."""
    started = time.perf_counter()
    try:
        async with client.stream("POST", path, json=dict(body), **kwargs) as response:
            raw = await response.aread()
    except httpx.HTTPError as error:
        return Outcome(0, time.perf_counter() - started, transport_error=repr(error))
    seconds = time.perf_counter() - started
    text = raw.decode("utf-8", "replace")
    outcome = Outcome(response.status_code, seconds, text=text)
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        outcome.events = list(sse_events(text.split("\n")))
    else:
        try:
            outcome.body = json.loads(text)
        except ValueError:
            outcome.body = None
    return outcome


Request = tuple[str, Mapping[str, Any]] | tuple[str, Mapping[str, Any], Mapping[str, str]]
ALONE = {"X-Aiorch-Fallback": "off"}  # the named model only: no fallback chain


async def send_all(url: str, requests: Sequence[Request], concurrency: int) -> list[Outcome]:
    """Every request (path, body and perhaps headers), at most `concurrency` at a time;
    outcomes in the order of `requests`."""
    limit = asyncio.Semaphore(concurrency)
    timeout = httpx.Timeout(ANTI_HANG_S + 10, connect=5.0)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:

        async def one(request: Request) -> Outcome:
            path, body, *rest = request
            async with limit:
                return await send(client, path, body, headers=dict(rest[0]) if rest else None)

        return list(await asyncio.gather(*(one(r) for r in requests)))


def label_values(exposition: str) -> set[tuple[str, str, str]]:
    """Every (family, label, value) on a /metrics page."""
    found: set[tuple[str, str, str]] = set()
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            for label, value in sample.labels.items():
                if label != "le" and label != "quantile":
                    found.add((family.name, label, value))
    return found


def counters(exposition: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of `name`, keyed by their sorted labels."""
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def verdict(outcome: Outcome) -> tuple[bool, bool]:
    """(answered, succeeded) for /api/ai/query: answered means a complete, clear reply.

    A JSON reply is complete when it parses, and clear when an error says its type and what went
    wrong; a stream is complete when it ends with `event: done` or an explicit error event.
    """
    if outcome.transport_error is not None:
        return False, False
    if outcome.events:
        done = outcome.event("done") is not None
        errors = outcome.error_events
        clear = all(_clear(json.loads(e.data)) for e in errors)
        return (done or bool(errors)) and clear, done and not errors
    body = outcome.body
    if not isinstance(body, dict):
        return False, False
    if outcome.status == 200:
        return True, bool(body.get("answer"))
    return _clear(body), False


def _clear(body: Mapping[str, Any]) -> bool:
    error = body.get("error")
    return isinstance(error, dict) and bool(error.get("type")) and bool(error.get("message"))


@dataclass
class Tally:
    sent: int = 0
    answered: int = 0
    succeeded: int = 0

    @property
    def lost(self) -> int:
        return self.sent - self.answered

    def add(self, answered: bool, succeeded: bool) -> None:
        self.sent += 1
        self.answered += answered
        self.succeeded += succeeded


def table(title: str, tallies: Mapping[str, Tally]) -> str:
    total = Tally()
    lines = [title, f"{'fault':<18}{'sent':>6}{'answered':>10}{'succeeded':>11}{'lost':>6}"]
    for name, t in tallies.items():
        lines.append(f"{name:<18}{t.sent:>6}{t.answered:>10}{t.succeeded:>11}{t.lost:>6}")
        total.sent += t.sent
        total.answered += t.answered
        total.succeeded += t.succeeded
    lines.append(
        f"{'total':<18}{total.sent:>6}{total.answered:>10}{total.succeeded:>11}{total.lost:>6}"
    )
    return "\n".join(lines)
