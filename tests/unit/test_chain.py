"""The chain strategy over guarded services, with fake backends: breakers, deadlines, fallbacks,
hedging, and a broken stream continued on the next model.

Nothing here sleeps for real except where a deadline is the thing under test (tens of ms).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

from aiorch.answer import Delta, End, Event
from aiorch.backends import Call
from aiorch.breaker import BreakerState
from aiorch.config import load_settings
from aiorch.errors import (
    AllBackendsFailed,
    BackendConnectionError,
    BackendOverloaded,
    BackendRateLimited,
    CircuitOpen,
    ConfigError,
    StreamInterrupted,
    UpstreamRequestError,
)
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.server.responses import error_response
from aiorch.strategies import Chain, Ended
from aiorch.types import Usage
from tests.unit.chain_support import FakeBackend, MakeRig, request, settings


async def test_open_breaker_skips_the_backend_without_calling_it(make_rig: MakeRig) -> None:
    rig = make_rig(settings(breaker={"minimum_calls": 2}, retry={"attempts": 1}))
    rig.backends["kimi"].errors = [BackendConnectionError("down")] * 2
    for _ in range(2):
        started, _, _ = await rig.run(rig.kimi_first)
        assert started.service == "qwen"
    assert rig.sample("orchestrator_circuit_breaker_state", service="kimi") == 2
    started, _, ended = await rig.run(rig.kimi_first)
    assert len(rig.backends["kimi"].calls) == 2  # not called a third time
    assert ended.fallback is not None
    assert ended.fallback.reason == "circuit_open"
    labels = {"from_service": "kimi", "to_service": "qwen", "reason": "circuit_open"}
    assert rig.sample("orchestrator_fallback_total", **labels) == 1


async def test_a_refused_request_is_passed_on_and_never_falls_back(make_rig: MakeRig) -> None:
    rig = make_rig(settings(breaker={"minimum_calls": 1}, retry={"attempts": 3}))
    refused = UpstreamRequestError("too long", status=400, code="context_length_exceeded")
    rig.backends["kimi"].errors = [refused]
    with pytest.raises(UpstreamRequestError) as caught:
        await rig.run(rig.kimi_first)
    assert caught.value is refused
    assert len(rig.backends["kimi"].calls) == 1  # not retried
    assert rig.backends["qwen"].calls == []  # and no fallback
    assert rig.services["kimi"].breaker.state is BreakerState.CLOSED  # the upstream is fine


async def test_a_cancelled_probe_releases_the_half_open_breaker(make_rig: MakeRig) -> None:
    rig = make_rig(
        settings(
            breaker={"minimum_calls": 1, "reset_seconds": 0.0, "half_open_calls": 1},
            retry={"attempts": 1},
        )
    )
    kimi = rig.backends["kimi"]
    kimi.errors = [BackendConnectionError("down")]
    with pytest.raises(AllBackendsFailed):
        await rig.run(rig.kimi_alone)
    kimi.hang = True
    probe = asyncio.ensure_future(rig.run(rig.kimi_alone))
    await asyncio.sleep(0.01)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    kimi.hang = False
    _, text, _ = await rig.run(rig.kimi_alone)
    assert text == "kimi answer"
    assert rig.services["kimi"].breaker.state is BreakerState.CLOSED


async def test_total_deadline_covers_retries_and_reports_a_timeout(make_rig: MakeRig) -> None:
    s = settings(kimi={"timeout": 0.05}, retry={"attempts": 3})
    rig = make_rig(s)
    rig.backends["kimi"].hang = True
    with pytest.raises(AllBackendsFailed) as failed:
        await rig.run(rig.kimi_alone)
    assert failed.value.status == 504
    assert [a.error_type for a in failed.value.attempts] == ["timeout"]
    labels = {"service": "kimi", "model": s.kimi.model_id, "error_type": "timeout"}
    assert rig.sample("ai_errors_total", **labels) == 1


async def test_stream_falls_back_before_the_first_chunk_on_first_token_deadline(
    make_rig: MakeRig,
) -> None:
    rig = make_rig(settings(kimi={"first_token_timeout": 0.05}))
    rig.backends["kimi"].hang = True
    started, text, ended = await rig.run(rig.kimi_first, stream=True)
    assert started.service == "qwen"
    assert started.fallback is not None
    assert started.fallback.reason == "timeout"
    assert text == "qwen answer"
    assert [a.service for a in ended.attempts] == ["kimi", "qwen"]


async def test_a_stream_that_goes_silent_is_abandoned_at_the_idle_limit(make_rig: MakeRig) -> None:
    rig = make_rig(settings(kimi={"idle_timeout": 0.05}, retry={"attempts": 1}))

    class Stalls(FakeBackend):
        async def generate(self, call: Call) -> AsyncIterator[Event]:
            yield Delta(content="kimi")
            await asyncio.sleep(3600)
            yield End(Usage())  # never reached

    stalls = Stalls(rig.backends["kimi"].settings)
    rig.services["kimi"].backend = stalls
    started, text, ended = await rig.run(rig.kimi_first, stream=True)
    assert started.service == "kimi"
    assert text == "kimi answer"  # Qwen continued where Kimi went silent
    assert ended.fallback is not None
    assert ended.fallback.reason == "stream_stall"
    assert [(a.service, a.error_type, a.continued) for a in ended.attempts] == [
        ("kimi", "stream_stall", False),
        ("qwen", None, True),
    ]


class Trickles(FakeBackend):
    """A stream of `count` words, one every `gap` seconds, then its end."""

    gap = 0.02
    count = 10

    async def generate(self, call: Call) -> AsyncIterator[Event]:
        for _ in range(self.count):
            yield Delta(content="w")
            await asyncio.sleep(self.gap)
        yield Delta(finish_reason="stop")
        yield End(Usage(1, self.count), call.model.id)


async def test_a_stream_that_keeps_talking_is_never_idle_however_long_it_runs(
    make_rig: MakeRig,
) -> None:
    # Each gap is under the idle limit, and the whole stream is ten idle limits long: the one
    # timer must follow the stream, not fire at the first limit it was armed for.
    rig = make_rig(settings(kimi={"idle_timeout": 0.05}, retry={"attempts": 1}))
    rig.services["kimi"].backend = Trickles(rig.backends["kimi"].settings)
    _, text, ended = await rig.run(rig.kimi_alone, stream=True)
    assert text == "w" * 10
    assert [a.error_type for a in ended.attempts] == [None]


async def test_a_stream_past_its_whole_life_limit_is_stopped_and_says_which_limit(
    make_rig: MakeRig,
) -> None:
    rig = make_rig(
        settings(kimi={"idle_timeout": 0.05, "stream_timeout": 0.1}, retry={"attempts": 1})
    )
    rig.services["kimi"].backend = Trickles(rig.backends["kimi"].settings)
    with pytest.raises(StreamInterrupted) as caught:
        await rig.run(rig.kimi_alone, stream=True)
    assert "0.1 s stream limit" in caught.value.message


async def test_a_silent_stream_says_it_was_the_idle_limit(make_rig: MakeRig) -> None:
    rig = make_rig(settings(kimi={"idle_timeout": 0.05}, retry={"attempts": 1}))
    trickles = Trickles(rig.backends["kimi"].settings)
    trickles.gap = 0.2
    rig.services["kimi"].backend = trickles
    with pytest.raises(StreamInterrupted) as caught:
        await rig.run(rig.kimi_alone, stream=True)
    assert "0.05 s without an event" in caught.value.message


async def test_a_slow_reader_is_not_a_silent_upstream(make_rig: MakeRig) -> None:
    # The upstream has every event ready; the reader takes four idle limits over each.
    rig = make_rig(settings(kimi={"idle_timeout": 0.05}, retry={"attempts": 1}))
    trickles = Trickles(rig.backends["kimi"].settings)
    trickles.gap, trickles.count = 0.0, 3
    rig.services["kimi"].backend = trickles
    ended = None
    async for event in rig.chain.run(rig.kimi_alone, request(True), "rid"):
        await asyncio.sleep(0.2)
        if isinstance(event, Ended):
            ended = event
    assert ended is not None
    assert [a.error_type for a in ended.attempts] == [None]


async def test_cancelling_a_stream_mid_wait_is_a_cancellation_not_a_stall(
    make_rig: MakeRig,
) -> None:
    rig = make_rig(settings(kimi={"idle_timeout": 0.05}, retry={"attempts": 1}))
    trickles = Trickles(rig.backends["kimi"].settings)
    trickles.gap = 0.2
    rig.services["kimi"].backend = trickles
    task = asyncio.ensure_future(rig.run(rig.kimi_alone, stream=True))
    await asyncio.sleep(0.03)  # inside the first silence, before its limit
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_stream_cut_mid_answer_is_continued_on_the_next_model(make_rig: MakeRig) -> None:
    rig = make_rig(settings())
    rig.backends["kimi"].words = ["The ", "sky ", "is ", "blue."]
    rig.backends["kimi"].cut_after = 2
    rig.backends["qwen"].words = ["The ", "sky ", "is ", "blue."]
    started, text, ended = await rig.run(rig.kimi_first, stream=True)
    assert started.service == "kimi"
    assert text == "The sky is blue."
    (continued,) = rig.backends["qwen"].calls
    assert continued.prefill == "The sky "
    assert ended.service == "qwen"
    assert ended.fallback is not None
    assert ended.fallback.reason == "stream_cut"
    labels = {"from_service": "kimi", "to_service": "qwen", "reason": "stream_cut"}
    assert rig.sample("orchestrator_fallback_total", **labels) == 1


async def test_a_cut_stream_with_no_model_to_continue_it_ends_in_an_explicit_error(
    make_rig: MakeRig,
) -> None:
    rig = make_rig(settings())
    rig.backends["kimi"].cut_after = 1
    with pytest.raises(StreamInterrupted) as caught:
        await rig.run(rig.kimi_alone, stream=True)
    assert "cut" in caught.value.message


async def test_a_fallback_that_refuses_to_continue_does_not_mask_the_real_failure(
    make_rig: MakeRig,
) -> None:
    rig = make_rig(settings())
    rig.backends["kimi"].cut_after = 1
    rig.backends["qwen"].errors = [UpstreamRequestError("no prefill here", status=400)]
    with pytest.raises(StreamInterrupted) as caught:
        await rig.run(rig.kimi_first, stream=True)
    assert "cut" in caught.value.message  # the cut, not qwen's 400
    assert "no prefill" not in caught.value.message
    model = rig.kimi_first[1]
    assert not rig.services["qwen"].can_continue(model)  # learned from its refusal


async def test_every_backend_open_gives_503_without_any_call(make_rig: MakeRig) -> None:
    rig = make_rig(settings(breaker={"minimum_calls": 1}, retry={"attempts": 1}))
    for backend in rig.backends.values():
        backend.errors = [BackendOverloaded("busy")]
    with pytest.raises(AllBackendsFailed):
        await rig.run(rig.kimi_first)
    with pytest.raises(AllBackendsFailed) as failed:
        await rig.run(rig.kimi_first)
    assert failed.value.status == 503
    assert {a.error_type for a in failed.value.attempts} == {CircuitOpen.error_type}
    assert all(len(b.calls) == 1 for b in rig.backends.values())


async def test_busy_backends_give_503_with_the_soonest_retry_after_they_asked_for(
    make_rig: MakeRig,
) -> None:
    rig = make_rig(settings(retry={"attempts": 1}))
    rig.backends["kimi"].errors = [BackendOverloaded("busy", retry_after=7.0)]
    rig.backends["qwen"].errors = [BackendRateLimited("slow down", retry_after=3.0)]
    with pytest.raises(AllBackendsFailed) as failed:
        await rig.run(rig.kimi_first)
    assert failed.value.status == 503
    assert [a.retry_after for a in failed.value.attempts] == [7.0, 3.0]
    assert failed.value.retry_after == 3.0
    response = error_response(failed.value)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "3"

    # One that did not say (or said 0) does not hide the other's.
    rig.backends["kimi"].errors = [BackendOverloaded("busy", retry_after=0.0)]
    rig.backends["qwen"].errors = [BackendOverloaded("busy", retry_after=None)]
    with pytest.raises(AllBackendsFailed) as failed:
        await rig.run(rig.kimi_first)
    assert failed.value.retry_after is None
    assert "Retry-After" not in error_response(failed.value).headers


async def test_an_open_breaker_says_when_it_will_let_a_probe_through(make_rig: MakeRig) -> None:
    rig = make_rig(
        settings(breaker={"minimum_calls": 1, "reset_seconds": 30.0}, retry={"attempts": 1})
    )
    rig.backends["kimi"].errors = [BackendConnectionError("down")]
    rig.backends["qwen"].errors = [BackendOverloaded("busy", retry_after=45.0)]
    with pytest.raises(AllBackendsFailed):
        await rig.run(rig.kimi_first)
    rig.backends["qwen"].errors = [BackendOverloaded("busy", retry_after=45.0)]
    with pytest.raises(AllBackendsFailed) as failed:
        await rig.run(rig.kimi_first)
    skipped = failed.value.attempts[0]
    assert skipped.error_type == "circuit_open"
    assert skipped.retry_after is not None
    assert 25.0 < skipped.retry_after <= 30.0  # the rest of the pause (generous: a slow machine)
    assert failed.value.retry_after == skipped.retry_after
    assert 26 <= int(error_response(failed.value).headers["Retry-After"]) <= 30


async def test_the_chain_hedges_a_slow_primary_once_it_knows_its_p95(make_rig: MakeRig) -> None:
    rig = make_rig(settings(hedge={"enabled": True, "min_samples": 3, "min_delay": 0.01}))
    kimi, qwen = rig.backends["kimi"], rig.backends["qwen"]
    kimi.delay = 0.01
    for _ in range(3):  # learn Kimi's latency; too few samples to hedge yet
        started, _, _ = await rig.run(rig.kimi_first)
        assert started.service == "kimi"
    assert qwen.calls == []
    kimi.hang = True
    started, _, ended = await rig.run(rig.kimi_first)
    assert started.service == "qwen"
    assert ended.fallback is not None
    assert ended.fallback.reason == "hedged"
    assert kimi.cancelled == 1  # the slow call was abandoned, not left running
    assert rig.services["kimi"].breaker.state is BreakerState.CLOSED  # slow is not broken
    labels = {"from_service": "kimi", "to_service": "qwen", "reason": "hedged"}
    assert rig.sample("orchestrator_fallback_total", **labels) == 1
    assert sorted((a.service, a.error_type or "") for a in ended.attempts) == [
        ("kimi", "cancelled"),
        ("qwen", ""),
    ]


async def test_no_hedging_by_default_or_without_a_next_service(make_rig: MakeRig) -> None:
    rig = make_rig(settings())
    for _ in range(25):  # enough samples: quick answers
        await rig.run(rig.kimi_first)
    rig.backends["kimi"].delay = 0.2  # far past the quick ones' p95
    started, _, _ = await rig.run(rig.kimi_first)
    assert started.service == "kimi"
    assert rig.backends["qwen"].calls == []  # off by default
    rig = make_rig(settings(hedge={"enabled": True, "min_samples": 1}))
    rig.backends["kimi"].delay = 0.02
    for _ in range(5):
        started, _, _ = await rig.run(rig.kimi_alone)
        assert started.service == "kimi"
    assert rig.backends["qwen"].calls == []


async def test_a_refusal_goes_where_the_configuration_names_for_its_code(
    make_rig: MakeRig,
) -> None:
    s = settings(kimi={"fallbacks_on": {"context_length_exceeded": ["qwen"]}})
    rig = make_rig(s)
    chain = Chain(rig.services, rig.metrics, None, rig.catalog.on_refusal)
    too_long = UpstreamRequestError("too long", status=400, code="context_length_exceeded")
    rig.backends["kimi"].errors = [too_long]
    events = [e async for e in chain.run(rig.kimi_alone, request(), "rid")]
    ended = events[-1]
    assert isinstance(ended, Ended)
    assert ended.service == "qwen"
    assert ended.fallback is not None
    assert ended.fallback.reason == "upstream_request_error"

    other = UpstreamRequestError("policy", status=400, code="content_filter")
    rig.backends["kimi"].errors = [other]
    with pytest.raises(UpstreamRequestError) as caught:
        await rig.run(rig.kimi_first)
    assert caught.value is other  # no route names this code: passed on, no fallback


def test_a_dead_workers_open_breaker_does_not_linger_in_the_merged_gauge(tmp_path: Path) -> None:
    """With several workers the gauge is merged from per-process files; a dead worker's must go."""
    gauge = Metrics(CollectorRegistry()).breaker_state
    mode = gauge._multiprocess_mode  # the file name prometheus_client writes it under
    for pid, value in ((100, 2.0), (101, 0.0)):  # worker 100 saw kimi open, then died
        values = MmapedDict(str(tmp_path / f"gauge_{mode}_{pid}.db"))
        key = mmap_key(
            "orchestrator_circuit_breaker_state",
            "orchestrator_circuit_breaker_state",
            ["service"],
            ["kimi"],
            gauge._documentation,
        )
        values.write_value(key, value, 0.0)
        values.close()
    multiprocess.mark_process_dead(100, str(tmp_path))
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    assert registry.get_sample_value("orchestrator_circuit_breaker_state", {"service": "kimi"}) == 0


def test_hedge_settings_are_checked_at_start_up(tmp_path: Path) -> None:
    config = tmp_path / "aiorch.toml"
    config.write_text("[hedge]\nenabled = true\nquantile = 1.5\nmin_samples = 500\n")
    with pytest.raises(ConfigError) as error:
        load_settings({}, config)
    assert "hedge.quantile" in str(error.value)
    assert "hedge.min_samples" in str(error.value)
