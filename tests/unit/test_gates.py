"""Literal gates (`aiorch.gates`): they may only skip a search that would have failed.

The classifier's verdicts must be the same with and without gates; these tests check the gates
of every classifier feature against the labelled queries and generated text, and the analysis
on small patterns whose required literals are known.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiorch.classifier_rules import DEFAULT_CLASSIFIER, Feature, _prose
from aiorch.gates import PREFIX_CHARS, GateIndex, Prefixes, gate_for, word_starts

DATA = Path(__file__).parent / "data" / "labelled_queries.jsonl"
QUERIES = [json.loads(line)["query"] for line in DATA.read_text(encoding="utf-8").splitlines()]
FEATURES = [
    *((f, True) for f in DEFAULT_CLASSIFIER.keyword_features),
    *((f, False) for f in DEFAULT_CLASSIFIER.shape_features),
]
# Pieces of the features' own vocabulary, so that generated text often comes close to matching.
WORDS = [
    "write", "test", "tests", "unit", "function", "user", "story", "stories", "as a", "i want",
    "why", "how", "does", "work", "or", "?", "should we", "use", "c++", ".net", "e2e", "def ",
    "class ", "Traceback (most recent call last)", "```", "SELECT a FROM b", "$ ", "git commit",
    "напиши", "тесты", "тест-кейс", "почему", "требования", "ТЗ", "привет", "пока", "как ты",
    "\n", " ", ",", ".", "-", "'", '"', "`", "(", ")", "{", "}", ";", ":", "ё", "_", "1",
]  # fmt: skip


def _assert_sound(feature: Feature, text: str) -> None:
    gate = feature.gate
    if gate is None:
        return
    starts = word_starts(text, gate.lengths)
    if not gate.may_match(text, starts) or not gate.may_occur(text):
        assert feature.pattern.search(text) is None, (feature.pattern.pattern[:80], text)


def _texts(query: str) -> tuple[str, str]:
    text = DEFAULT_CLASSIFIER._window(query)
    return _prose(text), text


@pytest.mark.parametrize("query", QUERIES[::3])
def test_gates_never_skip_a_match_in_the_labelled_queries(query: str) -> None:
    prose, text = _texts(query)
    for feature, on_prose in FEATURES:
        _assert_sound(feature, prose if on_prose else text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(WORDS) | st.text(max_size=3), max_size=40))
def test_gates_never_skip_a_match_in_generated_text(pieces: list[str]) -> None:
    raw = "".join(pieces)
    prose, text = _texts(raw)
    for feature, on_prose in FEATURES:
        _assert_sound(feature, prose if on_prose else text)
        _assert_sound(feature, raw)


def _one_by_one(text: str, starts: set[str]) -> list[int]:
    """What `GateIndex.candidates` must answer: each gate asked on its own."""
    gates = [f.gate for f in DEFAULT_CLASSIFIER.keyword_features]
    return [i for i, gate in enumerate(gates) if gate is None or gate.may_match(text, starts)]


def _candidates_agree(text: str) -> None:
    features = DEFAULT_CLASSIFIER.keyword_features
    prefixes = Prefixes(n for f in features if f.gate is not None for n in f.gate.lengths)
    index = GateIndex([f.gate for f in features])
    for probe in (text, _texts(text)[0]):
        starts = prefixes.of(probe)
        assert index.candidates(probe, starts) == _one_by_one(probe, starts), probe[:80]


def test_the_gate_index_picks_what_each_gate_would() -> None:
    # Every labelled query of every data file, both languages: the classifier relies on it.
    for path in sorted(DATA.parent.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            _candidates_agree(json.loads(line)["query"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(WORDS) | st.text(max_size=3), max_size=40))
def test_the_gate_index_picks_what_each_gate_would_in_generated_text(pieces: list[str]) -> None:
    _candidates_agree("".join(pieces))


def test_most_features_have_a_gate() -> None:
    gated = sum(f.gate is not None for f, _ in FEATURES)
    assert gated >= len(FEATURES) - 3


@pytest.mark.parametrize(
    ("pattern", "starts", "substrings"),
    [
        (r"\b(?:fix|repair)\b", {"fix", "repair"}, set()),
        (r"\bunit[- ]?tests?\b|\bqa\b", {"unit", "qa"}, set()),
        (r"(?<!\w)(?:go|c\+\+|\.net)(?!\w)", {"go"}, {"c++", ".net"}),
        (r"^\s*[{}]\s*$", set(), {"{", "}"}),
        (r"тест[- ]?кейс\w*", set(), {"кейс", "тест"}),  # either is certain; the longer one wins
        (r"^\W*(?:hi|hello)\b", {"hi", "hello"}, set()),
        (r"should (?:i|we)\b", set(), {"should i", "should we"}),
        (r"(?:foo)?bar?", set(), {"ba"}),
        (r"\binternationalisation\b", {"internationalisation"[:PREFIX_CHARS]}, set()),
    ],
)
def test_required_literals_of_small_patterns(
    pattern: str, starts: set[str], substrings: set[str]
) -> None:
    gate = gate_for(re.compile(pattern))
    assert gate is not None
    assert set(gate.starts) == starts
    assert set(gate.substrings) <= substrings
    assert bool(gate.substrings) == bool(substrings)


@pytest.mark.parametrize(
    "pattern",
    [r"\w+\d", r"(?i:select)", r"[a-z]{3}", r"(?:fix|\w+)", r"x*"],
)
def test_patterns_without_a_certain_literal_have_no_gate(pattern: str) -> None:
    assert gate_for(re.compile(pattern)) is None


def test_word_starts_are_prefixes_of_every_word() -> None:
    assert word_starts("Write tests, please", (1, 4)) == {"W", "Writ", "t", "test", "p", "plea"}
