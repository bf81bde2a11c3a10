"""The guide's two scripts (sections 3 and 4), as commands over the bench engine.

`scripts/testing/kimi_benchmark.py` and `scripts/testing/orchestrator_latency_smoke.py` only call
these, so the scripts and `aiorch bench` measure the same way.
"""

from __future__ import annotations

import sys
import time

import click
import msgspec

from aiorch.bench.engine import measure, offline, run_loop
from aiorch.bench.mix import Picker, QueryItem
from aiorch.bench.report import latency_table, make_console, print_errors
from aiorch.bench.runner import Plan, run
from aiorch.bench.stats import latency_stats
from aiorch.bench.targets import BackendTarget, OrchestratorTarget, Outcome
from aiorch.clients import KimiClient, KimiConfig
from aiorch.config import Settings, load_settings
from aiorch.errors import ConfigError
from aiorch.types import QueryType

KIMI_COLUMNS = ("min", "avg", "p50", "p95", "max")
KIMI_PROMPT = (
    "A train leaves at 9:40 and arrives at 13:05 the same day. How long is the trip? "
    "Answer in one sentence."
)
SKIP_REASON = (
    "neither KIMI_API_KEY nor KIMI_OLLAMA_URL (nor KIMI_BASE_URL) is set, so there is no Kimi "
    "backend to measure. Set KIMI_API_KEY for Moonshot's API, or KIMI_OLLAMA_URL for an Ollama "
    "server, and run it again."
)
# Five queries, sent in order and then again: the second round shows the cache's effect.
SMOKE_QUERIES: tuple[QueryItem, ...] = (
    QueryItem("Write a Python function that reverses a linked list.", QueryType.CODE),
    QueryItem("Why does a thinking model need a larger max_tokens?", QueryType.REASONING),
    QueryItem("Сформулируй требования к восстановлению пароля.", QueryType.REQUIREMENTS),
    QueryItem("Write pytest tests for a slugify() function.", QueryType.TESTING),
    QueryItem("Hello! What can you do?", None),
)


@click.command(context_settings={"show_default": True})
@click.option("--requests", type=click.IntRange(1), default=10, help="How many requests.")
@click.option("--concurrency", type=click.IntRange(1), default=2, help="How many at a time.")
@click.option("--prompt", default=KIMI_PROMPT, help="What to ask.")
@click.option("--max-tokens", type=click.IntRange(1), default=None, help="Default: KIMI config.")
@click.option("--thinking/--no-thinking", default=None, help="Default: the model's own.")
@click.option("--stream", is_flag=True, help="Stream, and report time to first text too.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
@click.option("--progress/--no-progress", default=True)
def kimi_benchmark(
    requests: int,
    concurrency: int,
    prompt: str,
    max_tokens: int | None,
    thinking: bool | None,
    stream: bool,
    as_json: bool,
    progress: bool,
) -> None:
    """Measure Kimi-K2-Thinking straight through KimiClient (the guide's section 3)."""
    try:
        config = KimiConfig.from_env()
    except ConfigError as error:
        click.echo(f"kimi benchmark: bad configuration: {error.message}", err=True)
        sys.exit(2)
    if not config.is_configured:
        if as_json:
            click.echo(to_text({"skipped": True, "reason": SKIP_REASON}))
        else:
            click.echo(f"Kimi benchmark skipped: {SKIP_REASON}")
        return
    target = BackendTarget(
        KimiClient(config), max_tokens=max_tokens, thinking=thinking, stream=stream
    )
    plan = Plan(concurrency=concurrency, requests=requests)
    console = make_console()
    if not as_json:
        console.print(
            f"Kimi benchmark: {requests} requests, concurrency {concurrency}, {target.description}"
        )
    bar = make_console(stderr=True) if progress and not as_json else None
    picker = Picker([QueryItem(prompt)], in_order=True)
    summary, _ = run_loop(measure(target, picker, plan, console=bar, label="kimi"))
    if as_json:
        click.echo(to_text({"skipped": False, **msgspec.to_builtins(summary)}))
    else:
        console.print(
            f"ok {summary.ok}, errors {summary.errors}, {summary.duration_s:.2f} s, "
            f"{summary.achieved_rate:.2f} requests/s"
        )
        rows = [("latency", summary.latency_ms), ("time to first text", summary.ttft_ms)]
        if summary.latency_ms is not None:
            console.print(latency_table(rows, KIMI_COLUMNS))
        print_errors(summary.errors_by_type, console)
    if summary.ok == 0:
        sys.exit(1)


class SmokeRecord(msgspec.Struct, frozen=True):
    index: int
    query_type: str  # as sent; "auto" means the classifier chose
    selected_service: str | None
    cached: bool
    ms: float


class _Timed:
    """Wraps a target to keep every request's own record, for the per-request listing."""

    def __init__(self, inner: OrchestratorTarget) -> None:
        self.inner = inner
        self.description = inner.description
        self.records: list[SmokeRecord] = []

    async def call(self, item: QueryItem) -> Outcome:
        started = time.perf_counter()
        outcome = await self.inner.call(item)
        elapsed = time.perf_counter() - started
        self.records.append(
            SmokeRecord(
                index=len(self.records) + 1,
                query_type=item.query_type.value if item.query_type else "auto",
                selected_service=outcome.service,
                cached=outcome.cached,
                ms=round(elapsed * 1000, 4),
            )
        )
        return outcome

    async def close(self) -> None:
        await self.inner.close()


def smoke_settings() -> Settings:
    """The environment's settings with every backend offline; defaults if they do not load."""
    try:
        return offline(load_settings())
    except ConfigError as error:
        click.echo(f"note: ignoring the configuration ({error.message}); using defaults", err=True)
        return offline(load_settings(environ={}))


@click.command(context_settings={"show_default": True})
@click.option("--requests", type=click.IntRange(1), default=10, help="How many requests.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def latency_smoke(requests: int, as_json: bool) -> None:
    """Time AIOrchestrator.process_query with external clients disabled (the guide's section 4).

    No asserts: the figures are for comparing branches and commits by eye.
    """
    target = _Timed(OrchestratorTarget(smoke_settings()))
    picker = Picker(SMOKE_QUERIES, in_order=True)

    async def go() -> None:
        try:
            await run(target, picker, Plan(concurrency=1, requests=requests))
        finally:
            await target.close()

    run_loop(go())
    times = [record.ms for record in target.records]
    stats = latency_stats([t / 1000 for t in times])
    mean = sum(times) / len(times) if times else 0.0
    figures = {
        "mean_ms": round(mean, 4),
        "p50_ms": stats.p50 if stats else None,
        "p95_ms": stats.p95 if stats else None,
    }
    if as_json:
        click.echo(to_text({"requests": target.records, **figures, "offline": True}))
        return
    click.echo(f"Orchestrator latency smoke (offline backends): {requests} requests, one at a time")
    for record in target.records:
        cache = "cache hit" if record.cached else "cache miss"
        click.echo(
            f"  #{record.index:<3} {record.query_type:<13} -> {record.selected_service!s:<6} "
            f"{cache:<10} {record.ms:9.3f} ms"
        )
    failed = requests - len(times)
    click.echo(
        f"mean {mean:.3f} ms, p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms"
        + (f", {failed} failed" if failed else "")
    )


def to_text(value: object) -> str:
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()
