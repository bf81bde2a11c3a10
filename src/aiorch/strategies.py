"""How a route's models are asked: a chain with fallbacks (hedged when configured) that rescues a
broken stream on the next model, or a fan-out that asks several at once.

A strategy yields `Started` once a model's first output arrives (who answers), the `Delta`s, and
one `Ended` with the facts of the run (usage, every attempt, the fallback taken). Errors before
any output move on to the next model; request errors (an upstream 4xx) never do. After output a
stream can only be continued: the text so far goes to the next model as an assistant prefill,
where that model can continue an answer, and only the continuation is passed on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

import msgspec

from aiorch.answer import Delta, End
from aiorch.backends import Call
from aiorch.errors import (
    AllBackendsFailed,
    BackendError,
    StreamInterrupted,
    StreamStalled,
    UpstreamRequestError,
)
from aiorch.hedging import hedged
from aiorch.models import Model
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.request import ChatRequest
from aiorch.services import GuardedService, Services
from aiorch.timing import Timeline
from aiorch.types import Attempt, BackendKind, Fallback, Usage

# Attempt errors that mean "try later" rather than "broken": all of them gives 503.
UNAVAILABLE = frozenset({"circuit_open", "overloaded", "rate_limited", "quota_exceeded"})
HEDGED = "hedged"  # the fallback reason when a hedge, not a failure, moved the query on


class Started(msgspec.Struct, frozen=True):
    """The first output of a run has arrived: who answers."""

    service: str
    model: str
    fallback: Fallback | None
    offline: bool
    adjustments: tuple[str, ...] = ()


class Ended(msgspec.Struct, frozen=True, kw_only=True):
    """A run is over: what it cost and how it went."""

    service: str
    model: str
    labels: tuple[str, ...]  # the `model` label of each model that answered
    usage: Usage
    attempts: tuple[Attempt, ...]
    fallback: Fallback | None = None
    adjustments: tuple[str, ...] = ()
    offline: bool = False
    answers: dict[str, str] | None = None


RunEvent = Started | Delta | Ended


class _Progress:
    """What a run has passed on so far: enough to know whether and how it can be continued."""

    __slots__ = ("output", "rescuable", "text")

    def __init__(self) -> None:
        self.output = False
        self.text: list[str] = []
        self.rescuable = True  # only a single text answer can be continued

    def add(self, delta: Delta) -> None:
        if delta.has_output:
            self.output = True
        if delta.index != 0 or delta.tool_calls or delta.refusal:
            self.rescuable = False
        elif delta.content:
            self.text.append(delta.content)


class _Run:
    """What one chain run has done so far."""

    def __init__(
        self,
        targets: tuple[Model, ...],
        request: ChatRequest,
        request_id: str,
        timeline: Timeline | None,
    ) -> None:
        self.targets = targets
        self.request = request
        self.request_id = request_id
        self.timeline = timeline
        self.index = 0
        self.log: list[Attempt] = []
        self.notes: list[str] = []
        self.fallback: Fallback | None = None
        self.progress = _Progress()
        self.started = False  # a `Started` went out
        self.broken: BackendError | None = None  # the failure a continuation is rescuing
        self.done = False


class Chain:
    """Each model of the route in turn until one answers."""

    def __init__(
        self,
        services: Services,
        metrics: Metrics,
        hedge_delay: HedgeDelay | None,
        on_refusal: Callable[[Model, str | None], tuple[Model, ...]] = lambda m, code: (),
    ) -> None:
        self.services = services
        self.metrics = metrics
        self.hedge_delay = hedge_delay
        self.on_refusal = on_refusal  # the models a configuration names for an upstream 4xx

    async def run(
        self,
        targets: Sequence[Model],
        request: ChatRequest,
        request_id: str,
        timeline: Timeline | None = None,
    ) -> AsyncIterator[RunEvent]:
        state = _Run(tuple(targets), request, request_id, timeline)
        while state.index < len(state.targets):
            model = state.targets[state.index]
            service = self.services[model.service]
            if state.broken is not None and state.progress.text and not service.can_continue(model):
                state.index += 1
                continue
            delay = self._hedge_delay(state, service)
            if delay is not None:
                async for event in self._hedged_step(state, delay):
                    yield event
                if state.done:
                    return
                continue
            try:
                async for event in self._attempt(state, service, model):
                    yield event
                return
            except UpstreamRequestError as error:
                self._refused(state, service, model, error)
            except BackendError as error:
                self._failed(state, model, error)
        if state.broken is not None:
            raise _interrupted(state.broken)
        raise all_failed(state.log)

    async def _attempt(
        self, state: _Run, service: GuardedService, model: Model
    ) -> AsyncIterator[RunEvent]:
        """One model asked: its events, then `Ended`; raises what the call raised."""
        prefill = "".join(state.progress.text) if state.broken is not None else ""
        call = self._call(
            service, model, state.request, state.request_id, prefill, state.notes, state.timeline
        )
        end: End | None = None
        async for event in service.generate(call, state.log):
            if isinstance(event, End):
                end = event
                continue
            if not state.started:
                state.started = True
                offline = _offline(service)
                yield Started(model.service, model.id, state.fallback, offline, tuple(state.notes))
            state.progress.add(event)
            yield event
        assert end is not None
        yield self._ended(model, end, state.log, state.fallback, state.notes)

    def _refused(
        self, state: _Run, service: GuardedService, model: Model, error: UpstreamRequestError
    ) -> None:
        """An upstream 4xx: passed on, unless the configuration names models for its code; in a
        continuation, the next model declined to continue (a 400 to the prefill)."""
        if state.broken is None:
            instead = self.on_refusal(model, error.code)
            if not instead or state.progress.output:
                raise error  # the request itself is refused: another model would refuse it too
            self._move(state, model, instead[0], "upstream_request_error")
            state.targets = (*state.targets[: state.index + 1], *instead)
        elif error.code != "context_length_exceeded":
            # Remember, move on, and if none can continue, report the failure that broke the
            # stream, not this refusal.
            service.no_prefill.add(model.id)
        state.index += 1

    def _failed(self, state: _Run, model: Model, error: BackendError) -> None:
        """A failure: before any output, the next model answers; after it, a stream is
        continued where it broke off (or ends in an explicit error)."""
        if state.progress.output:
            if not state.request.stream or not state.progress.rescuable:
                raise _interrupted(state.broken or error) from None
            state.broken = state.broken or error
            reason = "stream_stall" if isinstance(error, StreamStalled) else "stream_cut"
        else:
            reason = error.error_type
        following = _next(state.targets, state.index)
        if following is not None:
            self._move(state, model, following, reason)
        state.index += 1

    def _move(self, state: _Run, source: Model, target: Model, reason: str) -> None:
        self.metrics.fallbacks.labels(source.service, target.service, reason).inc()
        state.fallback = _moved(state.fallback, source, target, reason)

    def _hedge_delay(self, state: _Run, service: GuardedService) -> float | None:
        if (
            state.request.stream
            or self.hedge_delay is None
            or state.index + 1 >= len(state.targets)
        ):
            return None
        return self.hedge_delay(service)

    async def _hedged_step(self, state: _Run, delay: float) -> AsyncIterator[RunEvent]:
        """The model at `index`, hedged with the next one; the pair is passed either way."""
        model, backup = state.targets[state.index], state.targets[state.index + 1]
        outcome = await self._hedged(
            model, backup, state.request, state.request_id, delay, state.log, state.notes
        )
        state.index += 2
        if outcome is None:
            return
        winner, deltas, last = outcome
        if winner is not model:
            self._move(state, model, winner, HEDGED)
        offline = _offline(self.services[winner.service])
        yield Started(winner.service, winner.id, state.fallback, offline, tuple(state.notes))
        for delta in deltas:
            yield delta
        yield self._ended(winner, last, state.log, state.fallback, state.notes)
        state.done = True

    def _call(
        self,
        service: GuardedService,
        model: Model,
        request: ChatRequest,
        request_id: str,
        prefill: str,
        notes: list[str],
        timeline: Timeline | None = None,
    ) -> Call:
        prepared = service.prepare(model, request)
        notes.extend(n for n in prepared.adjustments if n not in notes)
        return Call(
            request=prepared.request,
            model=model,
            thinking=prepared.thinking,
            max_tokens=prepared.max_tokens,
            stream=request.stream,
            request_id=request_id,
            prefill=prefill,
            timeline=timeline,
        )

    def _ended(
        self,
        model: Model,
        end: End,
        log: list[Attempt],
        fallback: Fallback | None,
        notes: list[str],
    ) -> Ended:
        """The facts of a run. After a continuation, usage is the last call's: the tokens of a
        call that broke off are not reported by its upstream."""
        service = self.services[model.service]
        skipped = sum(a.skipped_events for a in log)
        if skipped:
            notes = [*notes, f"{skipped} malformed upstream event(s) skipped; the answer went on"]
        return Ended(
            service=model.service,
            model=end.model or model.id,
            labels=(model.label,),
            usage=end.usage,
            attempts=tuple(log),
            fallback=fallback,
            adjustments=tuple(notes),
            offline=_offline(service),
        )

    async def _hedged(
        self,
        first: Model,
        second: Model,
        request: ChatRequest,
        request_id: str,
        delay: float,
        log: list[Attempt],
        notes: list[str],
    ) -> tuple[Model, list[Delta], End] | None:
        """Ask `first`; if it has not answered after `delay`, ask `second` too; the first answer
        wins. None if neither answered."""

        async def ask(model: Model) -> tuple[Model, list[Delta], End] | BackendError:
            service = self.services[model.service]
            call = self._call(service, model, request, request_id, "", notes)
            deltas: list[Delta] = []
            try:
                async for event in service.generate(call, log):
                    if isinstance(event, End):
                        return model, deltas, event
                    deltas.append(event)
            except BackendError as error:
                return error
            raise AssertionError("a call ended without End")

        outcomes = await hedged(
            lambda: ask(first),
            lambda: ask(second),
            delay,
            lambda o: not isinstance(o, BackendError),
        )
        for outcome in outcomes:
            if not isinstance(outcome, BackendError):
                return outcome
        return None


class HedgeDelay:
    """When to hedge a call to a service: its recent latency quantile, once enough is known."""

    def __init__(self, quantile: float, min_samples: int, min_delay: float) -> None:
        self.quantile = quantile
        self.min_samples = min_samples
        self.min_delay = min_delay

    def __call__(self, service: GuardedService) -> float | None:
        recent = service.latency
        if len(recent) < self.min_samples:
            return None
        value = recent.quantile(self.quantile)
        return None if value is None else max(self.min_delay, value)


class FanOut:
    """Every model at once, each without fallback; answered by whichever succeed, merged."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain

    async def run(
        self,
        targets: Sequence[Model],
        request: ChatRequest,
        request_id: str,
        timeline: Timeline | None = None,
    ) -> AsyncIterator[RunEvent]:
        plain = request.set(stream=False)
        outcomes = await asyncio.gather(
            *(self._one(model, plain, request_id) for model in targets), return_exceptions=True
        )
        attempts: list[Attempt] = []
        answered: list[tuple[Model, str, Ended]] = []
        for model, outcome in zip(targets, outcomes, strict=True):
            if isinstance(outcome, AllBackendsFailed):
                attempts.extend(outcome.attempts)
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                text, ended = outcome
                attempts.extend(ended.attempts)
                answered.append((model, text, ended))
        if not answered:
            raise all_failed(attempts)
        answers = {m.service: text for m, text, _ in answered}
        first = answered[0][2]
        yield Started(first.service, first.model, None, first.offline, first.adjustments)
        yield Delta(content=merge_answers(self.chain.services, answers), finish_reason="stop")
        yield Ended(
            service=first.service,
            model="+".join(e.model for _, _, e in answered),
            labels=tuple(label for _, _, e in answered for label in e.labels),
            usage=sum((e.usage for _, _, e in answered), Usage()),
            attempts=tuple(attempts),
            adjustments=tuple(n for _, _, e in answered for n in e.adjustments),
            offline=all(e.offline for _, _, e in answered),
            answers=answers,
        )

    async def _one(self, model: Model, request: ChatRequest, request_id: str) -> tuple[str, Ended]:
        text: list[str] = []
        async for event in self.chain.run((model,), request, request_id):
            if isinstance(event, Delta):
                if event.index == 0:
                    text.append(event.content)
            elif isinstance(event, Ended):
                return "".join(text), event
        raise AssertionError("a run ended without Ended")


def merge_answers(services: Services, answers: dict[str, str]) -> str:
    """One text from several services' answers, each under its service's name."""
    if len(answers) == 1:
        return next(iter(answers.values()))
    return "\n\n".join(
        f"## {services[name].settings.display_name}\n\n{text}" for name, text in answers.items()
    )


def all_failed(attempts: Sequence[Attempt]) -> AllBackendsFailed:
    kinds = {a.error_type for a in attempts}
    status = 504 if kinds <= {"timeout", "stream_stall"} else 503 if kinds <= UNAVAILABLE else 502
    detail = "; ".join(f"{a.service} ({a.model}): {a.message}" for a in attempts)
    return AllBackendsFailed(f"every backend failed: {detail}", attempts, status)


def _interrupted(error: BackendError) -> StreamInterrupted:
    return StreamInterrupted(
        f"the answer broke off and could not be continued: {error.message}",
        service=error.service,
        model=error.model,
    )


def _moved(fallback: Fallback | None, source: Model, target: Model, reason: str) -> Fallback:
    if fallback is None:
        return Fallback(source.service, target.service, reason)
    return msgspec.structs.replace(fallback, to_service=target.service)


def _next(targets: Sequence[Model], index: int) -> Model | None:
    return targets[index + 1] if index + 1 < len(targets) else None


def _offline(service: GuardedService) -> bool:
    return service.settings.kind is BackendKind.OFFLINE
