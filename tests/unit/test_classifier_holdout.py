"""The router on queries it was not trained on: the frozen holdouts of issue 20.

Seven holdout files, each written in one sitting and committed before any router was scored on
it (docs/routing.md tells the order). Holdouts a, b and c (`holdout_frozen.jsonl`,
`holdout_b.jsonl`, `holdout_c.jsonl`) were each scored once blind in round one, holdout-d
(`holdout_d.jsonl`) in round two, holdout-e in round three, holdout-f in round four; all six are
training data since (a to c since round two, d since round three, e since round four, f since
round five), so their floors below are regression checks of the fit, not measures of
generalisation. `holdout_g.jsonl` is the blind one of round five: the training script never
trains on it. Run with `-rA` or `-s` for the tables.

The issue's target (95 % overall, 90 % in every class) is asserted on the blind file only. It is
not met (0.917 overall; testing 0.88, unknown 0.78): that test is a strict xfail, so it fails the
day it starts passing and the mark must go.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections import Counter
from pathlib import Path
from types import ModuleType
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
    # the older data was read; scored once, by round two's final model; training since round
    # three.
    "holdout_d.jsonl": "130d6c5fea1522bbdcd491f803e1d8a634067ecb88ce53368c75b26045c80513",
    # holdout-e: written 2026-12-05 by a fourth writer who never saw the router, its rules, its
    # training data or the older holdouts, only the label guidelines; frozen before round three's
    # model was scored on it.
    "holdout_e.jsonl": "8a210af75d44a858f15bc5bdb261e9e9071234e9fec9757468bd26a8d056cfc6",
    # holdout-f: written 2026-12-05 by a fifth writer from the label guidelines alone (nothing of
    # the repository read), committed before round four trained or scored anything.
    "holdout_f.jsonl": "21a492bc7d6c4e3197431d2dd3064fb0a797b056a47b6f6cfb2d31d075f99b54",
    # holdout-g: written 2026-12-05 by a seventh writer from the label guidelines alone (nothing
    # of the repository read), committed before round five trained or scored anything; the
    # trainer keeps it out.
    "holdout_g.jsonl": "5802c45e74c5de3f02c814ade72d7206c626ec1965135c366a98e525ec31201a",
}
TARGET_OVERALL, TARGET_PER_CLASS = 0.95, 0.90  # issue 20
# The one no training or tuning has read: round five's blind holdout, written by someone else
# from the label guidelines alone and committed before round five trained anything. The
# training script skips it and drops any training query whose text it has.
BLIND = "holdout_g.jsonl"
# What the shipped router holds on files it is trained on, less a query or two of slack for a
# retrain: they check the fit, not generalisation (holdouts a-c since round two, d since three).
FLOORS = {
    "holdout_frozen.jsonl": (0.97, 0.90),
    "holdout_b.jsonl": (0.97, 0.90),
    "holdout_c.jsonl": (0.97, 0.90),
    "holdout_d.jsonl": (0.97, 0.90),
    "holdout_e.jsonl": (0.97, 0.80),  # blind in round three (0.918); training since round four
    "holdout_f.jsonl": (0.97, 0.85),  # blind in round four (0.925); training since round five
    # Blind, scored once: 0.917, weakest class unknown 0.78 (14/18). A floor, not the target.
    "holdout_g.jsonl": (0.90, 0.75),
}


class Row(NamedTuple):
    query: str
    label: QueryType
    lang: str


def _rows(name: str) -> list[Row]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    return [Row(r["query"], QueryType(r["label"]), r["lang"]) for r in rows]


def _blind_rows() -> list[Row]:
    return _rows(BLIND)


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


def _trainer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_router", TRAINER)
    assert spec is not None
    assert spec.loader is not None
    trainer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trainer)
    return trainer


def test_the_trainer_keeps_out_only_the_blind_holdout() -> None:
    trainer = _trainer()
    assert trainer.BLIND == (BLIND,)
    sources = {row.get("batch") or row.get("split") for row in trainer.training_rows()}
    kept = {"holdout-a", "holdout-b", "holdout-c", "holdout-d", "holdout-e", "holdout-f", "train-l"}
    assert kept <= sources


def test_no_holdout_query_is_in_the_training_data() -> None:
    """What the training script trains on: the labelled files minus any text the blind holdout
    also has (short or common queries such as "ok" or "go on" turn up in several files; the
    script drops them from training rather than the frozen file being edited)."""
    held = {r.query.strip().casefold() for r in _blind_rows()}
    training = {row["query"].strip().casefold() for row in _trainer().training_rows()}
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
    reason="issue 20 target not met on holdout-g (scored once, blind, 2026-12-05): 0.917 overall "
    "(220/240) < 0.95; code 0.92, reasoning 0.93, requirements 0.97, testing 0.88 (37/42), "
    "general 0.95, unknown 0.78 (14/18)",
)
def test_blind_holdout_meets_the_issue_target() -> None:
    """Only the blind file counts: the others are training data, so meeting it there proves
    little."""
    rows = _blind_rows()
    got = [classify(r.query) for r in rows]
    print(_table(BLIND, rows, got))
    overall = sum(r.label is g for r, g in zip(rows, got, strict=True)) / len(rows)
    assert overall >= TARGET_OVERALL
    assert min(_recall(rows, got).values()) >= TARGET_PER_CLASS
