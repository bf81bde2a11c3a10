"""What each agent produces: the artefacts handed from stage to stage, and their text forms.

Artefacts are tagged (`kind`) so a flow result decodes back into the right type. `render()` is
the text a later stage's prompt receives; it is deterministic, so a repeated flow sends the same
prompts and the cache can answer them.
"""

from __future__ import annotations

import enum

import msgspec


class Verdict(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    # Only from an offline backend: no model looked at the code, so it neither passed nor failed.
    SKIPPED = "skipped"


class Story(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    title: str
    description: str = ""
    acceptance_criteria: tuple[str, ...] = ()


class Requirements(msgspec.Struct, frozen=True, kw_only=True, tag="requirements", tag_field="kind"):
    """The BA's artefact: user stories with acceptance criteria."""

    stories: tuple[Story, ...]
    notes: str = ""

    @property
    def criteria(self) -> list[str]:
        return [f"{s.id}: {c}" for s in self.stories for c in s.acceptance_criteria]

    def render(self) -> str:
        parts: list[str] = []
        for story in self.stories:
            parts.append(f"## {story.id}: {story.title}")
            if story.description:
                parts.append(story.description)
            if story.acceptance_criteria:
                parts.append("Acceptance criteria:")
                parts.extend(f"- {c}" for c in story.acceptance_criteria)
            parts.append("")
        if self.notes:
            parts.append(f"Notes: {self.notes}")
        return "\n".join(parts).strip()


class CodeFile(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    content: str
    language: str = ""


class Implementation(msgspec.Struct, frozen=True, kw_only=True, tag="code", tag_field="kind"):
    """The developer's artefact: source files, and what the developer wants the reviewer to know."""

    files: tuple[CodeFile, ...]
    notes: str = ""

    def render(self) -> str:
        parts = [f"File: {f.path}\n```{f.language}\n{f.content.rstrip()}\n```" for f in self.files]
        if self.notes:
            parts.append(f"Notes: {self.notes}")
        return "\n\n".join(parts).strip()


class TestCase(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    steps: tuple[str, ...] = ()
    expected: str = ""
    criterion: str = ""  # the acceptance criterion it checks, when the model said so
    status: str = ""  # the model's own pass/fail for this case, when it gave one

    __test__ = False  # not a pytest class, despite the name


class Review(msgspec.Struct, frozen=True, kw_only=True, tag="review", tag_field="kind"):
    """QA's artefact: test cases and a verdict against the acceptance criteria, with reasons."""

    verdict: Verdict
    reasons: tuple[str, ...] = ()
    test_cases: tuple[TestCase, ...] = ()

    def render(self) -> str:
        parts = [f"Verdict: {self.verdict.value}"]
        parts.extend(f"- {r}" for r in self.reasons)
        parts.extend(f"Test: {t.name}" for t in self.test_cases)
        return "\n".join(parts)


Artefact = Requirements | Implementation | Review
