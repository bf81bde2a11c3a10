"""The flow runner over a real orchestrator with scripted backends (pure logic, no network)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from aiorch.agents import (
    FlowResult,
    FlowRunner,
    FlowStarted,
    Implementation,
    Requirements,
    Review,
    StageResult,
    StageStarted,
    Verdict,
    default_agents,
)
from aiorch.answer import Delta, End, Event
from aiorch.backends import Call, Readiness
from aiorch.config import RetrySettings, Settings, load_settings
from aiorch.errors import BackendOverloaded, NotFound, RequestError, UnsupportedParameter
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.orchestrator import AIOrchestrator
from aiorch.request import ChatRequest
from aiorch.service_settings import ServiceSettings
from aiorch.types import AgentType, Usage

STORIES = {
    "stories": [
        {
            "id": "US-1",
            "title": "Reset password",
            "description": "As a user, I want a reset link, so that I can log in again",
            "acceptance_criteria": ["A link is e-mailed", "The link expires after 1 hour"],
        }
    ]
}
CODE = {"files": [{"path": "reset.py", "language": "python", "content": "def reset(): ...\n"}]}
REVIEW = {"verdict": "fail", "reasons": ["no expiry"], "test_cases": [{"name": "link sent"}]}
ANSWERS = {
    "Role: business analyst": f"```json\n{json.dumps(STORIES)}\n```",
    "Role: software developer": json.dumps(CODE),
    "Role: QA engineer": f"Here is my review: {json.dumps(REVIEW)}",
}


def scripted(prompt: str) -> str:
    return next(answer for marker, answer in ANSWERS.items() if marker in prompt)


class ScriptedBackend:
    """Answers each agent's prompt with a canned artefact; can be told to fail."""

    def __init__(
        self,
        settings: ServiceSettings,
        answer: Callable[[str], str] = scripted,
        fails: Callable[[str], bool] = lambda prompt: False,
    ) -> None:
        self.settings = settings
        self.answer = answer
        self.fails = fails
        self.prompts: list[str] = []
        self.requests: list[ChatRequest] = []

    def refusal(self, request: ChatRequest) -> UnsupportedParameter | None:
        return None

    def notes(self, request: ChatRequest) -> tuple[str, ...]:
        return ()

    async def generate(self, call: Call) -> AsyncIterator[Event]:
        request = call.request
        prompt = request.messages[-1].text()
        self.prompts.append(prompt)
        self.requests.append(request)
        if self.fails(prompt):
            raise BackendOverloaded(
                "scripted outage", service=self.settings.name, model=call.model.id
            )
        yield Delta(content=self.answer(prompt), finish_reason="stop")
        yield End(Usage(10, 20), call.model.id)

    async def probe(self) -> Readiness:
        raise NotImplementedError

    async def close(self) -> None:
        return None


def settings_with_models(**changes: object) -> Settings:
    """Settings as if both models were configured, with one try per backend (no backoff)."""
    base = load_settings({"KIMI_API_KEY": "k", "QWEN_OLLAMA_URL": "http://qwen.invalid"})
    return msgspec.structs.replace(base, retry=RetrySettings(attempts=1), **changes)


def build(
    settings: Settings | None = None,
    backends: dict[str, ScriptedBackend] | None = None,
) -> tuple[FlowRunner, dict[str, ScriptedBackend], CollectorRegistry]:
    settings = settings or settings_with_models()
    backends = backends or {n: ScriptedBackend(s) for n, s in settings.services.items()}
    registry = CollectorRegistry()
    orchestrator = AIOrchestrator(settings, backends=backends, metrics=Metrics(registry))
    return FlowRunner(orchestrator), backends, registry


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_ba_dev_qa_hands_each_artefact_to_the_next_stage() -> None:
    runner, backends, registry = build()

    result = await runner.run("ba-dev-qa", "Users can reset their password")

    assert result.status == "completed"
    assert result.error is None
    assert [s.stage for s in result.stages] == ["ba", "dev", "qa"]
    ba, dev, qa = result.stages
    assert isinstance(ba.artefact, Requirements)
    assert ba.artefact.stories[0].id == "US-1"
    assert isinstance(dev.artefact, Implementation)
    assert dev.artefact.files[0].path == "reset.py"
    assert isinstance(qa.artefact, Review)
    assert qa.artefact.verdict is Verdict.FAIL
    assert result.verdict is Verdict.FAIL
    # BA on the reasoning route (Kimi), Dev and QA on the code route (Qwen).
    assert [s.selected_service for s in result.stages] == ["kimi", "qwen", "qwen"]
    assert all(s.model and s.usage == Usage(10, 20) and not s.cached for s in result.stages)
    assert result.usage == Usage(30, 60)
    # What each stage was given.
    (ba_prompt,) = backends["kimi"].prompts
    dev_prompt, qa_prompt = backends["qwen"].prompts
    assert "Users can reset their password" in ba_prompt
    assert "US-1: Reset password" in dev_prompt
    assert "A link is e-mailed" in dev_prompt
    assert "- US-1: The link expires after 1 hour" in qa_prompt
    assert "File: reset.py" in qa_prompt
    assert "def reset(): ..." in qa_prompt
    # Metrics: every agent counted under its own agent_type, the run and each stage recorded.
    for agent, model in (
        ("ba", "kimi-k2-thinking"),
        ("dev", "qwen2.5-coder:7b"),
        ("qa", "qwen2.5-coder:7b"),
    ):
        assert (
            sample(registry, "ai_queries_total", agent_type=agent, status="success", model=model)
            == 1
        )
        assert (
            sample(registry, "ai_flow_stage_duration_seconds_count", flow="ba-dev-qa", stage=agent)
            == 1
        )
    assert sample(registry, "ai_flow_runs_total", flow="ba-dev-qa", status="completed") == 1


async def test_events_come_in_order_and_end_with_the_result() -> None:
    runner, _, _ = build()
    events = [e async for e in runner.events("dev-qa", "Add a search box", request_id="req-1")]

    kinds = [type(e).__name__ for e in events]
    assert kinds == [
        "FlowStarted", "StageStarted", "StageResult", "StageStarted", "StageResult", "FlowResult",
    ]  # fmt: skip
    assert isinstance(events[0], FlowStarted)
    assert events[0].stages == ("dev", "qa")
    assert isinstance(events[3], StageStarted)
    assert events[3].index == 1
    assert isinstance(events[2], StageResult)
    assert events[2].request_id == "req-1-dev"
    final = events[-1]
    assert isinstance(final, FlowResult)
    assert final.request_id == "req-1"


async def test_dev_qa_works_from_the_request_itself() -> None:
    runner, backends, _ = build()
    result = await runner.run("dev-qa", "Add a search box")
    dev_prompt, qa_prompt = backends["qwen"].prompts
    assert result.status == "completed"
    assert dev_prompt.count("Add a search box") == 2  # as the request and as the requirements
    assert "No written criteria" in qa_prompt
    assert backends["kimi"].prompts == []


async def test_an_unparseable_stage_fails_the_flow_and_keeps_the_stages_before_it() -> None:
    def refuse_review(prompt: str) -> str:
        return "I'd rather not judge." if "Role: QA engineer" in prompt else scripted(prompt)

    settings = settings_with_models()
    backends = {n: ScriptedBackend(s, refuse_review) for n, s in settings.services.items()}
    runner, _, registry = build(settings, backends)

    result = await runner.run("ba-dev-qa", "Users can reset their password")

    assert result.status == "failed"
    assert [(s.stage, s.status) for s in result.stages] == [
        ("ba", "completed"), ("dev", "completed"), ("qa", "failed"),
    ]  # fmt: skip
    assert result.stages[0].artefact is not None
    assert result.stages[1].artefact is not None
    failed = result.stages[2]
    assert failed.answer == "I'd rather not judge."  # the model's words are not lost
    assert failed.model == "qwen2.5-coder:7b"
    assert result.error is not None
    assert result.error == failed.error
    assert result.error.stage == "qa"
    assert result.error.code == "parse_error"
    assert "stage qa" in result.error.message
    assert "verdict" in result.error.message
    assert result.http_status == 502
    assert result.verdict is None
    assert sample(registry, "ai_flow_runs_total", flow="ba-dev-qa", status="failed") == 1
    assert (
        sample(registry, "ai_flow_stage_duration_seconds_count", flow="ba-dev-qa", stage="qa") == 1
    )


async def test_a_stage_whose_backends_all_fail_names_the_stage_and_every_attempt() -> None:
    settings = settings_with_models()

    def dev_prompt(prompt: str) -> bool:
        return "Role: software developer" in prompt

    backends = {n: ScriptedBackend(s, fails=dev_prompt) for n, s in settings.services.items()}
    runner, _, registry = build(settings, backends)

    result = await runner.run("ba-dev-qa", "Users can reset their password")

    assert [(s.stage, s.status) for s in result.stages] == [("ba", "completed"), ("dev", "failed")]
    error = result.error
    assert error is not None
    assert error.stage == "dev"
    assert error.code == "all_backends_failed"
    assert [(a.service, a.error_type) for a in error.attempts] == [
        ("qwen", "overloaded"), ("kimi", "overloaded"),
    ]  # fmt: skip
    assert result.http_status == 503  # every backend was only unavailable
    assert (
        sample(
            registry, "ai_queries_total", agent_type="dev", status="error", model="qwen2.5-coder:7b"
        )
        == 1
    )


async def test_a_stage_that_falls_back_says_so() -> None:
    settings = settings_with_models()
    backends = {
        "kimi": ScriptedBackend(settings.kimi, fails=lambda prompt: True),
        "qwen": ScriptedBackend(settings.qwen),
    }
    runner, _, _ = build(settings, backends)

    result = await runner.run("ba-dev-qa", "Users can reset their password")

    assert result.status == "completed"
    ba = result.stages[0]
    assert ba.selected_service == "qwen"
    assert ba.model == "qwen2.5-coder:7b"
    assert ba.fallback is not None
    assert (ba.fallback.from_service, ba.fallback.to_service) == ("kimi", "qwen")
    assert ba.fallback.reason == "overloaded"


async def test_a_repeated_flow_is_answered_from_the_cache() -> None:
    runner, backends, registry = build()
    first = await runner.run("ba-dev-qa", "Users can reset their password")
    calls = sum(len(b.prompts) for b in backends.values())

    second = await runner.run("ba-dev-qa", "Users can reset their password")

    assert [s.cached for s in first.stages] == [False, False, False]
    assert [s.cached for s in second.stages] == [True, True, True]
    assert sum(len(b.prompts) for b in backends.values()) == calls
    assert [s.artefact for s in second.stages] == [s.artefact for s in first.stages]
    uncached = await runner.run("ba-dev-qa", "Users can reset their password", use_cache=False)
    assert not any(s.cached for s in uncached.stages)
    assert sample(registry, "orchestrator_cache_hits_total") == 3


async def test_an_unparseable_answer_is_not_cached_so_the_next_run_asks_again() -> None:
    refusals = iter(["I'd rather not judge."])  # the first review is unusable, later ones fine

    def review_once_badly(prompt: str) -> str:
        if "Role: QA engineer" in prompt:
            return next(refusals, scripted(prompt))
        return scripted(prompt)

    settings = settings_with_models()
    backends = {n: ScriptedBackend(s, review_once_badly) for n, s in settings.services.items()}
    runner, _, registry = build(settings, backends)

    first = await runner.run("ba-dev-qa", "Users can reset their password")
    second = await runner.run("ba-dev-qa", "Users can reset their password")

    assert [s.status for s in first.stages] == ["completed", "completed", "failed"]
    assert second.status == "completed"
    # The stages that parsed came from the cache; the one that did not was asked again.
    assert [s.cached for s in second.stages] == [True, True, False]
    assert isinstance(second.stages[2].artefact, Review)
    assert sum(len(b.prompts) for b in backends.values()) == 4
    assert sample(registry, "orchestrator_cache_hits_total") == 2


async def test_offline_flows_run_end_to_end_and_say_so() -> None:
    registry = CollectorRegistry()
    orchestrator = AIOrchestrator(load_settings({}), metrics=Metrics(registry))
    result = await FlowRunner(orchestrator).run("ba-dev-qa", "Users can reset their password")

    assert result.status == "completed"
    assert result.offline
    assert all(s.offline for s in result.stages)
    ba, dev, qa = (s.artefact for s in result.stages)
    assert isinstance(ba, Requirements)
    assert ba.stories[0].title == "Offline placeholder"
    assert "[offline" in ba.stories[0].description
    assert isinstance(dev, Implementation)
    assert dev.files == ()
    assert "offline" in dev.notes
    assert isinstance(qa, Review)
    assert qa.verdict is Verdict.SKIPPED
    assert result.verdict is Verdict.SKIPPED
    for agent, model in (("ba", "offline-kimi"), ("dev", "offline-qwen"), ("qa", "offline-qwen")):
        labels = {"agent_type": agent, "status": "success", "model": model}
        assert sample(registry, "ai_queries_total", **labels) == 1
    await orchestrator.close()


async def test_flows_come_from_the_configuration(tmp_path: Path) -> None:
    config = tmp_path / "aiorch.toml"
    config.write_text('[flows.review-only]\nstages = ["qa"]\n', encoding="utf-8")
    settings = msgspec.structs.replace(
        settings_with_models(), flows=load_settings({}, config_path=config).flows
    )
    runner, backends, _ = build(settings)
    assert set(runner.flows) == {"ba-dev-qa", "dev-qa", "review-only"}

    result = await runner.run("review-only", "def add(a, b): return a - b")

    assert [s.stage for s in result.stages] == ["qa"]
    (qa_prompt,) = backends["qwen"].prompts
    assert "def add(a, b): return a - b" in qa_prompt  # the request is the code under review


async def test_unknown_flows_and_empty_requests_are_refused_before_anything_runs() -> None:
    runner, backends, registry = build()
    with pytest.raises(NotFound, match="configured flows: ba-dev-qa, dev-qa"):
        await runner.run("x" * 500, "hello")
    with pytest.raises(RequestError, match="non-empty"):
        await runner.run("ba-dev-qa", "   ")
    assert all(b.prompts == [] for b in backends.values())
    # The series exists from start-up (at zero, so that rate() sees the first run): still zero.
    assert (
        registry.get_sample_value("ai_flow_runs_total", {"flow": "ba-dev-qa", "status": "failed"})
        == 0.0
    )


async def test_a_consumer_that_stops_listening_counts_as_cancelled() -> None:
    runner, backends, registry = build()
    events = runner.events("ba-dev-qa", "Users can reset their password")
    async for event in events:
        if isinstance(event, StageResult):
            break
    await events.aclose()

    assert sample(registry, "ai_flow_runs_total", flow="ba-dev-qa", status="cancelled") == 1
    assert len(backends["qwen"].prompts) == 0  # dev never started


async def test_a_crash_inside_a_stage_still_returns_the_completed_stages() -> None:
    def broken(text: str) -> Review:
        raise ZeroDivisionError

    agents = default_agents()
    agents[AgentType.QA] = dataclasses.replace(agents[AgentType.QA], parse=broken)
    runner, _, _ = build()
    runner = FlowRunner(runner.orchestrator, agents=agents)

    result = await runner.run("ba-dev-qa", "Users can reset their password")

    assert [s.status for s in result.stages] == ["completed", "completed", "failed"]
    assert result.error is not None
    assert result.error.code == "internal"
    assert "ZeroDivisionError" in result.error.message
