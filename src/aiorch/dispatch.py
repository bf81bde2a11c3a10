"""Calling backends: the deadline, retries, breaker and metrics of one call, and fallback chains.

Every backend call the orchestrator makes goes through `Dispatcher`, so that each is measured,
bounded and recorded the same way whether it answers a query, a stream or one half of a
multi-service query. A failed chain reports every attempt's error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import NamedTuple

import msgspec

from aiorch.backends import Backend
from aiorch.config import Settings
from aiorch.errors import (
    AllBackendsFailed,
    BackendError,
    BackendStatusError,
    BackendTimeout,
    CircuitOpen,
    StreamInterrupted,
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
from aiorch.shared_breakers import SYNC_INTERVAL, BreakerStore, BreakerSync
from aiorch.types import (
    Attempt,
    Completion,
    CompletionRequest,
    Fallback,
    Mode,
    Service,
    StreamChunk,
    Usage,
)

# Attempt errors that mean "try later" rather than "broken": all of them gives 503.
UNAVAILABLE = frozenset({"circuit_open", "overloaded", "rate_limited", "quota_exceeded"})
REQUEST_SPECIFIC_STATUSES = frozenset({400, 413, 422})
# The fallback reason when a hedge, not a failure, moved the query on (in ERROR_TYPES, the
# closed set of `reason` label values).
HEDGED = "hedged"


class Answer(msgspec.Struct, frozen=True):
    completion: Completion
    service: Service
    fallback: Fallback | None
    attempts: tuple[Attempt, ...]
    backend_seconds: float
    answers: dict[str, str] | None = None  # per service, for multi-service answers


class _Tried(NamedTuple):
    """One finished call of a chain: its completion or its error."""

    service: Service
    completion: Completion | None
    error: BackendError | None
    started: float


class Dispatcher:
    """Calls backends; with a `breaker_store`, its breakers are shared with other replicas."""

    def __init__(
        self,
        settings: Settings,
        backends: Mapping[Service, Backend],
        metrics: Metrics,
        breaker_store: BreakerStore | None = None,
        *,
        sync_interval: float = SYNC_INTERVAL,
    ) -> None:
        self.settings = settings
        self.backends = backends
        self.metrics = metrics
        self.breakers = {
            s: CircuitBreaker(settings.breaker, on_change=self._breaker_reporter(s))
            for s in Service
        }
        self.breaker_sync: BreakerSync | None = None
        if breaker_store is not None:
            shared = {s.value: b for s, b in self.breakers.items()}
            self.breaker_sync = BreakerSync(breaker_store, shared, interval=sync_interval)
            self.breaker_sync.ensure_running()  # now, if built in the loop (as the server is)
        self.budgets = {
            s: RetryBudget(settings.retry.budget_ratio, settings.retry.budget_window)
            for s in Service
        }
        self.latency = {s: LatencyWindow(settings.hedge.window) for s in Service}
        for service in Service:
            metrics.set_breaker_state(service, BreakerState.CLOSED.value)

    def _breaker_reporter(self, service: Service) -> Callable[[BreakerState], None]:
        return lambda state: self.metrics.set_breaker_state(service, state.value)

    def _admit(self, service: Service) -> None:
        """Raise `CircuitOpen` unless the service's breaker lets a call through now."""
        if self.breaker_sync is not None:
            self.breaker_sync.ensure_running()  # a no-op once running; else it starts here
        breaker = self.breakers[service]
        if not breaker.allow():
            remaining = breaker.open_remaining()
            raise CircuitOpen(
                f"{service.value} is failing; its circuit breaker is open",
                service=service.value,
                model=self.backends[service].settings.model_id,
                retry_after=remaining if remaining > 0 else None,
            )

    async def close(self) -> None:
        """Stop sharing breaker state and close the store."""
        if self.breaker_sync is not None:
            await self.breaker_sync.close()

    def mode(self, service: Service, request: CompletionRequest) -> Mode:
        thinking = request.thinking
        if thinking is None:
            thinking = self.settings.backend(service).thinking
        return Mode.THINKING if thinking else Mode.INSTANT

    async def call(self, service: Service, request: CompletionRequest) -> Completion:
        """One backend, with its deadline, retries and breaker; raises a `BackendError`."""
        backend = self.backends[service]
        settings = backend.settings
        self._admit(service)
        breaker = self.breakers[service]
        mode = self.mode(service, request)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(settings.timeout) as deadline:
                completion = await call_with_retries(
                    lambda: backend.complete(request),
                    self.settings.retry,
                    self.budgets[service],
                    on_retry=self._retry_counter(service),
                    on_budget_exhausted=self.metrics.retry_budget_exhausted.labels(
                        service.value
                    ).inc,
                    deadline=deadline.when(),
                )
        except TimeoutError:
            error: BackendError = BackendTimeout(
                f"{service.value} ({settings.model_id}) did not answer within its "
                f"{settings.timeout:g} s deadline",
                service=service.value,
                model=settings.model_id,
            )
            self._failed(service, mode, started, error)
            raise error from None
        except BackendError as error:
            self._failed(service, mode, started, error)
            raise
        except asyncio.CancelledError:
            breaker.release()  # the caller left: no verdict on the backend
            raise
        breaker.record_success()
        seconds = time.perf_counter() - started
        self.latency[service].observe(seconds)
        self._succeeded(service, mode, seconds, completion.usage, None)
        return completion

    def _retry_counter(self, service: Service) -> Callable[[BackendError], None]:
        return lambda error: self.metrics.retries.labels(service.value, error.error_type).inc()

    def _failed(self, service: Service, mode: Mode, started: float, error: BackendError) -> None:
        if says_backend_is_failing(error):
            self.breakers[service].record_failure()
        else:
            self.breakers[service].release()
        self.metrics.record_backend_error(
            service,
            self.backends[service].settings.model_id,
            mode,
            time.perf_counter() - started,
            error.error_type,
        )

    def _succeeded(
        self,
        service: Service,
        mode: Mode,
        seconds: float,
        usage: Usage | None,
        first_token: float | None,
    ) -> None:
        settings = self.backends[service].settings
        cost = settings.cost_usd(usage.prompt_tokens, usage.completion_tokens) if usage else 0.0
        self.metrics.record_backend_call(
            service, settings.model_id, mode, seconds, usage, cost, first_token
        )

    async def chain(self, route: Route, request: CompletionRequest) -> Answer:
        """Each service of the route in turn until one answers (hedged, when configured)."""
        attempts: list[Attempt] = []
        fallback: Fallback | None = None
        started = time.perf_counter()
        services = route.services
        index = 0
        while index < len(services):
            tried, hedge = await self._step(route, index, request)
            for t in tried:
                attempts.append(self._attempt(t.service, t.error, t.started))
                if t.error is not None:
                    if not (hedge and t.service is services[index]):  # a hedge counted it
                        position = services.index(t.service)
                        fallback = fallback or self._fall_back(route, position, t.error)
                    continue
                assert t.completion is not None
                if fallback is not None:
                    fallback = Fallback(fallback.from_service, t.service, fallback.reason)
                elif t.service is not services[index]:  # the hedge answered first
                    fallback = Fallback(services[index], t.service, HEDGED)
                return Answer(
                    t.completion,
                    t.service,
                    fallback,
                    tuple(attempts),
                    time.perf_counter() - started,
                )
            index += 2 if hedge else 1
        raise all_failed(attempts)

    async def _try(self, service: Service, request: CompletionRequest) -> _Tried:
        started = time.perf_counter()
        try:
            return _Tried(service, await self.call(service, request), None, started)
        except BackendError as error:
            return _Tried(service, None, error, started)

    async def _step(
        self, route: Route, index: int, request: CompletionRequest
    ) -> tuple[list[_Tried], bool]:
        """Call the route's service at `index`, hedged with the next one if that is on.

        Returns what finished, and whether the hedge was started.
        """
        service = route.services[index]
        delay = self._hedge_delay(service) if index + 1 < len(route.services) else None
        if delay is None:
            return [await self._try(service, request)], False
        backup = route.services[index + 1]
        started = False

        async def second() -> _Tried:
            nonlocal started
            started = True
            self.metrics.fallbacks.labels(service.value, backup.value, HEDGED).inc()
            return await self._try(backup, request)

        tried = await hedged(
            lambda: self._try(service, request), second, delay, lambda t: t.error is None
        )
        return tried, started

    def _hedge_delay(self, service: Service) -> float | None:
        """The service's recent p95 (or the configured quantile), once enough is known."""
        hedge = self.settings.hedge
        recent = self.latency[service]
        if not hedge.enabled or len(recent) < hedge.min_samples:
            return None
        quantile = recent.quantile(hedge.quantile)
        return None if quantile is None else max(hedge.min_delay, quantile)

    def _fall_back(self, route: Route, index: int, error: BackendError) -> Fallback | None:
        """Count the move to the next service, if there is one."""
        if index + 1 >= len(route.services):
            return None
        source, target = route.services[index], route.services[index + 1]
        self.metrics.fallbacks.labels(source.value, target.value, error.error_type).inc()
        return Fallback(source, target, error.error_type)

    def _attempt(self, service: Service, error: BackendError | None, started: float) -> Attempt:
        return Attempt(
            service=service,
            model=self.backends[service].settings.model_id,
            error_type=error.error_type if error else None,
            message=error.message if error else None,
            latency_ms=(time.perf_counter() - started) * 1000,
            retry_after=error.retry_after if error else None,
        )

    async def stream(
        self, route: Route, request: CompletionRequest
    ) -> AsyncIterator[tuple[Service, Fallback | None] | StreamChunk]:
        """Fall back while nothing has been sent; once a chunk is out, a failure is final.

        Yields `(service, fallback)` once the first chunk has arrived, then the chunks.
        """
        attempts: list[Attempt] = []
        fallback: Fallback | None = None
        for index, service in enumerate(route.services):
            call_started = time.perf_counter()
            try:
                chunks, first, end = await self._open(service, request)
            except BackendError as error:
                attempts.append(self._attempt(service, error, call_started))
                fallback = fallback or self._fall_back(route, index, error)
                continue
            if fallback is not None:
                fallback = Fallback(fallback.from_service, service, fallback.reason)
            yield service, fallback
            async for item in self._relay(service, request, chunks, first, call_started, end):
                yield item
            return
        raise all_failed(attempts)

    async def _open(
        self, service: Service, request: CompletionRequest
    ) -> tuple[AsyncIterator[StreamChunk], StreamChunk, float]:
        """Start a stream and wait for its first chunk, within the first-token deadline.

        Returns the chunks, the first one, and the loop time by which the stream must end.
        """
        backend = self.backends[service]
        settings = backend.settings
        self._admit(service)
        breaker = self.breakers[service]
        limit = min(settings.first_token_timeout or settings.timeout, settings.timeout)
        started = time.perf_counter()
        end = asyncio.get_running_loop().time() + settings.timeout

        async def first_chunk() -> tuple[AsyncIterator[StreamChunk], StreamChunk]:
            chunks = aiter(backend.stream(request))
            try:
                return chunks, await anext(chunks)
            except BaseException:
                await chunks.aclose()  # type: ignore[attr-defined]
                raise

        try:
            async with asyncio.timeout(limit) as deadline:
                chunks, first = await call_with_retries(
                    first_chunk,
                    self.settings.retry,
                    self.budgets[service],
                    on_retry=self._retry_counter(service),
                    on_budget_exhausted=self.metrics.retry_budget_exhausted.labels(
                        service.value
                    ).inc,
                    deadline=deadline.when(),
                )
        except (TimeoutError, StopAsyncIteration) as cause:
            error: BackendError = (
                BackendTimeout(
                    f"{service.value} ({settings.model_id}) sent no token within {limit:g} s",
                    service=service.value,
                    model=settings.model_id,
                )
                if isinstance(cause, TimeoutError)
                else StreamInterrupted(
                    f"{service.value} ({settings.model_id}) closed the stream without an answer",
                    service=service.value,
                    model=settings.model_id,
                )
            )
            self._failed(service, self.mode(service, request), started, error)
            raise error from None
        except BackendError as error:
            self._failed(service, self.mode(service, request), started, error)
            raise
        except asyncio.CancelledError:
            breaker.release()
            raise
        # A first token proves the backend alive; a half-open breaker need not wait for the end.
        breaker.record_success()
        return chunks, first, end

    async def _relay(
        self,
        service: Service,
        request: CompletionRequest,
        chunks: AsyncIterator[StreamChunk],
        first: StreamChunk,
        started: float,
        deadline: float,
    ) -> AsyncIterator[StreamChunk]:
        """The rest of the stream, within the total deadline counted from the request."""
        settings = self.backends[service].settings
        mode = self.mode(service, request)
        first_token = time.perf_counter() - started
        usage: Usage | None = first.usage
        yield first
        try:
            while True:
                # The deadline applies to each wait, never to the consumer's own work.
                async with asyncio.timeout_at(deadline):
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                if chunk.usage is not None:
                    usage = chunk.usage
                yield chunk
        except (BackendError, TimeoutError) as cause:
            error = StreamInterrupted(
                f"{service.value} ({settings.model_id}) failed mid-stream: "
                + (cause.message if isinstance(cause, BackendError) else "deadline exceeded"),
                service=service.value,
                model=settings.model_id,
            )
            self._failed(service, mode, started, error)
            raise error from None
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        self._succeeded(service, mode, time.perf_counter() - started, usage, first_token)


def says_backend_is_failing(error: BackendError) -> bool:
    """Whether an error counts against the backend's breaker.

    An upstream 400, 413 or 422 is about this one request (too long, bad parameters): a client
    sending such requests must not open the breaker for everyone else.
    """
    if isinstance(error, BackendStatusError):
        return error.upstream_status not in REQUEST_SPECIFIC_STATUSES
    return True


def all_failed(attempts: list[Attempt]) -> AllBackendsFailed:
    kinds = {a.error_type for a in attempts}
    status = 504 if kinds == {"timeout"} else 503 if kinds <= UNAVAILABLE else 502
    detail = "; ".join(f"{a.service.value}: {a.message}" for a in attempts)
    return AllBackendsFailed(f"every backend failed: {detail}", attempts, status)
