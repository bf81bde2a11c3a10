"""`RecentVerdicts`: a repeated text is not classified again, and memory stays bounded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiorch.classifier import DEFAULT_ROUTER, RecentVerdicts, Verdict
from aiorch.types import QueryType

DATA = Path(__file__).parent / "data"


class Counting:
    """A classifier that says `code` and counts the texts it was asked about."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, text: str) -> Verdict:
        self.calls.append(text)
        return Verdict(QueryType.CODE, "rule:code_fix", float(len(self.calls)))


def test_a_repeated_text_gets_the_verdict_it_got_before_without_a_second_classification() -> None:
    inner = Counting()
    recent = RecentVerdicts(inner)

    first = recent("fix this bug")
    again = recent("fix " + "this bug")  # an equal text, another string object

    assert again is first
    assert inner.calls == ["fix this bug"]


def test_the_least_recently_used_text_goes_first_when_entries_run_out() -> None:
    inner = Counting()
    recent = RecentVerdicts(inner, max_entries=2)

    recent("a")
    recent("b")
    recent("a")  # "b" is now the least recently used
    recent("c")
    recent("a")
    recent("b")

    assert inner.calls == ["a", "b", "c", "b"]
    assert len(recent) == 2


def test_the_characters_kept_are_bounded_too() -> None:
    inner = Counting()
    recent = RecentVerdicts(inner, max_chars=10)

    recent("12345")
    recent("67890")
    recent("abc")  # 13 characters: the oldest goes

    recent("67890")
    recent("12345")
    assert inner.calls == ["12345", "67890", "abc", "12345"]
    assert len(recent) == 2  # "abc" went for "12345": 8 characters kept, then 10


def test_a_text_over_the_limit_is_classified_every_time_and_never_kept() -> None:
    inner = Counting()
    recent = RecentVerdicts(inner, max_text=8)

    recent("x" * 9)
    recent("x" * 9)

    assert len(inner.calls) == 2
    assert len(recent) == 0


@pytest.mark.parametrize("field", ["max_entries", "max_chars", "max_text"])
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RecentVerdicts(Counting(), **{field: 0})


def test_it_answers_what_the_router_answers() -> None:
    """Twice over every labelled query (the second pass from memory, in another order)."""
    labelled_queries = [
        json.loads(line)["query"]
        for path in sorted(DATA.glob("*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    recent = RecentVerdicts(DEFAULT_ROUTER.explain, max_entries=100_000, max_chars=1 << 30)
    first = [recent(q) for q in labelled_queries]
    second = [recent(q) for q in reversed(labelled_queries)]

    assert first == [DEFAULT_ROUTER.explain(q) for q in labelled_queries]
    assert second == first[::-1]
