"""The router on queries it was not trained on: the frozen holdouts of issue 20.

Four holdout files, each written in one sitting and committed before any router was scored on
it (docs/routing.md tells the order). Holdouts a, b and c (`holdout_frozen.jsonl`,
`holdout_b.jsonl`, `holdout_c.jsonl`) were each scored once blind in round one; in round two they
became training data, so their floors below are regression checks, not measures of
generalisation. `holdout_d.jsonl`, written by a second writer before any round-two tuning, is
the blind one: the training script never reads it. Run with `-rA` or `-s` for the tables.

The issue's target (95 % overall, 90 % in every class) is asserted on holdout-d. It is not met
(0.963 overall, but testing 0.86): that test is a strict xfail, so it fails the day it starts
passing and the mark must go. What is met is pinned by `test_holdout_does_not_regress`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import pytest

from aiorch.classifier import classify
from aiorch.types import QueryType

DATA = Path(__file__).parent / "data"
TRAINER = Path(__file__).parents[2] / "scripts" / "train_router.py"
CLASSES = tuple(QueryType)
# Holdouts are frozen: an edit would turn scores measured before it into fiction.
FROZEN = {
    "holdout_frozen.jsonl": "1696b075fd4177186d83fd335fb5889cf017db0acc01b86183a3b4c31a90d0c9",
    "holdout_b.jsonl": "f9ef953012ed1ba45698a3a6e9b99a8a3d40c6fb28d7b15a69d2dcaada29e417",
    "holdout_c.jsonl": "772b343eb10c8071ab91dd0143fc699bc383b07ed773572c2ecf6a4514600b3d",
    # holdout-d: written 2026-12-04 by a second writer before any model output or any miss of
    # the older data was read; scored once, by round two's final model.
    "holdout_d.jsonl": "130d6c5fea1522bbdcd491f803e1d8a634067ecb88ce53368c75b26045c80513",
}
TARGET_OVERALL, TARGET_PER_CLASS = 0.95, 0.90  # issue 20
BLIND = "holdout_d.jsonl"  # the one no training or tuning has read
# What the shipped router holds, less a query or two of slack for a retrain. Holdout-d, blind:
# 0.963, weakest class testing 0.86 (31/36). Holdouts a-c are training data since round two
# (0.99 to 1.00 now): their floors check the fit, not generalisation.
FLOORS = {
    "holdout_frozen.jsonl": (0.97, 0.90),
    "holdout_b.jsonl": (0.97, 0.90),
    "holdout_c.jsonl": (0.97, 0.90),
    "holdout_d.jsonl": (0.95, 0.83),
}


class Row(NamedTuple):
    query: str
    label: QueryType
    lang: str


def _rows(name: str) -> list[Row]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    return [Row(r["query"], QueryType(r["label"]), r["lang"]) for r in rows]


def _recall(rows: list[Row], got: list[QueryType]) -> dict[str, float]:
    recall = {}
    for kind in CLASSES:
        mine = [g is kind for g, r in zip(got, rows, strict=True) if r.label is kind]
        recall[kind.value] = sum(mine) / len(mine)
    return recall


def _table(name: str, rows: list[Row], got: list[QueryType]) -> str:
    confusion = Counter((r.label, g) for r, g in zip(rows, got, strict=True))
    lines = [
        f"\n{name}",
        "expected \\ got".ljust(14) + "".join(c.value[:7].rjust(8) for c in CLASSES),
    ]
    for want in CLASSES:
        total = sum(confusion[want, g] for g in CLASSES)
        cells = "".join(str(confusion[want, g]).rjust(8) for g in CLASSES)
        lines.append(f"{want.value:<14}{cells}  recall {confusion[want, want] / total:.2f}")
    for lang in ("en", "ru", "mixed"):
        pairs = [(r, g) for r, g in zip(rows, got, strict=True) if r.lang == lang]
        if pairs:
            right = sum(r.label is g for r, g in pairs)
            lines.append(f"{lang:<6} {right}/{len(pairs)} = {right / len(pairs):.3f}")
    right = sum(r.label is g for r, g in zip(rows, got, strict=True))
    lines.append(f"overall {right}/{len(rows)} = {right / len(rows):.3f}")
    return "\n".join(lines)


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_holdout_is_frozen_large_and_bilingual(name: str) -> None:
    assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == FROZEN[name]
    rows = _rows(name)
    assert len(rows) >= 150
    assert 0.45 <= sum(r.lang != "en" for r in rows) / len(rows) <= 0.55
    assert set(Counter(r.label for r in rows)) == set(QueryType)


def test_no_holdout_query_is_in_the_training_data() -> None:
    """What the training script trains on: the labelled files minus any text the blind holdout
    also has (22 short or common queries of holdout-d, "ok", "go on", "regex to match an ipv4
    address", were also in older files; the script drops them from training rather than the
    frozen file being edited)."""
    spec = importlib.util.spec_from_file_location("train_router", TRAINER)
    assert spec is not None
    assert spec.loader is not None
    trainer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trainer)
    held = {r.query.strip().casefold() for r in _rows(BLIND)}
    training = {row["query"].strip().casefold() for row in trainer.training_rows()}
    assert len(training) > 1000
    assert not training & held


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_holdout_does_not_regress(name: str) -> None:
    rows = _rows(name)
    got = [classify(r.query) for r in rows]
    print(_table(name, rows, got))
    overall = sum(r.label is g for r, g in zip(rows, got, strict=True)) / len(rows)
    floor_overall, floor_class = FLOORS[name]
    assert overall >= floor_overall
    recall = _recall(rows, got)
    assert min(recall.values()) >= floor_class, recall


@pytest.mark.xfail(
    strict=True,
    reason="issue 20 target not met on holdout-d (scored once, blind): 0.963 overall (236/245) "
    "but testing 0.86 (31/36) < 0.90; code 0.99, reasoning 1.00, requirements 0.97, "
    "general 0.95, unknown 1.00",
)
def test_blind_holdout_meets_the_issue_target() -> None:
    """Only holdout-d counts: the others are training data, so meeting it there proves little."""
    rows = _rows(BLIND)
    got = [classify(r.query) for r in rows]
    overall = sum(r.label is g for r, g in zip(rows, got, strict=True)) / len(rows)
    assert overall >= TARGET_OVERALL
    assert min(_recall(rows, got).values()) >= TARGET_PER_CLASS
