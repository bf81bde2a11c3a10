"""Literal gates: a cheap test that tells when a regex certainly cannot match, so it is not run.

The classifier runs about forty regexes over every query, and most of them match nothing: that
was about half of the service's CPU per request (docs/performance.md). Python's `re` tries every
alternative of a keyword list at every position of the text, so a miss costs the most. A gate is
derived from the compiled pattern itself: a set of literals of which every match must contain at
least one. When the text contains none of them, the pattern is not run and the answer (no match)
is exactly what running it would have given. When the text contains one, the pattern runs as
before. Gates only ever skip work; they never change a result.

Two kinds of literal, both read off the parse tree of the pattern:

- a *word start*: a literal that follows `\\b` (or `(?<!\\w)`) and begins with a word character
  must begin some `\\w+` word of the text, so it is looked up in the set of the words' prefixes
  (built once per text, `word_starts`), a hash lookup per gate;
- a *substring*: any other literal run, tested with `in`.

Alternatives (`a|b`) need a literal from every branch; a sequence needs one of its items; an
optional or case-insensitive part needs nothing. A construct the analysis does not know yields no
gate (the pattern always runs), so an unfamiliar pattern costs speed, never correctness. The parse
tree comes from the standard library's own regex parser (`re._parser`, private but unchanged in
shape since 3.11); if it cannot be imported, no pattern gets a gate.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PREFIX_CHARS", "Gate", "GateIndex", "Prefixes", "gate_for", "word_starts"]

# Word-start literals are cut to this many characters: enough to be selective, few enough that
# the prefix set of a text stays small (at most this many entries per word).
PREFIX_CHARS = 10
_WORDS = re.compile(r"\w+")
_WORD_CHAR = re.compile(r"\w")

try:
    _parser: Any = importlib.import_module("re._parser")
    _c: Any = importlib.import_module("re._constants")
except ImportError:  # pragma: no cover - a Python without the 3.11+ layout: no gates
    _parser = _c = None

# Positions after which a word may start: `\b`, and `^` (start of text or of a line).
_WORD_EDGES = (
    ()
    if _c is None
    else (_c.AT_BOUNDARY, _c.AT_BEGINNING, _c.AT_BEGINNING_LINE, _c.AT_BEGINNING_STRING)
)

# One literal a match must contain: (text, whether it starts a word).
# One literal a match must contain: (text, the word it starts with, or "" when it need not start a
# word). ("how does", "how"): "how" begins a word of the text and "how does" occurs in it.
_Literal = tuple[str, str]
_Requirement = frozenset[_Literal]
# The literal run just before a group, and whether it starts a word.
_Lead = tuple[str, bool]


@dataclass(frozen=True, slots=True)
class Gate:
    """Literals one of which every match contains: `starts` begin a word of the text,
    `substrings` occur anywhere, and each `anchored` (word, text) has both."""

    starts: frozenset[str]
    substrings: tuple[str, ...] = ()
    anchored: tuple[tuple[str, str], ...] = ()
    # Every literal as a plain substring (a word start is a substring too): a looser test that
    # needs no word-prefix set.
    loose: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        texts = {*self.starts, *self.substrings, *(text for _, text in self.anchored)}
        object.__setattr__(self, "loose", tuple(sorted(texts)))

    def may_occur(self, text: str) -> bool:
        """False only when the pattern cannot match `text`; no word-prefix set needed."""
        for literal in self.loose:  # noqa: SIM110
            if literal in text:
                return True
        return False

    def may_match(self, text: str, starts: frozenset[str] | set[str]) -> bool:
        """False only when the pattern cannot match `text` (`starts`: from `word_starts`)."""
        return not self.starts.isdisjoint(starts) or self.in_text(text, starts)

    def in_text(self, text: str, starts: frozenset[str] | set[str]) -> bool:
        """Whether one of the `substrings` or `anchored` literals is in `text`."""
        # Plain loops: any() over a generator costs more than the `in` tests themselves here.
        for substring in self.substrings:
            if substring in text:
                return True
        for word, substring in self.anchored:  # noqa: SIM110
            if word in starts and substring in text:
                return True
        return False

    @property
    def lengths(self) -> frozenset[int]:
        return frozenset(len(s) for s in (*self.starts, *(word for word, _ in self.anchored)))


class Prefixes:
    """Builds the set `Gate.may_match` looks word starts up in, for a fixed set of lengths.

    A word gets only the lengths it is long enough for (a gate's literal of length n can only
    be the start of a word of n or more characters), from a table made once.
    """

    def __init__(self, lengths: Iterable[int]) -> None:
        sizes = sorted(set(lengths))
        self._top = sizes[-1] if sizes else 0
        self._upto = tuple(tuple(n for n in sizes if n <= k) for k in range(self._top + 1))

    def of(self, text: str) -> set[str]:
        upto, top = self._upto, self._top
        return {word[:n] for word in set(_WORDS.findall(text)) for n in upto[min(len(word), top)]}


class GateIndex:
    """The gates of many patterns, tested together: which patterns may match a text.

    `candidates` gives exactly the patterns whose `Gate.may_match` is true (and every pattern
    without a gate), in their order, but looks each literal up once for all the patterns that
    share it instead of asking every gate in turn: the word starts by one set intersection, and a
    substring with a non-ASCII character only when the text has one (an ASCII text cannot
    contain it).
    """

    def __init__(self, gates: Sequence[Gate | None]) -> None:
        self._always = frozenset(i for i, gate in enumerate(gates) if gate is None)
        by_start: dict[str, list[int]] = {}
        by_word: dict[str, list[tuple[int, str]]] = {}
        by_substring: dict[str, list[int]] = {}
        for i, gate in enumerate(gates):
            if gate is None:
                continue
            for start in gate.starts:
                by_start.setdefault(start, []).append(i)
            for word, text in gate.anchored:
                by_word.setdefault(word, []).append((i, text))
            for text in gate.substrings:
                by_substring.setdefault(text, []).append(i)
        self._by_start = {start: tuple(ids) for start, ids in by_start.items()}
        self._by_word = {word: tuple(pairs) for word, pairs in by_word.items()}
        substrings = tuple((text, tuple(ids)) for text, ids in sorted(by_substring.items()))
        self._substrings = substrings
        self._ascii_substrings = tuple(item for item in substrings if item[0].isascii())

    def candidates(self, text: str, starts: set[str] | frozenset[str]) -> list[int]:
        """The indices, ascending, of the patterns that may match `text` (`starts`: from
        `Prefixes.of(text)` with the gates' lengths)."""
        found = set(self._always)
        for start in self._by_start.keys() & starts:
            found.update(self._by_start[start])
        for word in self._by_word.keys() & starts:
            for i, literal in self._by_word[word]:
                if i not in found and literal in text:
                    found.add(i)
        for literal, ids in self._ascii_substrings if text.isascii() else self._substrings:
            if literal in text:
                found.update(ids)
        return sorted(found)


def word_starts(text: str, lengths: Iterable[int]) -> set[str]:
    """The prefixes of the given lengths of every `\\w+` word of `text` long enough for them."""
    return Prefixes(lengths).of(text)


def gate_for(pattern: re.Pattern[str]) -> Gate | None:
    """The gate of a compiled pattern, or None when no literal is certain to occur in a match."""
    if _parser is None or not isinstance(pattern.pattern, str):
        return None
    try:
        tree = _parser.parse(pattern.pattern, pattern.flags)
        requirement = _sequence(list(tree.data), tree.state.flags, word_start=False)
    except (AttributeError, TypeError, ValueError, re.error):  # pragma: no cover - defensive
        return None
    if requirement is None:
        return None
    starts = frozenset(word[:PREFIX_CHARS] for text, word in requirement if word == text)
    substrings = tuple(sorted(text for text, word in requirement if not word))
    anchored = tuple(
        sorted((word[:PREFIX_CHARS], text) for text, word in requirement if word and word != text)
    )
    return Gate(starts, substrings, anchored)


def _is_word(char: str) -> bool:
    return _WORD_CHAR.fullmatch(char) is not None


def _word_part(text: str) -> str:
    end = 0
    while end < len(text) and _is_word(text[end]):
        end += 1
    return text[:end]


def _sequence(
    items: Sequence[tuple[Any, Any]], flags: int, *, word_start: bool, lead: _Lead | None = None
) -> _Requirement | None:
    """What every match of this sequence of parse items contains.

    `word_start`: a word may start just before the sequence. `lead`: a literal that directly
    precedes it (the parser moves the common prefix of alternatives out: `hi|hello` is
    `h(?:i|ello)`), continued by the sequence's own first literals.
    """
    candidates: list[_Requirement] = []
    run: list[str] = list(lead[0]) if lead else []
    run_starts_word = lead[1] if lead else False
    boundary = word_start  # a word may start at the current position

    def flush() -> None:
        if run:
            text = "".join(run)
            candidates.append(frozenset({(text, _word_part(text) if run_starts_word else "")}))
            run.clear()

    for op, av in items:
        if op is _c.LITERAL and not flags & _c.SRE_FLAG_IGNORECASE:
            char = chr(av)
            if not run:
                run_starts_word = boundary and _is_word(char)
            run.append(char)
            boundary = False
            continue
        before = ("".join(run), run_starts_word) if run else None
        if run:
            boundary = not _is_word(run[-1])
        flush()
        if op is _c.AT:
            if av in _WORD_EDGES:
                boundary = True
            continue  # zero width: what held at this position still holds
        if op is _c.ASSERT_NOT and av[0] == -1 and _is_word_class(av[1]):
            boundary = True  # (?<!\w): nothing of a word just before
            continue
        if op in (_c.ASSERT, _c.ASSERT_NOT):
            continue
        if _non_word(op, av):  # `\s+`, `\W*`, `[,.;]`: what follows starts a word, if anything
            found = _item(op, av, flags, boundary, before) if op is _c.IN else None
            if found is not None:
                candidates.append(found)
            boundary = boundary or op is _c.IN or av[0] >= 1
            continue
        found = _item(op, av, flags, boundary, before)
        if found is not None:
            candidates.append(found)
        boundary = False
    flush()
    return max(candidates, key=_selectivity, default=None)


def _item(op: Any, av: Any, flags: int, boundary: bool, lead: _Lead | None) -> _Requirement | None:
    if op is _c.SUBPATTERN:
        _group, add_flags, del_flags, sub = av
        sub_flags = (flags | add_flags) & ~del_flags
        return _sequence(list(sub.data), sub_flags, word_start=boundary, lead=lead)
    if op is _c.BRANCH:
        union: set[_Literal] = set()
        for branch in av[1]:
            found = _sequence(list(branch.data), flags, word_start=boundary, lead=lead)
            if found is None:
                return None
            union |= found
        return frozenset(union)
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
        low, _high, sub = av
        if low < 1:
            return None
        return _sequence(list(sub.data), flags, word_start=boundary, lead=lead)
    if op is _c.IN and not flags & _c.SRE_FLAG_IGNORECASE:
        # A small set of plain characters, `[{}]`: one of them is in the match.
        if len(av) <= 4 and all(kind is _c.LITERAL for kind, _ in av):
            return frozenset((chr(value), "") for _, value in av)
        return None
    if op is _c.ATOMIC_GROUP:
        return _sequence(list(av.data), flags, word_start=boundary, lead=lead)
    return None


def _non_word(op: Any, av: Any) -> bool:
    """Whether the item is a character class, or a repeat of one, that matches no word character."""
    if op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
        data = list(av[2].data)
        if len(data) != 1:
            return False
        op, av = data[0]
    if op is _c.LITERAL:
        return not _is_word(chr(av))
    if op is not _c.IN:
        return False
    for kind, value in av:
        if kind is _c.LITERAL and not _is_word(chr(value)):
            continue
        if kind is _c.CATEGORY and value in (_c.CATEGORY_NOT_WORD, _c.CATEGORY_SPACE):
            continue
        return False
    return True


def _is_word_class(sub: Any) -> bool:
    """Whether a lookbehind's body is exactly `\\w`."""
    data = list(sub.data)
    return (
        len(data) == 1
        and data[0][0] is _c.IN
        and list(data[0][1]) == [(_c.CATEGORY, _c.CATEGORY_WORD)]
    )


def _selectivity(requirement: _Requirement) -> tuple[int, int]:
    """Prefer requirements whose every literal is long and starts a word; then fewer literals."""
    weakest = min(len(text) + (3 if word else 0) for text, word in requirement)
    return weakest, -len(requirement)
