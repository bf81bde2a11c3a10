"""What classification costs per query: median and p99 over real queries, and 100 KB pastes.

    .venv/bin/python -m benchmarks.classifier [--rounds 20]

Times `classify` (the router: rules, then the model when the rules are unsure) and the rules
alone over every labelled query in `tests/unit/data` (training and holdout files), and over
100 KB inputs that stress the bounded windows: a fenced paste with a question after it,
unbroken prose, and one word repeated. CPU time of this thread (`time.thread_time_ns`), the best
of `--rounds` rounds per query, so other processes on a shared machine inflate the figures less.
Prints figures; asserts nothing (docs/routing.md quotes them).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import click

from aiorch.classifier import DEFAULT_ROUTER, Router
from aiorch.types import QueryType

DATA = Path(__file__).resolve().parents[1] / "tests" / "unit" / "data"

PASTES = {
    "100 KB fenced paste + question": "```python\n"
    + "def f(x):\n    return x + 1\n" * 3700
    + "```\nwrite unit tests for the code above",
    "100 KB of prose-like text": "lorem ipsum dolor sit amet " * 3800,
    "100 KB, one word repeated": "select " * 14_500,
    "100 KB, no spaces": "a" * 100_000,
}


def _queries() -> list[str]:
    queries = []
    for path in sorted(DATA.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            queries.append(json.loads(line)["query"])
    return queries


def _best_times(
    classify: Callable[[str], QueryType], queries: Sequence[str], rounds: int
) -> list[int]:
    best = [2**63] * len(queries)
    for _ in range(rounds):
        for i, query in enumerate(queries):
            start = time.thread_time_ns()
            classify(query)
            best[i] = min(best[i], time.thread_time_ns() - start)
    return best


def _us(ns: float) -> str:
    return f"{ns / 1000:8.1f} us"


@click.command()
@click.option("--rounds", default=20, show_default=True, help="rounds per query; best kept")
def main(rounds: int) -> None:
    queries = _queries()
    deciders = {"router (classify)": DEFAULT_ROUTER.classify, "rules alone": Router().classify}
    decided_by_model = sum(DEFAULT_ROUTER.explain(q).signal == "model" for q in queries)
    click.echo(f"{len(queries)} labelled queries; the model decided {decided_by_model} of them")
    for name, classify in deciders.items():
        times = sorted(_best_times(classify, queries, rounds))
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        click.echo(
            f"{name:<20} median {_us(statistics.median(times))}   p99 {_us(p99)}"
            f"   max {_us(times[-1])}"
        )
    for name, paste in PASTES.items():
        (cost,) = _best_times(DEFAULT_ROUTER.classify, [paste], max(3, rounds // 4))
        verdict = DEFAULT_ROUTER.explain(paste)
        click.echo(f"{name:<32} {_us(cost)}   -> {verdict.query_type} ({verdict.header})")


if __name__ == "__main__":
    main()
