"""Bounded load with injected upstream faults: nothing is lost, and a healthy fallback saves it.

A few hundred requests at concurrency 20, one in five carrying a fault for its primary model
(every fault mode in turn), half plain and half streamed, half routed Kimi-first (Moonshot API)
and half Qwen-first (Ollama). Breakers, retries and budgets run with their defaults. Run with
`-s` to see the per-fault table.

Each test gets a service of its own: breakers are state, and a test must not inherit what the
one before it did to them. Fault plans are seeded; where the order of events matters (failures
that end together), the test forces it rather than hoping the scheduler produces it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import pytest

from aiorch.mock.settings import FAILOVER_FAULTS
from aiorch.mock.settings import FAULT_NAMES as ALL_FAULTS
from tests.integration.reliability_support import (
    Outcome,
    Tally,
    aiorch_service,
    directive,
    mock_upstream,
    send_all,
    table,
    verdict,
)
from tests.integration.service_support import Mock, Service, unique, wait_until

pytestmark = pytest.mark.slow

# The failover faults (stalls, stream errors, request 400s, a model down for a while) have their
# own scenario suite (issue 16); this one covers the faults it was written for.
FAULT_NAMES = tuple(f for f in ALL_FAULTS if f not in FAILOVER_FAULTS)

REQUESTS = 440
CONCURRENCY = 20
FAULT_SHARE = 0.2
# Faults that can strike after the client has seen data, in streams of this dialect: then the
# only right answer is an explicit error event, no fallback can help.
MID_STREAM = {"kimi": {"cut"}, "qwen": {"cut", "malformed"}}

LOAD_TOML = """
[kimi]
first_token_timeout = 1.0
[qwen]
first_token_timeout = 1.0
"""


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mock, Service]]:
    """A fresh mock and service per test: no breaker state crosses from one test to the next."""
    tmp = tmp_path_factory.mktemp("fault-load")
    with (
        mock_upstream(tmp) as mock,
        aiorch_service(tmp, mock, toml=LOAD_TOML, name="fault-load") as service,
    ):
        yield mock, service


def plan(count: int, fallback: bool, seed: int) -> list[tuple[str, str, bool, dict[str, Any]]]:
    """(fault, primary, stream, body) for each request; faults spread over every mode."""
    rng = random.Random(seed)
    faulty = set(rng.sample(range(count), round(count * FAULT_SHARE)))
    modes = list(FAULT_NAMES)
    out = []
    for i in range(count):
        primary = "kimi" if i % 2 == 0 else "qwen"
        stream = i % 4 in (1, 2)
        fault = modes[len([j for j in faulty if j < i]) % len(modes)] if i in faulty else "none"
        fields = {"fault_models": primary} if fallback else {}
        text = unique(f"Explain why request {i} is slow")
        if fault != "none":
            text += " " + directive(fault, **fields)
        query_type = "reasoning" if primary == "kimi" else "code"
        body = {"query": text, "query_type": query_type, "use_cache": False, "stream": stream}
        out.append((fault, primary, stream, body))
    return out


def run(service: Service, requests: list[tuple[str, str, bool, dict[str, Any]]]) -> list[Outcome]:
    bodies = [("/api/ai/query", body) for *_, body in requests]
    return asyncio.run(send_all(service.url, bodies, CONCURRENCY))


def test_with_a_healthy_fallback_nothing_is_lost_and_99_percent_succeed(
    stack: tuple[Mock, Service],
) -> None:
    mock, service = stack
    requests = plan(REQUESTS, fallback=True, seed=1)
    outcomes = run(service, requests)

    tallies: dict[str, Tally] = {name: Tally() for name in ("none", *FAULT_NAMES)}
    recoverable = Tally()
    for (fault, primary, stream, _), outcome in zip(requests, outcomes, strict=True):
        answered, succeeded = verdict(outcome)
        tallies[fault].add(answered, succeeded)
        if not (stream and fault in MID_STREAM[primary]):
            recoverable.add(answered, succeeded)
        elif answered and not succeeded:  # the only acceptable failure: an explicit error
            assert outcome.error_events, outcome.text[-300:]
    print()
    print(table(f"with a healthy fallback ({REQUESTS} requests, c={CONCURRENCY})", tallies))
    print(
        f"recoverable (fault before the first byte): {recoverable.succeeded}/{recoverable.sent}"
        f" succeeded ({100 * recoverable.succeeded / recoverable.sent:.2f} %)"
    )

    assert sum(t.lost for t in tallies.values()) == 0
    assert recoverable.succeeded >= 0.99 * recoverable.sent
    assert tallies["none"].succeeded == tallies["none"].sent
    wait_until(lambda: mock.stats()["in_flight"] == 0, "the mock to finish every request")
    wait_until(lambda: service.metric("orchestrator_in_flight_requests") == 0, "requests to drain")


def test_without_a_fallback_every_request_is_still_answered(
    stack: tuple[Mock, Service],
) -> None:
    _, service = stack
    requests = plan(REQUESTS // 2, fallback=False, seed=2)
    outcomes = run(service, requests)

    tallies: dict[str, Tally] = {name: Tally() for name in ("none", *FAULT_NAMES)}
    for (fault, *_), outcome in zip(requests, outcomes, strict=True):
        tallies[fault].add(*verdict(outcome))
    print()
    print(table(f"without a healthy fallback ({REQUESTS // 2} requests)", tallies))
    assert sum(t.lost for t in tallies.values()) == 0
    # Faults hit both models here, so they fail, but clearly; and they must not sink the rest:
    # a fifth of the calls failing is no reason to refuse the healthy majority.
    assert tallies["none"].succeeded >= 0.95 * tallies["none"].sent
    for service_name in ("kimi", "qwen"):
        assert service.metric("orchestrator_circuit_breaker_state", service=service_name) == 0


HANGS = 8  # more than the old breaker's five failures in a row


def test_hangs_that_end_together_do_not_open_the_breaker_on_a_healthy_service(
    stack: tuple[Mock, Service],
) -> None:
    """The interleaving that sank the suite, forced: slow failures reaching one deadline at the
    same instant, with nothing in between. Under a breaker that counted failures in a row they
    opened it for 30 s while every other call to the service succeeded."""
    mock, service = stack

    def ask(fault: str | None = None, **fields: object) -> tuple[str, dict[str, Any]]:
        text = unique("Explain why the build is slow") + " " + directive(fault, **fields)
        return "/api/ai/query", {"query": text, "query_type": "reasoning", "use_cache": False}

    healthy = asyncio.run(send_all(service.url, [ask() for _ in range(40)], CONCURRENCY))
    assert all(o.body["selected_service"] == "kimi" for o in healthy)
    # Launched together, hung together, timed out together: eight failures in a row on Kimi.
    hangs = asyncio.run(
        send_all(service.url, [ask("hang", fault_models="kimi") for _ in range(HANGS)], HANGS)
    )
    assert all(verdict(o)[1] for o in hangs)  # the fallback answered each
    assert all(o.body["fallback"]["reason"] == "timeout" for o in hangs)

    assert service.metric("orchestrator_circuit_breaker_state", service="kimi") == 0
    after = asyncio.run(send_all(service.url, [ask() for _ in range(10)], CONCURRENCY))
    assert [o.body["selected_service"] for o in after] == ["kimi"] * 10
    assert all(o.body["fallback"] is None for o in after)
    wait_until(lambda: mock.stats()["in_flight"] == 0, "the mock to finish every request")
