"""The Markdown fallback: artefacts from answers that ignored the request for JSON.

Models often answer in Markdown anyway: stories under headings with an "Acceptance criteria"
list, code in fenced blocks under a file name, "Verdict: PASS" with a list of reasons. These
functions read that shape and return None when the text does not have it, so the caller can say
the answer was unparseable rather than invent an artefact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aiorch.agents.artefacts import (
    CodeFile,
    Implementation,
    Requirements,
    Review,
    Story,
    TestCase,
    Verdict,
)
from aiorch.agents.jsonish import FENCE

_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$")
_BOLD_LINE = re.compile(r"^\s*\*\*(.+?)\*\*\s*:?\s*$")
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+(.*\S)\s*$")
_CRITERIA = re.compile(r"acceptance\s+criteri|критери", re.I)
_LABEL = re.compile(r"^\W*[^\W\d][\w ]{0,40}:")  # "Acceptance criteria: ..." on one line
_STORY_TEXT = re.compile(r"^\W*(as\s+an?\b|как\s)", re.I)
_GHERKIN = re.compile(r"^\W*(given|when|then|and|дано|когда|тогда)\b", re.I)
_STORY_ID = re.compile(r"\b([A-Z]{1,5}-\d+)\b")
_STORY_PREFIX = re.compile(
    r"^\W*(?:user\s+)?(?:story|история)?\s*(?:[A-Z]{1,5}-)?\d*\s*[:.)\-–—]\s*", re.I
)
_VERDICT = re.compile(
    r"\b(?:verdict|overall(?:\s+result)?|result|outcome|decision|вердикт)\b[^\w\n]{0,12}"
    r"(pass(?:ed)?|fail(?:ed)?|approved|rejected)\b",
    re.I,
)
_REASONS = re.compile(r"\b(reasons?|rationale|findings|issues|причин)", re.I)
_TESTS = re.compile(r"\b(test\s*cases?|tests|тест)", re.I)
_FILE_NAME = re.compile(r"([\w./-]*\w\.[A-Za-z][A-Za-z0-9]{0,7})\b")
_LABEL_LINE = re.compile(
    r"^[\s#*>`-]*(?:file(?:name)?\s*:?\s*)?[`*]*[\w./-]+\.\w+[`*]*\s*:?\s*$", re.I
)
_EXTENSIONS = {
    "python": ".py", "py": ".py", "javascript": ".js", "js": ".js", "typescript": ".ts",
    "ts": ".ts", "go": ".go", "rust": ".rs", "java": ".java", "kotlin": ".kt", "bash": ".sh",
    "sh": ".sh", "sql": ".sql", "yaml": ".yaml", "json": ".json", "html": ".html", "css": ".css",
}  # fmt: skip


def _strip_code(text: str) -> str:
    """The text with fenced blocks removed, so that `# comments` in code are not headings."""
    return FENCE.sub("", text)


def _marker(line: str) -> str | None:
    """The text of a heading, a bold line or a short line ending in a colon; else None."""
    for pattern in (_HEADING, _BOLD_LINE):
        match = pattern.match(line)
        if match:
            return match.group(1).strip("*: ")
    stripped = line.strip()
    if stripped.endswith(":") and len(stripped) <= 60 and not _BULLET.match(line):
        return stripped.strip("*: ")
    return None


def _label(line: str) -> str:
    """The label of a line like "Acceptance criteria: the user ...", or ""."""
    match = _LABEL.match(line)
    return match.group(0) if match else ""


@dataclass
class _Draft:
    title: str
    description: list[str] = field(default_factory=list)
    criteria: list[str] = field(default_factory=list)

    @property
    def is_story(self) -> bool:
        text = " ".join(self.description)
        return bool(self.criteria) or bool(_STORY_TEXT.match(text))


def requirements(text: str) -> Requirements | None:
    drafts: list[_Draft] = []
    current: _Draft | None = None
    in_criteria = False
    for line in _strip_code(text).splitlines():
        if not line.strip():
            continue
        label = _marker(line) or _label(line)
        if label and _CRITERIA.search(label):
            in_criteria = True
            inline = line.split(":", 1)[1].strip(" *") if ":" in line else ""
            if inline and current is not None:
                current.criteria.append(inline)
            continue
        heading = _HEADING.match(line) or _BOLD_LINE.match(line)
        bullet = _BULLET.match(line)
        body = bullet.group(1) if bullet else line.strip()
        # A heading starts a story; so does "As a ..." once the current story has its own.
        new_story = _STORY_TEXT.match(body) and (current is None or current.is_story)
        if heading or new_story:
            current = _Draft(heading.group(1).strip("* ") if heading else body)
            if not heading:
                current.description.append(body)
            drafts.append(current)
            in_criteria = False
        elif current is None:
            continue
        elif (in_criteria and bullet) or _GHERKIN.match(body):
            current.criteria.append(body)
        else:
            current.description.append(body)
    stories = [
        _story(index, draft) for index, draft in enumerate(filter(lambda d: d.is_story, drafts), 1)
    ]
    return Requirements(stories=tuple(stories)) if stories else None


def _story(index: int, draft: _Draft) -> Story:
    found = _STORY_ID.search(draft.title)
    title = _STORY_PREFIX.sub("", draft.title, count=1).strip() or draft.title
    return Story(
        id=found.group(1) if found else f"US-{index}",
        title=title[:120],
        description="\n".join(draft.description),
        acceptance_criteria=tuple(draft.criteria),
    )


def implementation(text: str) -> Implementation | None:
    files: list[CodeFile] = []
    notes: list[str] = []
    position = 0
    for index, match in enumerate(FENCE.finditer(text), 1):
        before = text[position : match.start()]
        # A line that only names the file ("File: `app.py`") is a label, not a note.
        prose = before.rstrip().splitlines()
        if prose and _LABEL_LINE.match(prose[-1]):
            prose.pop()
        notes.append("\n".join(prose).strip())
        position = match.end()
        language, info, body = match.group(1).lower(), match.group(2), match.group(3)
        if not body.strip():
            continue
        path = _path(info, before, body) or f"snippet_{index}{_EXTENSIONS.get(language, '.txt')}"
        files.append(CodeFile(path=path, content=body.rstrip("\n") + "\n", language=language))
    notes.append(text[position:].strip())
    if not files:
        return None
    return Implementation(files=tuple(files), notes="\n\n".join(n for n in notes if n))


def _path(info: str, before: str, body: str) -> str | None:
    """A file name from the fence's info string, the line above it or a first-line comment."""
    lines = [line for line in before.splitlines() if line.strip()]
    first = body.lstrip().splitlines()[0] if body.strip() else ""
    places = [info]
    if lines and len(lines[-1]) <= 120:
        places.append(lines[-1])
    if first.startswith(("#", "//", "--", "/*")):
        places.append(first)
    for place in places:
        match = _FILE_NAME.search(place)
        if match and not match.group(1).startswith("."):
            return match.group(1)
    return None


def review(text: str) -> Review | None:
    prose = _strip_code(text)
    found = _VERDICT.search(prose)
    if found is None:
        return None
    word = found.group(1).lower()
    verdict = Verdict.PASS if word.startswith("pass") or word == "approved" else Verdict.FAIL
    reasons: list[str] = []
    tests: list[TestCase] = []
    section = ""  # "tests", "reasons" or "" for a part of the answer we do not collect
    for line in prose.splitlines():
        bullet = _BULLET.match(line)
        marker = None if bullet else _marker(line)
        if marker is not None:
            section = (
                "tests" if _TESTS.search(marker) else "reasons" if _REASONS.search(marker) else ""
            )
        elif bullet and section == "tests":
            tests.append(TestCase(name=bullet.group(1).strip()))
        elif bullet and section == "reasons":
            reasons.append(bullet.group(1).strip())
    return Review(verdict=verdict, reasons=tuple(reasons), test_cases=tuple(tests))
