"""Showing a run: the percentile table, errors by type, per-service lines, JSON and a plot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import msgspec
from rich.console import Console
from rich.table import Table

from aiorch.bench.stats import LatencyStats, Summary

ALL_COLUMNS: tuple[str, ...] = ("min", "avg", "p50", "p95", "p99", "p999", "max")
HEADINGS = {"p999": "p99.9"}


def make_console(*, stderr: bool = False) -> Console:
    """A console that does not wrap the tables at 80 columns when output is piped."""
    console = Console(stderr=stderr)
    if not console.is_terminal:
        console = Console(stderr=stderr, width=160)
    return console


def to_json(summary: Summary) -> str:
    return msgspec.json.format(msgspec.json.encode(summary), indent=2).decode()


def _ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:,.3f}" if value < 100 else f"{value:,.1f}"


def latency_table(
    rows: Sequence[tuple[str, LatencyStats | None]],
    columns: Sequence[str] = ALL_COLUMNS,
    title: str = "latency, ms",
) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("")
    table.add_column("n", justify="right")
    for column in columns:
        table.add_column(HEADINGS.get(column, column), justify="right")
    for name, stats in rows:
        if stats is None:
            continue
        values = [_ms(float(getattr(stats, column))) for column in columns]
        table.add_row(name, str(stats.count), *values)
    return table


def print_summary(
    summary: Summary, console: Console, *, columns: Sequence[str] = ALL_COLUMNS
) -> None:
    mode = (
        f"open loop at {summary.target_rate:g} requests/s"
        if summary.mode == "open"
        else f"closed loop, concurrency {summary.concurrency}"
    )
    console.print(f"[bold]{summary.target}[/bold]: {mode}", soft_wrap=True)
    console.print(
        f"requests {summary.requests}, ok {summary.ok}, errors {summary.errors}, "
        f"cache hits {summary.cached}, {summary.duration_s:.2f} s, "
        f"achieved {summary.achieved_rate:,.1f} requests/s"
    )
    latency_name = "latency (from intended send)" if summary.mode == "open" else "latency"
    rows: list[tuple[str, LatencyStats | None]] = [
        (latency_name, summary.latency_ms),
        ("service time", summary.service_time_ms),
        ("generator lag", summary.generator_lag_ms),
        ("time to first text", summary.ttft_ms),
    ]
    if summary.latency_ms is None:
        console.print("no successful request: no latency to show")
    else:
        console.print(latency_table(rows, columns))
    if len(summary.by_service) > 1 or any(s.cached for s in summary.by_service.values()):
        table = Table(title="by service", title_justify="left", show_edge=False, pad_edge=False)
        for heading in ("service", "n", "cached", "p50", "p95", "p99"):
            table.add_column(heading, justify="left" if heading == "service" else "right")
        for name, stats in summary.by_service.items():
            lat = stats.latency_ms
            cells = [_ms(lat.p50), _ms(lat.p95), _ms(lat.p99)] if lat else ["-", "-", "-"]
            table.add_row(name, str(stats.count), str(stats.cached), *cells)
        console.print(table)
    print_errors(summary.errors_by_type, console)


def print_errors(errors: dict[str, int], console: Console) -> None:
    if not errors:
        console.print("errors by type: none")
        return
    total = sum(errors.values())
    table = Table(title="errors by type", title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("error_type")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    for name, count in errors.items():
        table.add_row(name, str(count), f"{100 * count / total:.1f}%")
    console.print(table)


def plot(latencies_s: Sequence[float], path: Path, title: str) -> None:
    """A histogram (log-spaced bins) and the CDF of the latencies, as a PNG.

    matplotlib is optional (the `bench` extra); without it this raises `RuntimeError`.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise RuntimeError("--plot needs matplotlib: pip install 'aiorch[bench]'") from error
    values = sorted(v * 1000.0 for v in latencies_s if v > 0)
    if not values:
        raise RuntimeError("no successful request to plot")
    low, high = values[0], values[-1]
    if high <= low:
        high = low * 1.01 + 1e-6
    bins = [low * (high / low) ** (i / 60) for i in range(61)]
    figure, (histogram, cdf) = plt.subplots(1, 2, figsize=(12, 4.5))
    histogram.hist(values, bins=bins, color="#3b78c2")
    histogram.set_xscale("log")
    histogram.set_xlabel("latency, ms (log scale)")
    histogram.set_ylabel("requests")
    histogram.set_title("histogram")
    count = len(values)
    cdf.plot(values, [(i + 1) / count for i in range(count)], color="#c2543b")
    cdf.set_xscale("log")
    cdf.set_xlabel("latency, ms (log scale)")
    cdf.set_ylabel("share of requests at or below")
    cdf.set_title("CDF")
    cdf.grid(True, which="both", alpha=0.3)
    for q in (0.5, 0.99):
        cdf.axhline(q, color="grey", linewidth=0.6, linestyle="--")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
