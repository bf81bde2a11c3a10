"""One backend call with retries: jittered backoff, Retry-After, the deadline and the budget.

Retries use tenacity with jittered exponential backoff that honours the upstream's Retry-After,
and never start a wait that would end past the call's deadline. Each retry is paid for from the
backend's `RetryBudget`, and handed back to it when it ends.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, stop_after_attempt, wait_random_exponential

from aiorch.config import RetrySettings
from aiorch.errors import BackendError, is_retryable
from aiorch.retry_budget import RetryBudget

T = TypeVar("T")


class _RetryPlan:
    """Decides whether to retry and how long to wait, together: the deadline can veto a wait.

    The wait is jittered exponential backoff, or the upstream's Retry-After plus a little jitter
    (never sooner than asked, and not all clients at the same instant).
    """

    def __init__(
        self,
        settings: RetrySettings,
        budget: RetryBudget,
        deadline: float | None,
        on_retry: Callable[[BackendError], None],
        on_budget_exhausted: Callable[[], None],
        jitter: Callable[[float, float], float],
    ) -> None:
        self.settings = settings
        self.budget = budget
        self.deadline = deadline
        self.on_retry = on_retry
        self.on_budget_exhausted = on_budget_exhausted
        self.jitter = jitter
        self.delay = 0.0
        self.spent = 0  # retries taken from the budget and not yet handed back
        self._backoff = wait_random_exponential(
            multiplier=settings.backoff_base, max=settings.backoff_max
        )

    def should_retry(self, state: RetryCallState) -> bool:
        # tenacity asks before it checks the stop condition: never spend on a last attempt.
        error = state.outcome.exception() if state.outcome else None
        settings = self.settings
        if state.attempt_number >= settings.attempts:
            return False
        if not isinstance(error, BackendError) or not is_retryable(error):
            return False
        if error.retry_after is not None:
            if error.retry_after > settings.max_retry_after:
                return False  # waiting that long is worse than falling back
            delay = error.retry_after + self.jitter(0.0, settings.backoff_base)
        else:
            delay = float(self._backoff(state))
        deadline = self.deadline
        if deadline is not None and asyncio.get_running_loop().time() + delay >= deadline:
            return False  # the retry could not finish in time: fall back now instead
        if not self.budget.try_spend():
            self.on_budget_exhausted()
            return False
        self.spent += 1
        self.delay = delay
        self.on_retry(error)
        return True

    def wait(self, state: RetryCallState) -> float:
        return self.delay

    def retry_ended(self) -> None:
        if self.spent > 0:
            self.spent -= 1
            self.budget.finished()


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    settings: RetrySettings,
    budget: RetryBudget,
    on_retry: Callable[[BackendError], None],
    on_budget_exhausted: Callable[[], None],
    *,
    deadline: float | None = None,
    jitter: Callable[[float, float], float] = random.uniform,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run `call`, retrying retryable errors while attempts, the deadline and the budget allow.

    `deadline` is the event loop's time by which the whole call must be over.
    """
    budget.record_attempt()
    try:  # the first attempt goes straight out: tenacity's machinery only on failure
        return await call()
    except BackendError as error:
        if settings.attempts <= 1 or not is_retryable(error):
            raise
        first_error = error

    plan = _RetryPlan(settings, budget, deadline, on_retry, on_budget_exhausted, jitter)
    replayed = False

    async def attempt() -> T:
        # Tenacity's first attempt is the failure that already happened, so that its
        # predicate, wait and stop see the whole history without a second upstream call.
        nonlocal replayed
        if not replayed:
            replayed = True
            raise first_error
        try:
            return await call()
        finally:
            plan.retry_ended()

    retrying = AsyncRetrying(
        stop=stop_after_attempt(settings.attempts),
        wait=plan.wait,
        retry=plan.should_retry,
        reraise=True,
        sleep=sleep,
    )
    try:
        return await retrying(attempt)
    finally:
        while plan.spent:  # a retry paid for but never made (cancelled during its wait)
            plan.retry_ended()
