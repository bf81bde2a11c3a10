"""`GuardedService`: one upstream service and everything that guards a call to it.

A guarded service is a backend with its circuit breaker, retry budget, time limits, recent
latencies and metrics. It is the only place an upstream call is made, and every call is recorded
here once, when it ends (`Attempt`): the metrics, the traces, the answer's `attempts` and the
doctor all read that record.

Time limits: a plain call has `timeout` for the whole call, retries included. A stream has
`first_token_timeout` (and never more than `timeout`) to its first event, retries included, then
at most `idle_timeout` of silence between events, and `stream_timeout` for its whole life: a
stream that goes silent is abandoned after the idle limit, and a long healthy stream is not cut
at the plain call's deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import NamedTuple

from aiorch.answer import Delta, End, Event, Skipped
from aiorch.backends import Backend, Call, Readiness
from aiorch.breaker import BreakerState, CircuitBreaker
from aiorch.breaker_supervisor import BreakerSupervisor, Probe
from aiorch.config import RetrySettings, Settings
from aiorch.errors import (
    AiorchError,
    BackendError,
    BackendTimeout,
    CircuitOpen,
    StreamCut,
    StreamStalled,
    UnsupportedParameter,
    UpstreamRequestError,
)
from aiorch.latency import LatencyWindow
from aiorch.models import Model, Prepared, prepare, refusal
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.request import ChatRequest
from aiorch.retries import call_with_retries
from aiorch.retry_budget import RetryBudget
from aiorch.service_settings import ServiceSettings
from aiorch.shared_breakers import BreakerStore
from aiorch.silence import Silence, Silent
from aiorch.types import Attempt, Mode, Usage

# Streams: the default wait for a first event when the configuration sets none. A thinking model
# streams its reasoning from the start, so its first event is not much later than another's.
FIRST_TOKEN_DEFAULT = {True: 60.0, False: 30.0}


class _Outcome(NamedTuple):
    """How one call ended, as `_settle` records it."""

    error: AiorchError | None
    finished: bool
    usage: Usage | None
    first_token: float | None
    retries: int
    skipped: int


class GuardedService:
    def __init__(
        self,
        settings: ServiceSettings,
        backend: Backend,
        *,
        breaker: CircuitBreaker,
        retry: RetrySettings,
        metrics: Metrics,
        latency_window: int = 200,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.breaker = breaker
        self.retry = retry
        self.budget = RetryBudget(
            retry.budget_ratio, retry.budget_window, retry.budget_min_concurrent
        )
        self.latency = LatencyWindow(latency_window)
        self.metrics = metrics
        self.no_prefill: set[str] = set()  # models that refused to continue an answer

    @property
    def name(self) -> str:
        return self.settings.name

    def refusal(self, model: Model, request: ChatRequest) -> UnsupportedParameter | None:
        """What the model or this service's dialect cannot honour at all, by name."""
        return refusal(model, request) or self.backend.refusal(request)

    def prepare(self, model: Model, request: ChatRequest) -> Prepared:
        prepared = prepare(model, request)
        notes = self.backend.notes(request)
        if notes:
            return Prepared(
                prepared.request,
                prepared.thinking,
                prepared.max_tokens,
                prepared.adjustments + notes,
            )
        return prepared

    def can_continue(self, model: Model) -> bool:
        return model.capabilities.prefill != "none" and model.id not in self.no_prefill

    async def generate(self, call: Call, log: list[Attempt]) -> AsyncIterator[Delta | End]:
        """The call's events within its limits; its `Attempt` is appended to `log` when it ends.

        Raises `CircuitOpen` without a call while the breaker is open, a `BackendError` when the
        call fails (before or after its first event), `UpstreamRequestError` when the upstream
        refuses the request.
        """
        model = call.model
        if not self.breaker.acquire():
            retry_after = self.breaker.retry_after()
            error = CircuitOpen(
                f"{self.name} is failing; its circuit breaker is open",
                service=self.name,
                model=model.id,
                retry_after=retry_after,
            )
            log.append(
                Attempt(
                    self.name, model.id, error.error_type, error.message, retry_after=retry_after
                )
            )
            raise error
        started = time.perf_counter()
        mode = Mode.THINKING if call.thinking else Mode.INSTANT
        retries = 0

        def counted(error: BackendError) -> None:
            nonlocal retries
            retries += 1
            self.metrics.retries.labels(self.name, error.error_type).inc()

        verdict: AiorchError | None = None
        first_token: float | None = None
        usage: Usage | None = None
        events: AsyncGenerator[Event, None] | None = None
        finished = False
        skipped = [0]  # malformed events passed over, counted where they are skipped
        try:
            events, first = await self._first(call, counted, skipped)
            if call.stream:
                first_token = time.perf_counter() - started
            async for event in self._within_limits(events, first, call, started, skipped):
                if isinstance(event, End):
                    usage = event.usage
                    finished = True
                yield event
        except AiorchError as error:
            verdict = error
            raise
        except Exception as error:  # a defect, not the upstream's doing; recorded all the same
            verdict = AiorchError(f"{self.name} ({model.id}): {type(error).__name__}: {error}")
            raise
        finally:
            if events is not None:
                await events.aclose()
            seconds = time.perf_counter() - started
            outcome = _Outcome(verdict, finished, usage, first_token, retries, skipped[0])
            self._settle(call, mode, seconds, outcome, log)

    async def _first(
        self, call: Call, counted: Callable[[BackendError], None], skipped: list[int]
    ) -> tuple[AsyncGenerator[Event, None], Event]:
        """Open the call and wait for its first event, retrying what may succeed next time."""
        settings = self.settings

        async def opened() -> tuple[AsyncGenerator[Event, None], Event]:
            events = aiter(self.backend.generate(call))
            try:
                first = await anext(events)
                while isinstance(first, Skipped):
                    self._skipped(skipped)
                    first = await anext(events)
            except BaseException:
                await events.aclose()  # type: ignore[attr-defined]
                raise
            return events, first  # type: ignore[return-value]

        limit = settings.timeout
        if call.stream:  # a stream must begin within the time a whole answer may take
            first_limit = settings.first_token_timeout or FIRST_TOKEN_DEFAULT[call.thinking]
            limit = min(first_limit, settings.timeout, settings.stream_timeout)
        try:
            async with asyncio.timeout(limit) as deadline:
                return await call_with_retries(
                    opened,
                    self.retry,
                    self.budget,
                    on_retry=counted,
                    on_budget_exhausted=self.metrics.retry_budget_exhausted.labels(self.name).inc,
                    deadline=deadline.when(),
                )
        except (TimeoutError, StopAsyncIteration) as cause:
            what = "sent nothing" if call.stream else "did not answer"
            if isinstance(cause, StopAsyncIteration):
                raise StreamCut(
                    f"{self.name} ({call.model.id}) closed the call without an answer",
                    service=self.name,
                    model=call.model.id,
                ) from None
            raise BackendTimeout(
                f"{self.name} ({call.model.id}) {what} within {limit:g} s",
                service=self.name,
                model=call.model.id,
            ) from None

    def _skipped(self, skipped: list[int]) -> None:
        skipped[0] += 1
        self.metrics.skipped_events.labels(self.name).inc()

    async def _within_limits(
        self,
        events: AsyncGenerator[Event, None],
        first: Event,
        call: Call,
        started: float,
        skipped: list[int],
    ) -> AsyncIterator[Delta | End]:
        """The first event, then the rest: for a stream, none later than the idle limit after
        the one before, and all within the stream's whole-life limit."""
        event: Event = first
        if not call.stream:  # a plain call's events are all here already
            while True:
                if not isinstance(event, Skipped):
                    yield event
                if isinstance(event, End):
                    return
                event = await anext(events)
        settings = self.settings
        loop = asyncio.get_running_loop()
        end_of_life = loop.time() + settings.stream_timeout - (time.perf_counter() - started)
        silence = Silence(loop, settings.idle_timeout, end_of_life)
        try:
            while True:
                if isinstance(event, Skipped):
                    self._skipped(skipped)
                else:
                    yield event
                    if isinstance(event, End):
                        return
                event = await silence.bounded(anext(events))
        except Silent as quiet:
            limit = (
                f"its {settings.stream_timeout:g} s stream limit"
                if quiet.whole
                else f"{settings.idle_timeout:g} s without an event"
            )
            raise StreamStalled(
                f"{self.name} ({call.model.id}) stream stalled: {limit}",
                service=self.name,
                model=call.model.id,
            ) from None
        except StopAsyncIteration:
            raise StreamCut(
                f"{self.name} ({call.model.id}) stream ended without its end",
                service=self.name,
                model=call.model.id,
            ) from None
        finally:
            silence.close()

    def _settle(
        self, call: Call, mode: Mode, seconds: float, outcome: _Outcome, log: list[Attempt]
    ) -> None:
        """Record the call once: the breaker's verdict, the metrics, the attempt."""
        model = call.model
        error, usage, first_token = outcome.error, outcome.usage, outcome.first_token
        if error is None and not outcome.finished:  # the caller stopped reading: no verdict
            self.breaker.on_release(seconds)
            log.append(Attempt(self.name, model.id, "cancelled", "the caller left", seconds * 1000))
            return
        error_type = None if error is None else error.error_type
        if error is None:
            self.breaker.on_success(seconds)
            self.latency.observe(seconds)
        elif isinstance(error, UpstreamRequestError):
            self.breaker.on_release(seconds)  # the upstream is fine; this request is not
        else:
            self.breaker.on_failure(seconds)
        self.metrics.record_call(
            self.name,
            model.label,
            mode,
            seconds,
            error_type=error_type,
            usage=usage,
            cost_usd=model.cost_usd(usage.prompt_tokens, usage.completion_tokens) if usage else 0.0,
            first_token_seconds=first_token if error is None else None,
        )
        log.append(
            Attempt(
                self.name,
                model.id,
                error_type,
                None if error is None else error.message,
                seconds * 1000,
                None if first_token is None else first_token * 1000,
                outcome.retries,
                getattr(error, "retry_after", None),
                bool(call.prefill),
                outcome.skipped,
            )
        )

    async def probe(self) -> Readiness:
        return await self.backend.probe()

    async def close(self) -> None:
        await self.backend.close()


class Services:
    """Every configured service, guarded, by name. Their breakers' timers and active probes (each
    service's readiness probe) run in a `BreakerSupervisor`, which with a store (Redis,
    `AIORCH_REDIS_URL`) also shares their state with other replicas."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        backends: Mapping[str, Backend],
        store: BreakerStore | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self._by_name: dict[str, GuardedService] = {}
        for name, service in settings.services.items():
            backend = backends[name]
            breaker = CircuitBreaker(
                service.breaker or settings.breaker, on_change=self._reporter(name)
            )
            metrics.set_breaker_state(name, BreakerState.CLOSED.value)
            self._by_name[name] = GuardedService(
                service,
                backend,
                breaker=breaker,
                retry=settings.retry,
                metrics=metrics,
                latency_window=settings.hedge.window,
            )

        self.supervisor = BreakerSupervisor(
            self.breakers(),
            {name: _readiness_probe(service) for name, service in self._by_name.items()},
            store,
            retry_interval=settings.server.redis_retry_interval,
        )
        self.start()  # now, if built in the loop (as the server is)

    def start(self) -> None:
        """Start the breakers' background tasks if an event loop runs here (cheap once on)."""
        if self.supervisor.running:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # not in the loop yet: the first request starts them
        self.supervisor.start()

    def _reporter(self, name: str) -> Callable[[BreakerState], None]:
        return lambda state: self.metrics.set_breaker_state(name, state.value)

    def __getitem__(self, name: str) -> GuardedService:
        return self._by_name[name]

    def all(self) -> list[GuardedService]:
        return list(self._by_name.values())

    def breakers(self) -> dict[str, CircuitBreaker]:
        return {name: s.breaker for name, s in self._by_name.items()}

    async def close(self) -> None:
        await self.supervisor.close()
        await asyncio.gather(*(s.close() for s in self._by_name.values()))


def _readiness_probe(service: GuardedService) -> Probe:
    """A breaker's active probe: the service's readiness probe (cheap and bounded)."""

    async def probe() -> bool:
        return (await service.probe()).ready

    return probe
