"""The flow runner: stages in order, each artefact handed on, every stage's outcome kept.

A flow is a named list of stages from `Settings.flows` (`ba-dev-qa`, `dev-qa`, or the operator's
own). `FlowRunner.events` yields a `FlowStarted`, then a `StageStarted` and a `StageResult` per
stage, then the `FlowResult`; `FlowRunner.run` returns only the result. A stage that fails stops
the flow, and the result still holds every stage that completed, the failed stage (with the
model's unparseable answer, when there was one) and an error that names the stage.

Metrics: `ai_flow_runs_total{flow,status}` (status: completed, failed, or cancelled when the
consumer stopped listening mid-flow) and
`ai_flow_stage_duration_seconds{flow,stage}`. Flow names come from the configuration only:
an unknown name is refused before anything is recorded.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import AsyncGenerator, Mapping
from typing import Literal

import msgspec

from aiorch.agents.artefacts import Artefact, Review, Verdict
from aiorch.agents.prompts import Prompts
from aiorch.agents.roles import Agent, Inputs, UnparseableAnswer, default_agents
from aiorch.errors import AiorchError, AllBackendsFailed, NotFound, RequestError, http_status
from aiorch.orchestrator import AIOrchestrator
from aiorch.types import AgentType, Attempt, Fallback, QueryResult, Usage

logger = logging.getLogger(__name__)

FlowStatus = Literal["completed", "failed"]
StageStatus = Literal["completed", "failed"]


class StageError(msgspec.Struct, frozen=True, kw_only=True):
    """Shaped like an OpenAI error object, plus the stage; `code` is the cause's error type."""

    type: str = "flow_error"
    message: str
    stage: str
    code: str
    status: int = 502  # the HTTP status this failure maps to
    attempts: tuple[Attempt, ...] = ()


class StageResult(msgspec.Struct, frozen=True, kw_only=True):
    stage: AgentType
    status: StageStatus
    duration_ms: float
    artefact: Artefact | None = None
    answer: str | None = None  # the model's text, kept even when it could not be parsed
    model: str | None = None
    selected_service: str | None = None
    cached: bool = False
    fallback: Fallback | None = None
    usage: Usage = Usage()
    latency_ms: float | None = None  # the orchestrator's own figure for the query
    offline: bool = False
    request_id: str = ""
    attempts: tuple[Attempt, ...] = ()
    error: StageError | None = None


class FlowResult(msgspec.Struct, frozen=True, kw_only=True):
    flow: str
    status: FlowStatus
    request_id: str
    stages: tuple[StageResult, ...]
    error: StageError | None = None
    verdict: Verdict | None = None  # the QA stage's, when one completed
    offline: bool = False  # some stage was answered by the offline backend
    duration_ms: float = 0.0
    usage: Usage = Usage()

    @property
    def http_status(self) -> int:
        return 200 if self.error is None else self.error.status


class FlowStarted(msgspec.Struct, frozen=True, kw_only=True):
    flow: str
    request_id: str
    stages: tuple[AgentType, ...]


class StageStarted(msgspec.Struct, frozen=True, kw_only=True):
    stage: AgentType
    index: int  # 0-based position in the flow


FlowEvent = FlowStarted | StageStarted | StageResult | FlowResult


class FlowRunner:
    def __init__(
        self,
        orchestrator: AIOrchestrator,
        *,
        prompts: Prompts | None = None,
        agents: Mapping[AgentType, Agent] | None = None,
    ) -> None:
        self.orchestrator = orchestrator
        self.prompts = prompts if prompts is not None else Prompts.from_env()
        self.agents = dict(agents) if agents is not None else default_agents()
        self.flows: dict[str, tuple[AgentType, ...]] = {
            name: tuple(AgentType(stage) for stage in spec.stages)
            for name, spec in orchestrator.settings.flows.items()
        }

    def stages(self, flow: str) -> tuple[AgentType, ...]:
        stages = self.flows.get(flow)
        if stages is None:
            shown = flow if len(flow) <= 60 else flow[:60] + "..."
            raise NotFound(
                f"no flow named {shown!r}; configured flows: {', '.join(sorted(self.flows))}",
                param="flow",
            )
        return stages

    async def run(
        self,
        flow: str,
        request: str,
        *,
        context: str | None = None,
        use_cache: bool = True,
        tenant: str = "",
        request_id: str | None = None,
    ) -> FlowResult:
        events = self.events(
            flow,
            request,
            context=context,
            use_cache=use_cache,
            tenant=tenant,
            request_id=request_id,
        )
        async with contextlib.aclosing(events):
            async for event in events:
                if isinstance(event, FlowResult):
                    return event
        raise AssertionError("a flow always ends with its result")  # pragma: no cover

    async def events(
        self,
        flow: str,
        request: str,
        *,
        context: str | None = None,
        use_cache: bool = True,
        tenant: str = "",
        request_id: str | None = None,
    ) -> AsyncGenerator[FlowEvent, None]:
        """Raises `NotFound` for an unknown flow and `RequestError` for an empty request,
        before the first event; any stage failure ends up in the `FlowResult` instead."""
        stages = self.stages(flow)
        if not isinstance(request, str) or not request.strip():
            raise RequestError("the feature request must be a non-empty string", param="request")
        # Stage queries get "<flow id>-<stage>" as their request ids, for the logs.
        flow_id = request_id or f"flow-{os.urandom(8).hex()}"
        started = time.perf_counter()
        metrics = self.orchestrator.metrics
        done: list[StageResult] = []
        artefacts: dict[AgentType, Artefact] = {}
        recorded = False
        try:
            yield FlowStarted(flow=flow, request_id=flow_id, stages=stages)
            for index, stage in enumerate(stages):
                yield StageStarted(stage=stage, index=index)
                stage_started = time.perf_counter()
                outcome = await self._stage(
                    stage,
                    Inputs(request, dict(artefacts)),
                    context,
                    use_cache,
                    tenant,
                    f"{flow_id}-{stage.value}",
                )
                seconds = time.perf_counter() - stage_started
                metrics.flow_stage_duration.labels(flow, stage.value).observe(seconds)
                outcome = msgspec.structs.replace(outcome, duration_ms=round(seconds * 1000, 3))
                done.append(outcome)
                yield outcome
                if outcome.status == "failed":
                    break
                if outcome.artefact is not None:
                    artefacts[stage] = outcome.artefact
            result = _result(flow, flow_id, done, time.perf_counter() - started)
            # Recorded before the last yield: a consumer may stop iterating once it has it.
            metrics.flow_runs.labels(flow, result.status).inc()
            recorded = True
            yield result
        finally:
            if not recorded:  # the consumer went away (a client disconnected) mid-flow
                metrics.flow_runs.labels(flow, "cancelled").inc()

    async def _stage(
        self,
        stage: AgentType,
        inputs: Inputs,
        context: str | None,
        use_cache: bool,
        tenant: str,
        request_id: str,
    ) -> StageResult:
        agent = self.agents[stage]
        try:
            result, artefact = await agent.run(
                self.orchestrator,
                self.prompts,
                inputs,
                context=context,
                use_cache=use_cache,
                tenant=tenant,
                request_id=request_id,
            )
        except UnparseableAnswer as error:
            return _from_query(
                stage,
                "failed",
                error.result,
                None,
                StageError(message=error.message, stage=stage.value, code="parse_error"),
            )
        except AiorchError as error:
            attempts = error.attempts if isinstance(error, AllBackendsFailed) else ()
            failure = StageError(
                message=f"stage {stage.value} ({agent.title}) failed: {error.message}",
                stage=stage.value,
                code=error.error_type,
                status=http_status(error) if isinstance(error, AllBackendsFailed) else 502,
                attempts=attempts,
            )
            return StageResult(
                stage=stage,
                status="failed",
                duration_ms=0.0,
                request_id=request_id,
                attempts=attempts,
                error=failure,
            )
        except Exception as error:
            # A bug of ours, e.g. in the parser, must not lose the stages already done.
            logger.exception("stage %s of flow request %s crashed", stage.value, request_id)
            failure = StageError(
                message=f"stage {stage.value} ({agent.title}) failed: internal error "
                f"({type(error).__name__})",
                stage=stage.value,
                code="internal",
            )
            return StageResult(
                stage=stage,
                status="failed",
                duration_ms=0.0,
                request_id=request_id,
                error=failure,
            )
        return _from_query(stage, "completed", result, artefact, None)


def _from_query(
    stage: AgentType,
    status: StageStatus,
    result: QueryResult,
    artefact: Artefact | None,
    error: StageError | None,
) -> StageResult:
    return StageResult(
        stage=stage,
        status=status,
        duration_ms=0.0,
        artefact=artefact,
        answer=result.answer,
        model=result.model,
        selected_service=result.selected_service,
        cached=result.cached,
        fallback=result.fallback,
        usage=result.usage,
        latency_ms=result.latency_ms,
        offline=result.offline,
        request_id=result.request_id,
        attempts=result.attempts,
        error=error,
    )


def _result(flow: str, flow_id: str, stages: list[StageResult], seconds: float) -> FlowResult:
    failed = next((s for s in stages if s.status == "failed"), None)
    reviews = [s.artefact for s in stages if isinstance(s.artefact, Review)]
    return FlowResult(
        flow=flow,
        status="failed" if failed else "completed",
        request_id=flow_id,
        stages=tuple(stages),
        error=failed.error if failed else None,
        verdict=reviews[-1].verdict if reviews else None,
        offline=any(s.offline for s in stages),
        duration_ms=round(seconds * 1000, 3),
        usage=sum((s.usage for s in stages), Usage()),
    )
