"""Score router candidates on a labelled file: per class, per language, overall, and cost.

    python scripts/compare_routers.py                    # holdout-g, the blind one
    python scripts/compare_routers.py --data tests/unit/data/holdout_b.jsonl
    python scripts/compare_routers.py --markdown         # the tables in docs/routing.md

Candidates: the rules alone (the router before issue 20), the model alone (the rules still
decide `unknown` for no words and for asks of two kinds), round one's arbitration (rules when
they lead by `sure_margin` points, whatever the class) and the shipped router (the same, but
reasoning only when a maths feature voted). Cost is the median CPU time of one classification
over the file's queries (best of 5 rounds), on this machine.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from aiorch.classifier import DEFAULT_ROUTER, Router
from aiorch.types import QueryType

ROOT = Path(__file__).resolve().parents[1]
HOLDOUT = ROOT / "tests" / "unit" / "data" / "holdout_g.jsonl"
CLASSES = tuple(QueryType)


def candidates() -> dict[str, Callable[[str], QueryType]]:
    margin, model = f"{DEFAULT_ROUTER.sure_margin:g}", DEFAULT_ROUTER.model
    return {
        "rules alone": Router(model=None).classify,
        "model alone": Router(model=model, sure_margin=math.inf).classify,
        f"rules >= {margin}, else model": Router(model=model, sure_needs={}).classify,
        f"rules >= {margin} (reasoning: maths only), else model (shipped)": DEFAULT_ROUTER.classify,
    }


def median_us(classify: Callable[[str], QueryType], queries: Sequence[str]) -> float:
    best: list[float] = []
    for _ in range(5):
        times = []
        for query in queries:
            start = time.thread_time_ns()
            classify(query)
            times.append(time.thread_time_ns() - start)
        best = times if not best else [min(a, b) for a, b in zip(best, times, strict=True)]
    return statistics.median(best) / 1000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=HOLDOUT)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines()]
    labels = [QueryType(r["label"]) for r in rows]
    langs = ["en" if r["lang"] == "en" else "ru" for r in rows]
    columns = [c.value for c in CLASSES] + ["en", "ru/mixed", "overall", "median us"]
    table = []
    for name, classify in candidates().items():
        got = [classify(r["query"]) for r in rows]
        cells = []
        for kind in CLASSES:
            mine = [g is kind for g, want in zip(got, labels, strict=True) if want is kind]
            cells.append(f"{sum(mine) / len(mine):.2f} ({sum(mine)}/{len(mine)})")
        for lang in ("en", "ru"):
            mine = [g is w for g, w, la in zip(got, labels, langs, strict=True) if la == lang]
            cells.append(f"{sum(mine) / len(mine):.3f}")
        right = sum(g is w for g, w in zip(got, labels, strict=True))
        cells.append(f"**{right / len(rows):.3f}** ({right}/{len(rows)})")
        cells.append(f"{median_us(classify, [r['query'] for r in rows]):.0f}")
        table.append((name, cells))
        wrong_unknown = sum(
            g is QueryType.UNKNOWN and w is not QueryType.UNKNOWN
            for g, w in zip(got, labels, strict=True)
        )
        if not args.markdown:
            print(f"{name}: {wrong_unknown} queries sent to both models needlessly")
    if args.markdown:
        print("| candidate | " + " | ".join(columns) + " |")
        print("|---" * (len(columns) + 1) + "|")
        for name, cells in table:
            print(f"| {name} | " + " | ".join(cells) + " |")
    else:
        print(" " * 13 + "".join(f"{name[:21]:>22}" for name, _ in table))
        for i, column in enumerate(columns):
            print(f"{column:<13}" + "".join(f"{cells[i]:>22}" for _, cells in table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
