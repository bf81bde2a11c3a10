"""Identical queries in flight share one call, which ends only when its last waiter leaves."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from aiorch.config import load_settings
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.orchestrator import AIOrchestrator
from tests.unit.test_ai_orchestrator_basic import StubBackend


def orchestrator_with_slow_backends(delay: float) -> tuple[AIOrchestrator, StubBackend]:
    settings = load_settings({})
    stubs = {name: StubBackend(s, delay=delay) for name, s in settings.services.items()}
    orchestrator = AIOrchestrator(settings, backends=stubs, metrics=Metrics(CollectorRegistry()))
    return orchestrator, stubs["kimi"]


async def test_identical_concurrent_queries_make_one_call() -> None:
    orchestrator, kimi = orchestrator_with_slow_backends(0.05)
    results = await asyncio.gather(
        *(orchestrator.process_query("Why?", query_type="reasoning") for _ in range(5))
    )
    assert len(kimi.calls) == 1
    assert len({r.request_id for r in results}) == 5
    assert {r.answer for r in results} == {"kimi says hi"}
    await orchestrator.close()


async def test_the_call_goes_on_while_one_waiter_remains() -> None:
    orchestrator, kimi = orchestrator_with_slow_backends(0.2)
    leaving = asyncio.ensure_future(orchestrator.process_query("Why?", query_type="reasoning"))
    staying = asyncio.ensure_future(orchestrator.process_query("Why?", query_type="reasoning"))
    await asyncio.sleep(0.05)
    leaving.cancel()

    result = await staying
    assert result.answer == "kimi says hi"
    assert len(kimi.calls) == 1
    await orchestrator.close()


async def test_the_call_is_cancelled_when_every_waiter_leaves() -> None:
    orchestrator, kimi = orchestrator_with_slow_backends(30.0)
    waiters = [
        asyncio.ensure_future(orchestrator.process_query("Why?", query_type="reasoning"))
        for _ in range(2)
    ]
    await asyncio.sleep(0.05)
    assert kimi.active == 1
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    await asyncio.sleep(0)  # the shared call's cancellation runs on the next loop turn

    assert kimi.active == 0
    assert len(orchestrator.pipeline.in_flight) == 0
    await orchestrator.close()
