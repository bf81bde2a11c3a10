"""Flow results for people: a one-line summary per stage and the whole result as Markdown."""

from __future__ import annotations

from aiorch.agents.artefacts import Artefact, Implementation, Requirements, Review
from aiorch.agents.flow import FlowResult, StageResult
from aiorch.agents.roles import STAGE_TITLES


def stage_line(stage: StageResult) -> str:
    """`ba completed in 1.2 s: kimi-k2-thinking (kimi), 120 -> 340 tokens, fallback ...`"""
    seconds = stage.duration_ms / 1000
    head = f"{stage.stage.value} {stage.status} in {seconds:.2f} s"
    details: list[str] = []
    if stage.model:
        service = stage.selected_service or "?"
        details.append(f"{stage.model} ({service})")
        usage = stage.usage
        details.append(f"{usage.prompt_tokens} -> {usage.completion_tokens} tokens")
    if stage.cached:
        details.append("cached")
    if stage.fallback is not None:
        fb = stage.fallback
        details.append(f"fell back {fb.from_service} -> {fb.to_service} ({fb.reason})")
    if stage.offline:
        details.append("OFFLINE placeholder")
    if stage.error is not None:
        details.append(f"error: {stage.error.message}")
    return head + (": " + ", ".join(details) if details else "")


def markdown(result: FlowResult) -> str:
    verdict = f", verdict {result.verdict.value}" if result.verdict else ""
    lines = [f"# Flow {result.flow}: {result.status}{verdict}", ""]
    if result.offline:
        lines += [
            "> OFFLINE: no model is configured. Stages hold the offline backend's placeholder",
            "> text, not real stories, code or a review.",
            "",
        ]
    for stage in result.stages:
        lines += [f"## {stage.stage.value}: {STAGE_TITLES[stage.stage]}", "", stage_line(stage), ""]
        if stage.artefact is not None:
            lines += [_artefact(stage.artefact), ""]
        elif stage.answer:
            lines += ["The answer that could not be parsed:", "", _quote(stage.answer), ""]
    if result.error is not None:
        lines += ["## Error", "", f"{result.error.message} (code: {result.error.code})", ""]
        lines += [
            f"- {a.service} ({a.model}): {a.error_type}: {a.message}" for a in result.error.attempts
        ]
    return "\n".join(lines).rstrip() + "\n"


def _artefact(artefact: Artefact) -> str:
    if isinstance(artefact, Requirements):
        return _requirements(artefact)
    if isinstance(artefact, Implementation):
        return _implementation(artefact)
    return _review(artefact)


def _requirements(requirements: Requirements) -> str:
    parts: list[str] = []
    for story in requirements.stories:
        parts += [f"### {story.id}: {story.title}", ""]
        if story.description:
            parts += [story.description, ""]
        parts += [f"- [ ] {c}" for c in story.acceptance_criteria]
        parts.append("")
    if requirements.notes:
        parts += [f"Notes: {requirements.notes}"]
    return "\n".join(parts).rstrip()


def _implementation(implementation: Implementation) -> str:
    parts: list[str] = []
    for file in implementation.files:
        fence = "````" if "```" in file.content else "```"
        parts += [f"### {file.path}", "", f"{fence}{file.language}", file.content.rstrip(), fence]
        parts.append("")
    if implementation.notes:
        parts.append(implementation.notes)
    return "\n".join(parts).rstrip()


def _review(review: Review) -> str:
    parts = [f"**Verdict: {review.verdict.value.upper()}**", ""]
    parts += [f"- {reason}" for reason in review.reasons]
    if review.test_cases:
        parts += ["", "Test cases:", ""]
        for case in review.test_cases:
            extra = ", ".join(x for x in (case.criterion, case.status) if x)
            parts.append(f"- {case.name}" + (f" ({extra})" if extra else ""))
    return "\n".join(parts).rstrip()


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" for line in text.splitlines())
