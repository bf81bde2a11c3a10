"""Answers in the shape a prompt asks for: the agents' user stories, code and verdicts.

The rule, applied to the last user message and then the system prompt:

1. A prompt that asks for JSON (a sentence with answer, respond, reply, return, output, format or
   give, and JSON) and shows an example in a ```json fence gets a ```json fence holding a value of
   that example's shape: the same keys and nesting, lists of one to three items, enum-like
   strings (one lower-case word such as "pass" or "python") and numbers kept, ids such as
   "US-1" numbered, `<placeholders>` and "..." filled with words from the prompt's subject (the
   text after the example, from its first Markdown heading on), file contents as a small
   runnable Python module.
2. Without an example, a prompt that asks for user stories gets stories in the BA agent's shape,
   and one that asks for a verdict gets a review in the QA agent's shape.

Everything is drawn from the conversation's digest, so the same prompt gets the same answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from aiorch.mock.words import Filler, story_ids, subject_words

_ASKS_JSON = re.compile(
    r"\b(?:answer|respond|reply|return|output|format|give)\w*\b[^.\n]{0,80}\bjson\b", re.I
)
_JSON_FENCE = re.compile(r"```json[ \t]*\n(.*?)```", re.S | re.I)
_STORIES = re.compile(r"\buser\s+stor(?:y|ies)\b|пользовательск\w+\s+истори", re.I)
_VERDICT = re.compile(r"\bverdict\b|вердикт", re.I)
_ENUM_LIKE = re.compile(r"^[a-z][a-z_]{0,23}$")
_ID_LIKE = re.compile(r"^([A-Z]{1,5}-)(\d+)$")
_ID_PREFIX = re.compile(r"^([A-Z]{1,5}-)\d+:\s*")
_PLACEHOLDER = re.compile(r"<[^<>\n]{1,40}>|\.\.\.[^\s,.]*(?:\s*\.\.\.)*|…")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+\S", re.M)
_PATH_LIKE = re.compile(r"^[\w.-]+(?:/[\w.-]+)*\.\w{1,6}$")

STORIES_SHAPE: Any = {
    "stories": [
        {
            "id": "US-1",
            "title": "Short title",
            "description": "As a <role>, I want <goal>, so that <benefit>",
            "acceptance_criteria": ["Given ..., when ..., then ...", "..."],
        }
    ],
    "notes": "Assumptions and open questions",
}
REVIEW_SHAPE: Any = {
    "test_cases": [
        {
            "name": "What the case checks",
            "criterion": "US-1: the criterion it covers",
            "steps": ["...", "..."],
            "expected": "The observable result",
            "status": "pass",
        }
    ],
    "verdict": "pass",
    "reasons": ["..."],
}


def find_template(text: str) -> tuple[Any, str] | None:
    """The JSON example a prompt asks to follow, and the subject text after it; or None."""
    if "```" not in text or _ASKS_JSON.search(text) is None:
        return None
    for match in _JSON_FENCE.finditer(text):
        try:
            value = json.loads(match.group(1))
        except ValueError:
            continue
        if isinstance(value, (dict, list)) and value:
            return value, _subject(text[match.end() :]) or text[: match.start()]
    return None


def _subject(after: str) -> str:
    """What the prompt is about: the text after the example, from its first Markdown heading
    on when there is one (the lines between are usually more instructions)."""
    heading = _HEADING.search(after)
    return (after[heading.start() :] if heading else after).strip()


def shaped(last_user: str, system: str, seed: bytes) -> str | None:
    """The answer text for an agent-shaped prompt, or None if the prompt asks for no shape."""
    for text in (last_user, system):
        if not text:
            continue
        found = find_template(text)
        if found is not None:
            template, subject = found
            return fence(fill(template, _filler(seed, subject)))
    for text in (last_user, system):
        if _STORIES.search(text):
            return fence(fill(STORIES_SHAPE, _filler(seed, text)))
        if _VERDICT.search(text):
            return fence(fill(REVIEW_SHAPE, _filler(seed, text)))
    return None


def fence(value: Any) -> str:
    return "```json\n" + json.dumps(value, indent=2, ensure_ascii=False) + "\n```"


def _filler(seed: bytes, subject: str) -> Filler:
    return Filler(seed, subject_words(subject), story_ids(subject))


def fill(template: Any, filler: Filler, key: str = "", index: int = 0) -> Any:
    """A value of `template`'s shape (see the module docstring)."""
    if isinstance(template, Mapping):
        return _fill_object(template, filler, index)
    if isinstance(template, list):
        return _fill_list(template, filler, key)
    if isinstance(template, str):
        return _fill_string(template, filler, key, index)
    return template  # numbers, booleans and null keep the example's value


def _fill_object(template: Mapping[str, Any], filler: Filler, index: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    title = ""
    for key, example in template.items():
        if key.lower() in ("content", "code", "source", "body") and _is_file(template):
            out[key] = filler.code(title or filler.title(4))
            continue
        out[key] = fill(example, filler, key, index)
        if key.lower() in ("title", "name") and isinstance(out[key], str):
            title = out[key]
    return out


def _is_file(template: Mapping[str, Any]) -> bool:
    keys = {k.lower() for k in template}
    return bool(keys & {"path", "filename", "file", "language", "lang"})


def _fill_list(template: list[Any], filler: Filler, key: str) -> list[Any]:
    informative = [t for t in template if not (isinstance(t, str) and _is_filler_text(t))]
    examples = informative or template
    count = 1 + filler.rng.randrange(3) if isinstance(examples[0], (dict, list)) else 2
    count = max(count, len(informative))
    return [fill(examples[min(i, len(examples) - 1)], filler, key, i) for i in range(count)]


def _is_filler_text(text: str) -> bool:
    return text.strip() in ("", "...", "…") or text.strip().startswith("...")


def _fill_string(example: str, filler: Filler, key: str, index: int) -> str:
    k = key.lower()
    stripped = example.strip()
    id_like = _ID_LIKE.match(stripped)
    if id_like:
        return f"{id_like.group(1)}{index + 1}"
    if _ENUM_LIKE.match(stripped):
        return stripped
    if k in ("path", "filename", "file") or _PATH_LIKE.match(stripped):
        folder = stripped.rsplit("/", 1)[0] + "/" if "/" in stripped else ""
        suffix = stripped.rsplit(".", 1)[-1] if "." in stripped else "py"
        return f"{folder}{filler.identifier(2)}.{suffix}"
    prefix = ""
    id_prefix = _ID_PREFIX.match(stripped)
    if id_prefix:
        prefix = f"{_known_id(filler, index) or id_prefix.group(1) + str(index + 1)}: "
        stripped = stripped[id_prefix.end() :]
    if k in ("title", "name", "summary") and "<" not in stripped:
        return prefix + filler.title(3 + filler.rng.randrange(3))
    if _PLACEHOLDER.search(stripped):
        filled = _PLACEHOLDER.sub(lambda m: filler.words(2 + filler.rng.randrange(2)), stripped)
        return prefix + filled[:1].upper() + filled[1:]
    return prefix + filler.sentence(6 + filler.rng.randrange(6))


def _known_id(filler: Filler, index: int) -> str | None:
    return filler.ids[index % len(filler.ids)] if filler.ids else None
