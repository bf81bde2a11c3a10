"""Graceful shutdown: on SIGTERM the service stops accepting, finishes what is in flight, exits.

uvicorn does the work (`timeout_graceful_shutdown` from `server.shutdown_grace_seconds`); these
tests check that it holds for aiorch's plain and streamed answers, and that a request longer than
the grace period cannot keep the process alive.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess

import httpx
import pytest

from tests.integration.reliability_support import (
    DEFAULT_TOML,
    Outcome,
    aiorch_service,
    directive,
    mock_upstream,
    send,
)
from tests.integration.service_support import Mock, unique, wait_until
from tests.integration.service_support import Service as Running

pytestmark = pytest.mark.slow
# uvicorn re-raises the SIGTERM after its graceful shutdown, so that a supervisor sees the
# process end by the signal it sent (exit status 143 in a shell).
EXIT_CODES = (0, -signal.SIGTERM)


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


async def in_flight_then_sigterm(
    service: Running, mock: Mock, bodies: list[dict[str, object]]
) -> tuple[list[Outcome], bool]:
    """Start the requests, SIGTERM once the mock has them all, and see them through."""
    timeout = httpx.Timeout(30.0, connect=5.0)
    async with httpx.AsyncClient(base_url=service.url, timeout=timeout) as client:
        tasks = [asyncio.ensure_future(send(client, "/api/ai/query", b)) for b in bodies]
        while mock.stats()["in_flight"] < len(bodies):
            await asyncio.sleep(0.05)
            assert not any(t.done() for t in tasks), "a request ended before the SIGTERM"
        service.server.process.send_signal(signal.SIGTERM)
        # New connections are refused while the old ones are still being answered.
        refused = False
        while not all(t.done() for t in tasks):
            refused = refused or refuses_connections(service.server.port)
            await asyncio.sleep(0.05)
        return [t.result() for t in tasks], refused


def test_sigterm_finishes_in_flight_requests_then_exits(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tmp = tmp_path_factory.mktemp("shutdown")
    toml = DEFAULT_TOML + "[server]\nshutdown_grace_seconds = 15\n"
    with (
        mock_upstream(tmp) as mock,
        aiorch_service(
            tmp, mock, toml=toml, name="graceful", KIMI_TIMEOUT="20", QWEN_TIMEOUT="20"
        ) as service,
    ):
        plain = {
            "query": unique("Write a function") + " " + directive(latency_ms=2000),
            "query_type": "code",
        }
        streamed = {
            "query": unique("Write a class") + " " + directive(tokens=20, tokens_per_second=8),
            "query_type": "code",
            "stream": True,
        }
        outcomes, refused = asyncio.run(in_flight_then_sigterm(service, mock, [plain, streamed]))
        code = service.server.process.wait(timeout=20)

    assert refused, "the service kept accepting connections after SIGTERM"
    plain_outcome, stream_outcome = outcomes
    assert plain_outcome.status == 200, plain_outcome.text[:300]
    assert plain_outcome.body["answer"]
    assert stream_outcome.status == 200
    done = stream_outcome.event("done")
    assert done is not None, stream_outcome.text[-300:]
    assert done["finish_reason"] == "stop"
    assert not stream_outcome.error_events
    assert code in EXIT_CODES
    log = service.server.output()
    assert "shut down: backends, cache and rate limiter closed" in log  # the lifespan ran
    assert "Traceback" not in log, log[-2000:]


def test_requests_longer_than_the_grace_period_end_with_a_clear_error(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tmp = tmp_path_factory.mktemp("shutdown-grace")
    toml = DEFAULT_TOML + "[server]\nshutdown_grace_seconds = 1\n"
    with (
        mock_upstream(tmp) as mock,
        aiorch_service(
            tmp, mock, toml=toml, name="impatient", KIMI_TIMEOUT="60", QWEN_TIMEOUT="60"
        ) as service,
    ):
        hung = {"query": unique("Write") + " " + directive("hang"), "model": "qwen"}
        slow = {  # forty tokens at two a second: twenty seconds
            "query": unique("Write") + " " + directive(tokens=40, tokens_per_second=2),
            "model": "qwen",
            "stream": True,
        }
        outcomes, _ = asyncio.run(in_flight_then_sigterm(service, mock, [hung, slow]))
        try:
            code = service.server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("the process outlived its grace period by far")
        wait_until(lambda: mock.stats()["in_flight"] == 0, "the upstream calls to be abandoned")
        log = service.server.output()

    hung_outcome, slow_outcome = outcomes
    # Not uvicorn's bare "Internal Server Error": a JSON 503 that says why, and when to retry.
    assert hung_outcome.status == 503, hung_outcome.text[:300]
    assert hung_outcome.body["error"]["code"] == "cancelled"
    assert "shutting down" in hung_outcome.body["error"]["message"]
    # A stream already under way ends with an explicit error event, not a silent cut.
    assert slow_outcome.status == 200
    assert slow_outcome.event("done") is None
    error = json.loads(slow_outcome.error_events[-1].data)["error"]
    assert "shutting down" in error["message"]
    assert code in EXIT_CODES
    assert "Traceback" not in log, log[-2000:]  # nothing escaped to the server unhandled
