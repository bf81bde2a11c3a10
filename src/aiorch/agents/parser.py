"""The tolerant structured-output parser: an answer's text to an artefact, or `Unparseable`.

Order of trust: JSON that fits the artefact's shape (from a fence, the whole text or inside
prose; see `jsonish`), then the Markdown fallback (see `markdown`). Field names are matched
loosely (`acceptanceCriteria`, `acceptance criteria` and `acceptance_criteria` are one field;
common synonyms such as `tests` for `test_cases` are accepted), because models rename fields
far more often than they change the structure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from aiorch.agents import markdown
from aiorch.agents.artefacts import (
    CodeFile,
    Implementation,
    Requirements,
    Review,
    Story,
    TestCase,
    Verdict,
)
from aiorch.agents.jsonish import json_values

A = TypeVar("A", Requirements, Implementation, Review)

_PASS = frozenset({"pass", "passed", "ok", "approve", "approved", "accept", "accepted", "success"})
_FAIL = frozenset(
    {"fail", "failed", "failure", "reject", "rejected", "changes_requested", "needs_work"}
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+")


class Unparseable(ValueError):
    """The answer has no artefact of the expected kind; the message says what was missing."""


def parse_requirements(text: str) -> Requirements:
    return _parse(text, requirements_from, markdown.requirements, "user stories")


def parse_implementation(text: str) -> Implementation:
    return _parse(text, implementation_from, markdown.implementation, "code")


def parse_review(text: str) -> Review:
    return _parse(text, review_from, markdown.review, "a review verdict")


def _parse(
    text: str,
    from_json: Callable[[Any], A],
    from_markdown: Callable[[str], A | None],
    what: str,
) -> A:
    problems: list[str] = []
    for value in json_values(text):
        try:
            return from_json(value)
        except Unparseable as problem:
            problems.append(str(problem))
    found = from_markdown(text)
    if found is not None:
        return found
    if not text.strip():
        raise Unparseable(f"the answer is empty; expected {what}")
    detail = f"JSON found but {problems[0]}" if problems else "no JSON object found"
    raise Unparseable(
        f"expected {what} as JSON or Markdown: {detail}; the Markdown had none either"
    )


# -- JSON shapes -------------------------------------------------------------------------------


def requirements_from(value: Any) -> Requirements:
    data = _normalise(value)
    raw = data if isinstance(data, list) else _get(data, "stories", "user_stories", "requirements")
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, list):
        raise Unparseable("it has no `stories` list")
    stories = [s for s in (_story(i, item) for i, item in enumerate(raw, 1)) if s is not None]
    if not stories:
        raise Unparseable("its `stories` list has no story with a title or description")
    notes = (
        _text(_get(data, "notes", "assumptions", "open_questions"))
        if isinstance(data, dict)
        else ""
    )
    return Requirements(stories=tuple(stories), notes=notes)


def _story(index: int, raw: Any) -> Story | None:
    if isinstance(raw, str):
        return Story(id=f"US-{index}", title=raw.strip()[:120], description=raw.strip())
    if not isinstance(raw, dict):
        return None
    title = _text(_get(raw, "title", "name", "summary"))
    description = _text(_get(raw, "description", "story", "user_story", "details", "narrative"))
    if not description:
        parts = [
            f"{label} {_text(raw[key])}"
            for key, label in (("as_a", "As a"), ("i_want", "I want"), ("so_that", "so that"))
            if key in raw
        ]
        description = ", ".join(parts)
    if not (title or description):
        return None
    return Story(
        id=_text(_get(raw, "id", "key")) or f"US-{index}",
        title=title or description.splitlines()[0][:120],
        description=description,
        acceptance_criteria=_texts(
            _get(raw, "acceptance_criteria", "criteria", "acceptance", "ac")
        ),
    )


def implementation_from(value: Any) -> Implementation:
    data = _normalise(value)
    raw: Any = data if isinstance(data, list) else _get(data, "files", "code_files", "sources")
    if raw is None and isinstance(data, dict) and _get(data, "code", "content", "source"):
        raw = [data]
    if not isinstance(raw, list):
        raise Unparseable("it has no `files` list")
    files = [f for f in (_file(i, item) for i, item in enumerate(raw, 1)) if f is not None]
    if not files:
        raise Unparseable("its `files` list has no file with content")
    notes = _text(_get(data, "notes", "explanation", "summary")) if isinstance(data, dict) else ""
    return Implementation(files=tuple(files), notes=notes)


def _file(index: int, raw: Any) -> CodeFile | None:
    if not isinstance(raw, dict):
        return None
    content = _get(raw, "content", "code", "source", "body")
    if not isinstance(content, str) or not content.strip():
        return None
    language = _text(_get(raw, "language", "lang")).lower()
    path = _text(_get(raw, "path", "filename", "file", "name")) or f"file_{index}"
    return CodeFile(path=path, content=content, language=language)


def review_from(value: Any) -> Review:
    data = _normalise(value)
    if not isinstance(data, dict):
        raise Unparseable("it is not an object with a `verdict`")
    verdict = verdict_of(_get(data, "verdict", "result", "status", "outcome", "decision", "passed"))
    if verdict is None:
        raise Unparseable("it has no `verdict` of pass or fail")
    cases = _get(data, "test_cases", "tests", "cases")
    return Review(
        verdict=verdict,
        reasons=_texts(_get(data, "reasons", "reason", "rationale", "findings", "issues")),
        test_cases=tuple(
            case for case in map(_case, cases if isinstance(cases, list) else []) if case
        ),
    )


def _case(raw: Any) -> TestCase | None:
    if isinstance(raw, str):
        return TestCase(name=raw.strip()) if raw.strip() else None
    if not isinstance(raw, dict):
        return None
    name = _text(_get(raw, "name", "title", "id", "description"))
    if not name:
        return None
    status = verdict_of(_get(raw, "status", "result", "passed"))
    return TestCase(
        name=name,
        steps=_texts(_get(raw, "steps")),
        expected=_text(_get(raw, "expected", "expected_result", "expected_outcome")),
        criterion=_text(_get(raw, "criterion", "acceptance_criterion", "criteria", "covers")),
        status=status.value if status else "",
    )


def verdict_of(value: Any) -> Verdict | None:
    if isinstance(value, bool):
        return Verdict.PASS if value else Verdict.FAIL
    if not isinstance(value, str):
        return None
    word = re.sub(r"[^a-z_ ]", "", value.lower()).strip().replace(" ", "_")
    if word in _PASS or word.startswith("pass"):
        return Verdict.PASS
    if word in _FAIL or word.startswith("fail"):
        return Verdict.FAIL
    return None


# -- loose field access ------------------------------------------------------------------------


def _key(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", _CAMEL.sub("_", name.strip())).lower()


def _normalise(value: Any) -> Any:
    """Keys in snake_case at every level, so field lookups need only one spelling."""
    if isinstance(value, dict):
        return {_key(str(k)): _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


def _get(data: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if data.get(name) not in (None, "", [], {}):
            return data[name]
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return "; ".join(t for t in map(_text, value) if t)
    if isinstance(value, dict):
        if any(k in value for k in ("given", "when", "then")):
            return ", ".join(
                f"{k.capitalize()} {_text(value[k])}"
                for k in ("given", "when", "then")
                if k in value
            )
        return "; ".join(f"{k}: {_text(v)}" for k, v in value.items())
    return str(value)


def _texts(value: Any) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(t for t in map(_text, value) if t)
    if isinstance(value, str):
        lines = (_BULLET.sub("", line).strip() for line in value.splitlines())
        return tuple(line for line in lines if line)
    text = _text(value)
    return (text,) if text else ()
