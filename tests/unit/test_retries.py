"""One backend call with retries: backoff, Retry-After, the deadline and the budget, with fakes.

Nothing here sleeps for real: the sleep is injected.
"""

from __future__ import annotations

import asyncio

import pytest

from aiorch.config import RetrySettings
from aiorch.errors import (
    BackendConnectionError,
    BackendError,
    BackendOverloaded,
    BackendRateLimited,
    BackendStatusError,
    BackendTimeout,
    QuotaExceeded,
)
from aiorch.retries import call_with_retries
from aiorch.retry_budget import RetryBudget


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
    budget = RetryBudget(ratio=0.1, window=10.0, min_concurrent=1)
    assert budget.try_spend()  # the floor's one retry in flight is taken (and not handed back)
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
