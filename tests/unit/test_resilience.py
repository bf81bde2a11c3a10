"""Breakers, the retry budget, retries and the dispatcher's use of them, with fakes and fake clocks.

Nothing here sleeps for real except where a deadline is the thing under test (tens of ms).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
import pytest
from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

from aiorch.backends import Readiness
from aiorch.config import BackendSettings, BreakerSettings, RetrySettings, Settings, load_settings
from aiorch.dispatch import Dispatcher, says_backend_is_failing
from aiorch.errors import (
    AllBackendsFailed,
    BackendConnectionError,
    BackendError,
    BackendOverloaded,
    BackendRateLimited,
    BackendStatusError,
    BackendTimeout,
    CircuitOpen,
    ConfigError,
    QuotaExceeded,
)
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.resilience import (
    BreakerState,
    CircuitBreaker,
    LatencyWindow,
    RetryBudget,
    call_with_retries,
    hedged,
)
from aiorch.routing import Route
from aiorch.server.responses import error_response
from aiorch.types import (
    Completion,
    CompletionRequest,
    Message,
    SelectedService,
    Service,
    StreamChunk,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------------- circuit breaker


def breaker(clock: Clock, threshold: int = 3, reset: float = 10.0) -> tuple[CircuitBreaker, list]:
    changes: list[BreakerState] = []
    b = CircuitBreaker(
        BreakerSettings(failure_threshold=threshold, reset_seconds=reset),
        on_change=changes.append,
        clock=clock,
    )
    return b, changes


def test_breaker_opens_after_threshold_consecutive_failures() -> None:
    clock = Clock()
    b, changes = breaker(clock)
    b.record_failure()
    b.record_failure()
    b.record_success()  # a success in between starts the count again
    b.record_failure()
    b.record_failure()
    assert b.state is BreakerState.CLOSED
    assert b.allow()
    b.record_failure()
    assert b.state is BreakerState.OPEN
    assert not b.allow()
    assert changes == [BreakerState.OPEN]


def test_open_breaker_lets_one_probe_through_after_the_pause() -> None:
    clock = Clock()
    b, changes = breaker(clock, threshold=1, reset=10.0)
    b.record_failure()
    clock.now += 9.9
    assert not b.allow()
    clock.now += 0.1
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow()  # the probe
    assert not b.allow()  # nobody else while it is out
    b.record_success()
    assert b.state is BreakerState.CLOSED
    assert b.allow()
    assert b.allow()
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_failed_probe_opens_the_breaker_again() -> None:
    clock = Clock()
    b, _ = breaker(clock, threshold=1, reset=5.0)
    b.record_failure()
    clock.now += 5.0
    assert b.allow()
    b.record_failure()
    assert b.state is BreakerState.OPEN
    assert not b.allow()
    clock.now += 5.0
    assert b.allow()


def test_a_probe_that_never_reports_back_does_not_wedge_the_breaker() -> None:
    clock = Clock()
    b, _ = breaker(clock, threshold=1, reset=5.0)
    b.record_failure()
    clock.now += 5.0
    assert b.allow()
    b.release()  # the caller was cancelled: no verdict
    assert b.state is BreakerState.HALF_OPEN
    assert b.allow()  # another probe at once
    # And one that vanished without even a release is replaced after another pause.
    assert not b.allow()
    clock.now += 5.0
    assert b.allow()


# ---------------------------------------------------------------------------- budget, latency


def test_retry_budget_allows_a_share_of_first_attempts_over_its_window() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, window=10.0, clock=clock)
    assert budget.try_spend()  # a quiet service may always retry once
    assert not budget.try_spend()
    for _ in range(20):
        budget.record_attempt()
    assert budget.try_spend()  # 20 attempts x 0.2 = 4 retries, one already spent
    assert budget.try_spend()
    assert budget.try_spend()
    assert not budget.try_spend()
    clock.now += 10.5  # everything slides out of the window
    assert budget.try_spend()
    assert not budget.try_spend()


def test_latency_window_quantile_is_a_seen_value_over_the_recent_calls() -> None:
    window = LatencyWindow(size=100)
    assert window.quantile(0.95) is None
    for value in range(1, 101):
        window.observe(float(value))
    assert window.quantile(0.95) == 95.0
    assert window.quantile(0.5) == 50.0
    assert window.quantile(1.0) == 100.0
    for _ in range(100):  # old values fall out
        window.observe(1.0)
    assert window.quantile(0.95) == 1.0
    assert len(window) == 100


# ---------------------------------------------------------------------------- call_with_retries


class Flaky:
    """Raises the given errors in turn, then answers."""

    def __init__(self, *errors: BackendError) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class Recorder:
    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.retried: list[str] = []
        self.exhausted = 0

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def on_retry(self, error: BackendError) -> None:
        self.retried.append(error.error_type)

    def on_exhausted(self) -> None:
        self.exhausted += 1


async def run(
    call: Flaky,
    settings: RetrySettings | None = None,
    budget: RetryBudget | None = None,
    deadline: float | None = None,
) -> tuple[str, Recorder]:
    recorder = Recorder()
    result = await call_with_retries(
        call,
        settings or RetrySettings(attempts=3, backoff_base=0.1, backoff_max=2.0),
        budget or RetryBudget(ratio=10.0, window=10.0),
        recorder.on_retry,
        recorder.on_exhausted,
        deadline=deadline,
        jitter=lambda low, high: high,  # the most jitter there can be
        sleep=recorder.sleep,
    )
    return result, recorder


async def test_first_attempt_answers_without_retrying() -> None:
    call = Flaky()
    result, recorder = await run(call)
    assert (result, call.calls, recorder.sleeps) == ("ok", 1, [])


async def test_retryable_errors_are_retried_with_bounded_jittered_backoff() -> None:
    call = Flaky(BackendConnectionError("reset"), BackendStatusError("500", upstream_status=500))
    result, recorder = await run(call)
    assert result == "ok"
    assert call.calls == 3
    assert recorder.retried == ["connection_error", "upstream_error"]
    assert len(recorder.sleeps) == 2
    assert all(0 <= s <= 2.0 for s in recorder.sleeps)


async def test_retries_stop_at_the_attempt_limit() -> None:
    call = Flaky(*(BackendConnectionError(f"reset {i}") for i in range(5)))
    with pytest.raises(BackendConnectionError, match="reset 2"):
        await run(call)
    assert call.calls == 3


async def test_retry_after_is_honoured_never_sooner() -> None:
    call = Flaky(BackendRateLimited("429", retry_after=1.5))
    result, recorder = await run(call)
    assert result == "ok"
    assert recorder.retried == ["rate_limited"]
    # At least what the upstream asked for; at most that plus one backoff unit of jitter.
    assert 1.5 <= recorder.sleeps[0] <= 1.5 + 0.1


@pytest.mark.parametrize(
    "error",
    [
        QuotaExceeded("exceeded_current_quota_error"),
        BackendStatusError("400 bad request", upstream_status=400),
        BackendStatusError("401", upstream_status=401),
    ],
    ids=["quota", "400", "401"],
)
async def test_errors_that_retrying_cannot_fix_are_not_retried(error: BackendError) -> None:
    call = Flaky(error)
    with pytest.raises(type(error)):
        await run(call)
    assert call.calls == 1


async def test_a_retry_after_longer_than_the_limit_falls_back_instead_of_waiting() -> None:
    call = Flaky(BackendOverloaded("busy", retry_after=60))
    with pytest.raises(BackendOverloaded):
        await run(call, RetrySettings(attempts=3, max_retry_after=5.0))
    assert call.calls == 1


async def test_no_retry_whose_wait_would_end_past_the_deadline() -> None:
    call = Flaky(BackendRateLimited("429", retry_after=1.0))
    deadline = asyncio.get_running_loop().time() + 0.5
    with pytest.raises(BackendRateLimited):
        await run(call, deadline=deadline)
    assert call.calls == 1
    # With room for the wait, the same error is retried.
    call = Flaky(BackendRateLimited("429", retry_after=1.0))
    result, _ = await run(call, deadline=asyncio.get_running_loop().time() + 5.0)
    assert result == "ok"


async def test_an_exhausted_budget_stops_retries_and_is_reported() -> None:
    budget = RetryBudget(ratio=0.1, window=10.0)
    assert budget.try_spend()  # the one free retry is gone
    recorder = Recorder()
    call = Flaky(BackendTimeout("slow"))
    with pytest.raises(BackendTimeout):
        await call_with_retries(
            call,
            RetrySettings(attempts=3),
            budget,
            recorder.on_retry,
            recorder.on_exhausted,
            sleep=recorder.sleep,
        )
    assert call.calls == 1
    assert recorder.exhausted == 1
    assert recorder.retried == []


# ---------------------------------------------------------------------------- dispatcher


class FakeBackend:
    """Fails with the queued errors (or hangs), then answers; counts its calls."""

    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings
        self.errors: list[BackendError] = []
        self.hang = False
        self.delay = 0.0
        self.calls = 0
        self.cancelled = 0

    async def complete(self, request: CompletionRequest) -> Completion:
        self.calls += 1
        try:
            await asyncio.sleep(3600 if self.hang else self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.errors:
            raise self.errors.pop(0)
        return Completion(content=f"{self.settings.service.value} answer", model="m")

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        completion = await self.complete(request)
        yield StreamChunk(content=completion.content)
        yield StreamChunk(finish_reason="stop")

    async def probe(self) -> Readiness:
        raise NotImplementedError

    async def close(self) -> None:
        return None


def settings(**sections: dict[str, object]) -> Settings:
    base = msgspec.to_builtins(load_settings({}))
    for name, values in sections.items():
        base[name] = {**base[name], **values}
    return msgspec.convert(base, Settings)


def dispatcher(
    s: Settings,
) -> tuple[Dispatcher, dict[Service, FakeBackend], CollectorRegistry]:
    registry = CollectorRegistry()
    backends = {service: FakeBackend(s.backend(service)) for service in Service}
    return Dispatcher(s, backends, Metrics(registry)), backends, registry


REQUEST = CompletionRequest(messages=(Message("user", "hi"),))
KIMI_FIRST = Route(SelectedService.KIMI, (Service.KIMI, Service.QWEN))


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_open_breaker_skips_the_backend_without_calling_it() -> None:
    s = settings(breaker={"failure_threshold": 2}, retry={"attempts": 1})
    d, backends, registry = dispatcher(s)
    backends[Service.KIMI].errors = [BackendConnectionError("down")] * 2
    for _ in range(2):
        answer = await d.chain(KIMI_FIRST, REQUEST)
        assert answer.service is Service.QWEN
    assert sample(registry, "orchestrator_circuit_breaker_state", service="kimi") == 2
    answer = await d.chain(KIMI_FIRST, REQUEST)
    assert backends[Service.KIMI].calls == 2  # not called a third time
    assert answer.fallback is not None
    assert answer.fallback.reason == "circuit_open"
    assert (
        sample(
            registry,
            "orchestrator_fallback_total",
            from_service="kimi",
            to_service="qwen",
            reason="circuit_open",
        )
        == 1
    )


async def test_requests_the_upstream_rejects_do_not_open_the_breaker() -> None:
    assert not says_backend_is_failing(BackendStatusError("400", upstream_status=400))
    assert says_backend_is_failing(BackendStatusError("500", upstream_status=500))
    assert says_backend_is_failing(QuotaExceeded("quota"))
    s = settings(breaker={"failure_threshold": 1}, retry={"attempts": 1})
    d, backends, _ = dispatcher(s)
    backends[Service.KIMI].errors = [BackendStatusError("too long", upstream_status=400)]
    await d.chain(KIMI_FIRST, REQUEST)
    assert d.breakers[Service.KIMI].state is BreakerState.CLOSED


async def test_a_cancelled_probe_releases_the_half_open_breaker() -> None:
    s = settings(breaker={"failure_threshold": 1, "reset_seconds": 0.0}, retry={"attempts": 1})
    d, backends, _ = dispatcher(s)
    kimi = backends[Service.KIMI]
    kimi.errors = [BackendConnectionError("down")]
    with pytest.raises(BackendConnectionError):
        await d.call(Service.KIMI, REQUEST)
    kimi.hang = True
    probe = asyncio.ensure_future(d.call(Service.KIMI, REQUEST))
    await asyncio.sleep(0.01)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    kimi.hang = False
    assert (await d.call(Service.KIMI, REQUEST)).content == "kimi answer"
    assert d.breakers[Service.KIMI].state is BreakerState.CLOSED


async def test_total_deadline_covers_retries_and_reports_a_timeout() -> None:
    s = settings(kimi={"timeout": 0.05}, retry={"attempts": 3})
    d, backends, registry = dispatcher(s)
    backends[Service.KIMI].hang = True
    with pytest.raises(AllBackendsFailed) as failed:
        await d.chain(Route(SelectedService.KIMI, (Service.KIMI,)), REQUEST)
    assert failed.value.status == 504
    assert [a.error_type for a in failed.value.attempts] == ["timeout"]
    assert (
        sample(
            registry,
            "ai_errors_total",
            service="kimi",
            model=s.kimi.model_id,
            error_type="timeout",
        )
        == 1
    )


async def test_stream_falls_back_before_the_first_chunk_on_first_token_deadline() -> None:
    s = settings(kimi={"first_token_timeout": 0.05})
    d, backends, _registry = dispatcher(s)
    backends[Service.KIMI].hang = True
    items = [item async for item in d.stream(KIMI_FIRST, REQUEST)]
    service, fallback = items[0]  # type: ignore[misc]
    assert service is Service.QWEN
    assert fallback is not None
    assert fallback.reason == "timeout"
    assert isinstance(items[1], StreamChunk)
    assert items[1].content == "qwen answer"


async def test_every_backend_open_gives_503_without_any_call() -> None:
    s = settings(breaker={"failure_threshold": 1}, retry={"attempts": 1})
    d, backends, _ = dispatcher(s)
    for backend in backends.values():
        backend.errors = [BackendOverloaded("busy")]
    with pytest.raises(AllBackendsFailed):
        await d.chain(KIMI_FIRST, REQUEST)
    with pytest.raises(AllBackendsFailed) as failed:
        await d.chain(KIMI_FIRST, REQUEST)
    assert failed.value.status == 503
    assert {a.error_type for a in failed.value.attempts} == {CircuitOpen.error_type}
    assert all(b.calls == 1 for b in backends.values())


async def test_busy_backends_give_503_with_the_soonest_retry_after_they_asked_for() -> None:
    s = settings(retry={"attempts": 1})
    d, backends, _ = dispatcher(s)
    backends[Service.KIMI].errors = [BackendOverloaded("busy", retry_after=7.0)]
    backends[Service.QWEN].errors = [BackendRateLimited("slow down", retry_after=3.0)]
    with pytest.raises(AllBackendsFailed) as failed:
        await d.chain(KIMI_FIRST, REQUEST)
    assert failed.value.status == 503
    assert [a.retry_after for a in failed.value.attempts] == [7.0, 3.0]
    assert failed.value.retry_after == 3.0
    response = error_response(failed.value)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "3"

    # One that did not say (or said 0) does not hide the other's.
    backends[Service.KIMI].errors = [BackendOverloaded("busy", retry_after=0.0)]
    backends[Service.QWEN].errors = [
        BackendOverloaded("busy", retry_after=None),
    ]
    with pytest.raises(AllBackendsFailed) as failed:
        await d.chain(KIMI_FIRST, REQUEST)
    assert failed.value.retry_after is None
    assert "Retry-After" not in error_response(failed.value).headers


async def test_an_open_breaker_says_when_it_will_let_a_probe_through() -> None:
    s = settings(breaker={"failure_threshold": 1, "reset_seconds": 30.0}, retry={"attempts": 1})
    d, backends, _ = dispatcher(s)
    backends[Service.KIMI].errors = [BackendConnectionError("down")]
    backends[Service.QWEN].errors = [BackendOverloaded("busy", retry_after=45.0)]
    with pytest.raises(AllBackendsFailed):
        await d.chain(KIMI_FIRST, REQUEST)
    backends[Service.QWEN].errors = [BackendOverloaded("busy", retry_after=45.0)]
    with pytest.raises(AllBackendsFailed) as failed:
        await d.chain(KIMI_FIRST, REQUEST)
    skipped = failed.value.attempts[0]
    assert skipped.error_type == "circuit_open"
    assert skipped.retry_after is not None
    assert 25.0 < skipped.retry_after <= 30.0  # the rest of the pause (generous: a slow machine)
    assert failed.value.retry_after == skipped.retry_after
    assert 26 <= int(error_response(failed.value).headers["Retry-After"]) <= 30


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


# ---------------------------------------------------------------------------- hedging


def call(result: str, delay: float, log: list[str]) -> Callable[[], Awaitable[str]]:
    async def run() -> str:
        log.append(f"start {result}")
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            log.append(f"cancel {result}")
            raise
        return result

    return run


def ok(outcome: str) -> bool:
    return not outcome.startswith("fail")


async def test_no_hedge_when_the_first_call_answers_in_time() -> None:
    log: list[str] = []
    outcomes = await hedged(call("a", 0.0, log), call("b", 0.0, log), 0.5, ok)
    assert outcomes == ["a"]
    assert log == ["start a"]


async def test_the_hedge_answers_when_the_first_call_is_slow() -> None:
    log: list[str] = []
    outcomes = await hedged(call("a", 10.0, log), call("b", 0.0, log), 0.02, ok)
    assert outcomes == ["b"]
    assert log == ["start a", "start b", "cancel a"]


async def test_a_failure_of_either_waits_for_the_other() -> None:
    log: list[str] = []
    outcomes = await hedged(call("fail a", 0.05, log), call("b", 0.1, log), 0.01, ok)
    assert outcomes == ["fail a", "b"]
    both = await hedged(call("fail a", 0.05, log), call("fail b", 0.01, log), 0.01, ok)
    assert both == ["fail b", "fail a"]


async def test_cancelling_a_hedged_call_cancels_both() -> None:
    log: list[str] = []
    task = asyncio.ensure_future(hedged(call("a", 10, log), call("b", 10, log), 0.01, ok))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(log) == ["cancel a", "cancel b", "start a", "start b"]


async def test_dispatcher_hedges_a_slow_primary_once_it_knows_its_p95() -> None:
    s = settings(hedge={"enabled": True, "min_samples": 3, "min_delay": 0.01})
    d, backends, registry = dispatcher(s)
    kimi, qwen = backends[Service.KIMI], backends[Service.QWEN]
    kimi.delay = 0.01
    for _ in range(3):  # learn Kimi's latency; too few samples to hedge yet
        assert (await d.chain(KIMI_FIRST, REQUEST)).service is Service.KIMI
    assert qwen.calls == 0
    kimi.hang = True
    answer = await d.chain(KIMI_FIRST, REQUEST)
    assert answer.service is Service.QWEN
    assert answer.fallback is not None
    assert answer.fallback.reason == "hedged"
    assert kimi.cancelled == 1  # the slow call was abandoned, not left running
    assert d.breakers[Service.KIMI].state is BreakerState.CLOSED  # slow is not broken
    hedges = sample(
        registry, "orchestrator_fallback_total", from_service="kimi", to_service="qwen",
        reason="hedged",
    )  # fmt: skip
    assert hedges == 1
    assert [a.service for a in answer.attempts] == [Service.QWEN]


async def test_no_hedging_by_default_or_without_a_next_service() -> None:
    d, backends, _ = dispatcher(settings())
    for _ in range(25):  # enough samples: quick answers
        await d.chain(KIMI_FIRST, REQUEST)
    backends[Service.KIMI].delay = 0.2  # far past the quick ones' p95
    assert (await d.chain(KIMI_FIRST, REQUEST)).service is Service.KIMI
    assert backends[Service.QWEN].calls == 0  # off by default
    d, backends, _ = dispatcher(settings(hedge={"enabled": True, "min_samples": 1}))
    backends[Service.KIMI].delay = 0.02
    alone = Route(SelectedService.KIMI, (Service.KIMI,))
    for _ in range(5):
        assert (await d.chain(alone, REQUEST)).service is Service.KIMI
    assert backends[Service.QWEN].calls == 0


def test_hedge_settings_are_checked_at_start_up(tmp_path: Path) -> None:
    config = tmp_path / "aiorch.toml"
    config.write_text("[hedge]\nenabled = true\nquantile = 1.5\nmin_samples = 500\n")
    with pytest.raises(ConfigError) as error:
        load_settings({}, config)
    assert "hedge.quantile" in str(error.value)
    assert "hedge.min_samples" in str(error.value)
