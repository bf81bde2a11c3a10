"""The tolerant structured-output parser: JSON where it hides, Markdown when there is no JSON."""

from __future__ import annotations

import pytest

from aiorch.agents.artefacts import CodeFile, Verdict
from aiorch.agents.jsonish import json_values, loads
from aiorch.agents.parser import (
    Unparseable,
    parse_implementation,
    parse_requirements,
    parse_review,
    verdict_of,
)

# -- finding JSON ------------------------------------------------------------------------------


def test_json_in_a_fence_inside_prose() -> None:
    text = 'Here you go:\n```json\n{"a": 1}\n```\nAnything else?'
    assert next(iter(json_values(text))) == {"a": 1}


def test_bare_json_inside_prose_without_a_fence() -> None:
    text = 'Sure. The result is {"a": {"b": [1, 2]}} as asked. Done'
    assert {"a": {"b": [1, 2]}} in list(json_values(text))


def test_trailing_commas_and_line_comments_are_tolerated() -> None:
    assert loads('{"a": [1, 2,], // the list\n "b": "x,]",}') == {"a": [1, 2], "b": "x,]"}


def test_braces_inside_strings_do_not_confuse_the_scan() -> None:
    text = 'prefix {"code": "if (x) { return \\"}\\"; }"} suffix'
    assert list(json_values(text)) == [{"code": 'if (x) { return "}"; }'}]


def test_no_json_yields_nothing() -> None:
    assert list(json_values("just words, and a {brace} or two")) == []


def test_invalid_json_is_none_not_an_exception() -> None:
    assert loads("{nope") is None


# -- BA: user stories --------------------------------------------------------------------------


def test_requirements_from_fenced_json_with_odd_field_names() -> None:
    text = """I wrote these:
```json
{"userStories": [
  {"ID": "US-7", "Title": "Reset password",
   "As a": "user", "I want": "a reset link", "So that": "I can log in",
   "acceptanceCriteria": [{"given": "a known e-mail", "when": "I ask", "then": "a link is sent"},
                          "The link expires after 1 hour",]},
],}
```"""
    result = parse_requirements(text)
    (story,) = result.stories
    assert story.id == "US-7"
    assert story.title == "Reset password"
    assert story.description == "As a user, I want a reset link, so that I can log in"
    assert story.acceptance_criteria == (
        "Given a known e-mail, When I ask, Then a link is sent",
        "The link expires after 1 hour",
    )
    assert result.criteria == [
        "US-7: Given a known e-mail, When I ask, Then a link is sent",
        "US-7: The link expires after 1 hour",
    ]


def test_requirements_from_a_top_level_list_with_criteria_as_text() -> None:
    text = '[{"title": "Search", "criteria": "- finds by name\\n- empty query shows all"}]'
    (story,) = parse_requirements(text).stories
    assert story.id == "US-1"
    assert story.acceptance_criteria == ("finds by name", "empty query shows all")


def test_requirements_skip_json_that_is_not_stories_and_use_the_markdown() -> None:
    text = """Example config: {"debug": true}

## Story 1: Password reset
As a user, I want to reset my password, so that I can log in again.

**Acceptance criteria:**
- Given a registered e-mail, when I ask for a reset, then I get a link
- The link expires after 1 hour

## US-2: Audit
As an admin, I want an audit log.
Acceptance criteria: every reset is logged

## Notes
Nothing else.
"""
    first, second = parse_requirements(text).stories
    assert (first.id, first.title) == ("US-1", "Password reset")
    assert first.description.startswith("As a user")
    assert first.acceptance_criteria == (
        "Given a registered e-mail, when I ask for a reset, then I get a link",
        "The link expires after 1 hour",
    )
    assert (second.id, second.title) == ("US-2", "Audit")
    assert second.acceptance_criteria == ("every reset is logged",)


def test_requirements_from_markdown_without_headings() -> None:
    text = """- As a user, I want to export CSV, so that I can use a spreadsheet.
  Given data, when I export, then I get a CSV file
- As an admin, I want to limit exports.
"""
    first, second = parse_requirements(text).stories
    assert first.acceptance_criteria == ("Given data, when I export, then I get a CSV file",)
    assert second.description == "As an admin, I want to limit exports."


@pytest.mark.parametrize(
    "text",
    ["", "I'm sorry, I can't help with that.", '{"stories": []}', "# Title only\n\nSome prose."],
)
def test_requirements_unparseable(text: str) -> None:
    with pytest.raises(Unparseable, match="expected user stories"):
        parse_requirements(text)


# -- Dev: code ---------------------------------------------------------------------------------


def test_implementation_from_json() -> None:
    text = (
        '```json\n{"files": [{"filename": "a.py", "lang": "Python", "code": "x = 1\\n"}],'
        ' "explanation": "run it"}\n```'
    )
    result = parse_implementation(text)
    assert result.files == (CodeFile(path="a.py", content="x = 1\n", language="python"),)
    assert result.notes == "run it"


def test_implementation_from_fenced_blocks_finds_file_names() -> None:
    text = """Here is the code.

File: `app/reset.py`
```python
def reset(email):
    return True
```

```python
# tests/test_reset.py
def test_reset():
    assert reset("a")
```

```js title=web/app.js
console.log(1)
```

```sql
select 1;
```
Run with pytest."""
    files = parse_implementation(text).files
    assert [f.path for f in files] == [
        "app/reset.py",
        "tests/test_reset.py",
        "web/app.js",
        "snippet_4.sql",
    ]
    assert files[0].content == "def reset(email):\n    return True\n"
    # The "File: ..." label is not repeated in the notes.
    assert parse_implementation(text).notes == "Here is the code.\n\nRun with pytest."


def test_implementation_json_config_in_code_is_a_file_not_the_answer() -> None:
    text = 'package.json:\n```json\n{"name": "app", "version": "1.0.0"}\n```\n'
    (file,) = parse_implementation(text).files
    assert file.path == "package.json"
    assert file.language == "json"


def test_implementation_without_code_is_unparseable() -> None:
    with pytest.raises(Unparseable, match="expected code"):
        parse_implementation("I would write a function that resets the password.")


# -- QA: review --------------------------------------------------------------------------------


def test_review_from_json_with_synonyms() -> None:
    text = (
        'Result: {"decision": "Approved", "rationale": "all criteria met", '
        '"tests": [{"title": "link sent", "covers": "US-1", "passed": true, '
        '"steps": "- ask\\n- check inbox", "expected_result": "a link"}, "expiry"]}'
    )
    review = parse_review(text)
    assert review.verdict is Verdict.PASS
    assert review.reasons == ("all criteria met",)
    first, second = review.test_cases
    assert (first.name, first.criterion, first.status) == ("link sent", "US-1", "pass")
    assert first.steps == ("ask", "check inbox")
    assert first.expected == "a link"
    assert second.name == "expiry"


def test_review_from_markdown() -> None:
    text = """## Test cases
- reset sends a link
- link expires after an hour

## Verdict: **FAIL**

Reasons:
- the expiry is not implemented
"""
    review = parse_review(text)
    assert review.verdict is Verdict.FAIL
    assert review.reasons == ("the expiry is not implemented",)
    assert [t.name for t in review.test_cases] == [
        "reset sends a link",
        "link expires after an hour",
    ]


def test_review_code_in_the_answer_does_not_decide_the_verdict() -> None:
    text = "```python\n# result: pass\n```\nOverall result - FAILED, see above."
    assert parse_review(text).verdict is Verdict.FAIL


@pytest.mark.parametrize("text", ["The code looks fine to me.", '{"verdict": "maybe"}'])
def test_review_without_a_verdict_is_unparseable(text: str) -> None:
    with pytest.raises(Unparseable, match="expected a review verdict"):
        parse_review(text)


@pytest.mark.parametrize(
    ("value", "verdict"),
    [
        ("PASS", Verdict.PASS),
        ("passed.", Verdict.PASS),
        (True, Verdict.PASS),
        ("Fail", Verdict.FAIL),
        ("changes requested", Verdict.FAIL),
        (False, Verdict.FAIL),
        ("unsure", None),
        (3, None),
    ],
)
def test_verdict_words(value: object, verdict: Verdict | None) -> None:
    assert verdict_of(value) is verdict
