"""The query mix: what a benchmark sends, as a weighted list of queries.

A mix file is JSON Lines, one `{"query": ..., "query_type"?: ..., "weight"?: ...}` per line
(blank lines and lines starting with `#` are skipped). `query_type`, when given, is sent with the
query (the classifier is then bypassed); `weight` (default 1) sets how often it is picked.
`loadtest/queries.jsonl` is the mix shared with the Locust and k6 scenarios.
"""

from __future__ import annotations

import itertools
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated

import msgspec

from aiorch.types import QueryType


class MixError(ValueError):
    """A mix file that cannot be used; the message names the file and line."""


class QueryItem(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    query: Annotated[str, msgspec.Meta(min_length=1)]
    query_type: QueryType | None = None
    weight: Annotated[float, msgspec.Meta(gt=0)] = 1.0


# Used when no mix is given: every query type, in English and Russian, code-heavy as real use is.
DEFAULT_MIX: tuple[QueryItem, ...] = (
    QueryItem("Write a Python function that merges two sorted lists.", QueryType.CODE, 3),
    QueryItem(
        "Fix this bug: list index out of range in my for loop over range(len(x)+1).",
        QueryType.CODE,
        2,
    ),
    QueryItem("Напиши функцию на Go, которая читает JSON из stdin.", QueryType.CODE, 2),
    QueryItem(
        "Why would a cache with a 99% hit rate still make p99 latency worse?",
        QueryType.REASONING,
        2,
    ),
    QueryItem("Объясни, почему p95 растёт при увеличении конкурентности.", QueryType.REASONING, 1),
    QueryItem(
        "Write user stories and acceptance criteria for password reset by e-mail.",
        QueryType.REQUIREMENTS,
        1,
    ),
    QueryItem("Сформулируй требования к экспорту отчётов в CSV.", QueryType.REQUIREMENTS, 1),
    QueryItem(
        "Write pytest tests for a function that parses ISO 8601 durations.", QueryType.TESTING, 1
    ),
    QueryItem("What is the difference between a process and a thread?", QueryType.GENERAL, 1),
    QueryItem("Tell me something interesting.", QueryType.UNKNOWN, 0.5),
)


def load_mix(path: str | Path) -> tuple[QueryItem, ...]:
    """Read a JSONL mix; raises `MixError` naming the line of the first bad entry."""
    source = Path(path)
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise MixError(f"cannot read mix file {source}: {error.strerror}") from None
    decode = msgspec.json.Decoder(QueryItem).decode
    items: list[QueryItem] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            items.append(decode(text))
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            raise MixError(f"{source}:{number}: {error}") from None
    if not items:
        raise MixError(f"{source}: no queries in the mix file")
    return tuple(items)


class Picker:
    """Chooses the next query: weighted at random (seeded, so runs repeat), or in order.

    `unique` appends a per-run, per-request tag so that no two queries share a cache entry:
    every request then takes the full cache-miss path.
    """

    def __init__(
        self,
        items: Sequence[QueryItem],
        *,
        seed: int = 0,
        in_order: bool = False,
        unique: bool = False,
    ) -> None:
        if not items:
            raise MixError("the query mix is empty")
        self.items = tuple(items)
        self._random = random.Random(seed)
        self._weights = list(itertools.accumulate(item.weight for item in self.items))
        self._in_order = in_order
        self._cycle: Iterator[QueryItem] = itertools.cycle(self.items)
        self._unique = unique
        self._run = os.urandom(4).hex()  # a second run against a warm cache still misses
        self._count = 0

    def next(self) -> QueryItem:
        self._count += 1
        if self._in_order:
            item = next(self._cycle)
        else:
            item = self._random.choices(self.items, cum_weights=self._weights)[0]
        if self._unique:
            tagged = f"{item.query} [bench {self._run}-{self._count}]"
            return msgspec.structs.replace(item, query=tagged)
        return item
