"""The three agents. Each renders its prompt from the earlier stages' artefacts, asks the
orchestrator with its own `agent_type` (so `ai_queries_total` counts it) and parses the answer.

An answer from the offline backend is not parsed: no model wrote it. The agent keeps the whole
text as its artefact, marked offline, so a flow still runs end to end for demos and smoke tests
without pretending that a model produced stories, code or a verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiorch.agents.artefacts import (
    Artefact,
    Implementation,
    Requirements,
    Review,
    Story,
    Verdict,
)
from aiorch.agents.parser import (
    Unparseable,
    parse_implementation,
    parse_requirements,
    parse_review,
)
from aiorch.agents.prompts import Prompts
from aiorch.errors import FlowError
from aiorch.orchestrator import AIOrchestrator
from aiorch.types import AgentType, QueryResult, QueryType

STAGE_TITLES: Mapping[AgentType, str] = {
    AgentType.BA: "business analyst",
    AgentType.DEV: "developer",
    AgentType.QA: "QA",
}
OFFLINE_NOTE = "offline: no model is configured, so this stage produced a placeholder"


class UnparseableAnswer(FlowError):
    """The stage's model answered, but not with the artefact it was asked for."""

    def __init__(self, message: str, *, stage: str, result: QueryResult) -> None:
        super().__init__(message, stage=stage)
        self.result = result


@dataclass(frozen=True)
class Inputs:
    """What a stage works from: the feature request and the artefacts of the stages before it."""

    request: str
    artefacts: Mapping[AgentType, Artefact]

    def values(self) -> dict[str, str]:
        requirements = self.artefacts.get(AgentType.BA)
        code = self.artefacts.get(AgentType.DEV)
        criteria = requirements.criteria if isinstance(requirements, Requirements) else []
        return {
            "request": self.request,
            # Without a BA stage (the dev-qa flow) the request itself is the requirement.
            "requirements": requirements.render() if requirements else self.request,
            "criteria": (
                "\n".join(f"- {c}" for c in criteria)
                if criteria
                else "No written criteria: the code must do what the feature request asks."
            ),
            "code": code.render() if code else self.request,
        }


@dataclass(frozen=True)
class Agent:
    stage: AgentType
    query_type: QueryType
    parse: Callable[[str], Artefact]
    placeholder: Callable[[str], Artefact]  # the artefact for an offline answer

    @property
    def title(self) -> str:
        return STAGE_TITLES[self.stage]

    def parses(self, text: str) -> bool:
        """Whether this stage can turn the text into its artefact. An offline placeholder is
        not, so offline stages are not cached either: the offline backend answers at once."""
        try:
            self.parse(text)
        except Exception:  # a parser bug too: better uncached than replayed
            return False
        return True

    async def run(
        self,
        orchestrator: AIOrchestrator,
        prompts: Prompts,
        inputs: Inputs,
        *,
        context: str | None = None,
        use_cache: bool = True,
        tenant: str = "",
        request_id: str | None = None,
    ) -> tuple[QueryResult, Artefact]:
        """Raises `UnparseableAnswer`, or whatever the orchestrator raised (an `AiorchError`)."""
        result = await orchestrator.process_query(
            prompts.render(self.stage, inputs.values()),
            self.query_type,
            agent_type=self.stage,
            context=context,
            use_cache=use_cache,
            tenant=tenant,
            request_id=request_id,
            accept=self.parses,  # an answer this stage cannot use is never cached
        )
        if result.offline:
            return result, self.placeholder(result.answer)
        try:
            return result, self.parse(result.answer)
        except Unparseable as problem:
            raise UnparseableAnswer(
                f"stage {self.stage.value} ({self.title}): could not parse the answer of "
                f"{result.model}: {problem}",
                stage=self.stage.value,
                result=result,
            ) from None


def _offline_requirements(text: str) -> Requirements:
    story = Story(id="US-1", title="Offline placeholder", description=text)
    return Requirements(stories=(story,), notes=OFFLINE_NOTE)


def _offline_implementation(text: str) -> Implementation:
    return Implementation(files=(), notes=f"{OFFLINE_NOTE}.\n\n{text}")


def _offline_review(text: str) -> Review:
    return Review(verdict=Verdict.SKIPPED, reasons=(OFFLINE_NOTE, text))


def default_agents() -> dict[AgentType, Agent]:
    return {
        AgentType.BA: Agent(
            AgentType.BA, QueryType.REQUIREMENTS, parse_requirements, _offline_requirements
        ),
        AgentType.DEV: Agent(
            AgentType.DEV, QueryType.CODE, parse_implementation, _offline_implementation
        ),
        AgentType.QA: Agent(AgentType.QA, QueryType.TESTING, parse_review, _offline_review),
    }
