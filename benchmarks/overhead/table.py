"""The printed table: each scenario straight to the upstream, through aiorch, and the difference."""

from __future__ import annotations

import math

import msgspec
from rich.console import Console
from rich.table import Table

from benchmarks.overhead.generators import Result


class Row(msgspec.Struct, kw_only=True):
    upstream: str  # "zero-delay" or "100 ms"
    scenario: str  # "c=1", "c=32", "open 200/s", "cache hit c=32", "stream c=1", ...
    path: str  # "direct" (straight to the mock) or "aiorch"
    result: Result
    aiorch_cpu_percent: float | None  # of one core; None on direct rows
    aiorch_peak_rss_mb: float | None
    mock_cpu_percent: float
    slices: list[Result] = []  # the alternating slices the figures are medians of


class Added(msgspec.Struct, kw_only=True):
    """Through aiorch minus direct, same scenario, same run."""

    upstream: str
    scenario: str
    p50_ms: float
    p99_ms: float
    p999_ms: float
    rate_ratio: float  # aiorch's achieved rate / direct's
    ttft_p50_ms: float | None = None


class Check(msgspec.Struct, kw_only=True):
    name: str
    target: str
    measured: str
    met: bool


def added(direct: Row, through: Row) -> Added:
    d, a = direct.result, through.result
    ttft = (
        round(a.ttft_p50 - d.ttft_p50, 4)
        if a.ttft_p50 is not None and d.ttft_p50 is not None
        else None
    )
    return Added(
        upstream=through.upstream,
        scenario=through.scenario,
        p50_ms=round(a.p50 - d.p50, 4),
        p99_ms=round(a.p99 - d.p99, 4),
        p999_ms=round(a.p999 - d.p999, 4),
        rate_ratio=round(a.rate / d.rate, 3) if d.rate else math.nan,
        ttft_p50_ms=ttft,
    )


def _ms(value: float | None, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "-"
    text = f"{value:+.3f}" if signed else f"{value:.3f}"
    return text if abs(value) < 1000 else f"{value:+,.0f}" if signed else f"{value:,.0f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def render(rows: list[Row], diffs: dict[tuple[str, str], Added], console: Console) -> None:
    for upstream in dict.fromkeys(r.upstream for r in rows):
        table = Table(
            title=f"upstream: {upstream}  (latency in ms; CPU in % of one core)",
            title_justify="left",
            show_edge=False,
            pad_edge=False,
        )
        for heading in ("scenario", "path", "generator"):
            table.add_column(heading)
        for heading in (
            "rate/s",
            "p50",
            "p99",
            "p99.9",
            "max",
            "errors",
            "aiorch CPU",
            "aiorch RSS MB",
            "mock CPU",
        ):
            table.add_column(heading, justify="right")
        previous = ""
        for row in (r for r in rows if r.upstream == upstream):
            res = row.result
            stream = row.scenario.startswith("stream")
            p50 = f"{_ms(res.p50)} (ttft {_ms(res.ttft_p50)})" if stream else _ms(res.p50)
            table.add_row(
                row.scenario if row.scenario != previous else "",
                row.path,
                res.generator,
                f"{res.rate:,.0f}",
                p50,
                _ms(res.p99),
                _ms(res.p999),
                _ms(res.max),
                str(res.errors),
                _pct(row.aiorch_cpu_percent),
                "-" if row.aiorch_peak_rss_mb is None else f"{row.aiorch_peak_rss_mb:.0f}",
                _pct(row.mock_cpu_percent),
            )
            previous = row.scenario
            diff = diffs.get((upstream, row.scenario))
            if diff is not None and row.path == "aiorch":
                ttft = (
                    f" (ttft {_ms(diff.ttft_p50_ms, True)})" if diff.ttft_p50_ms is not None else ""
                )
                table.add_row(
                    "",
                    "[bold]added[/bold]",
                    "",
                    f"x{diff.rate_ratio:.2f}",
                    f"[bold]{_ms(diff.p50_ms, True)}{ttft}[/bold]",
                    f"[bold]{_ms(diff.p99_ms, True)}[/bold]",
                    f"[bold]{_ms(diff.p999_ms, True)}[/bold]",
                    "",
                    "",
                    "",
                    "",
                    "",
                    end_section=True,
                )
        console.print(table)
        console.print()


def render_checks(checks: list[Check], console: Console) -> None:
    table = Table(
        title="issue 6 targets (one worker, zero-delay upstream)",
        title_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    for heading in ("target", "wanted", "measured", ""):
        table.add_column(heading)
    for check in checks:
        table.add_row(
            check.name,
            check.target,
            check.measured,
            "[green]met[/green]" if check.met else "[red]NOT met[/red]",
        )
    console.print(table)


def diffs_of(rows: list[Row]) -> dict[tuple[str, str], Added]:
    by_key = {(r.upstream, r.scenario, r.path): r for r in rows}
    diffs: dict[tuple[str, str], Added] = {}
    for (upstream, scenario, path), row in by_key.items():
        if path != "aiorch":
            continue
        if scenario.startswith("cache hit"):
            direct = by_key.get((upstream, scenario.replace("cache hit ", ""), "direct"))
        else:
            direct = by_key.get((upstream, scenario, "direct"))
        if direct is not None:
            diffs[(upstream, scenario)] = added(direct, row)
    return diffs


def checks(diffs: dict[tuple[str, str], Added], rows: list[Row], connections: int) -> list[Check]:
    def rate(scenario: str) -> float:
        found = [
            r.result.rate
            for r in rows
            if r.upstream == "zero-delay" and r.scenario == scenario and r.path == "aiorch"
        ]
        return found[0] if found else 0.0

    one = diffs.get(("zero-delay", "c=1"))
    stream = diffs.get(("zero-delay", "stream c=1"))
    out = []
    if one is not None:
        out.append(
            Check(
                name="added p50 at c=1",
                target="<= 0.5 ms",
                measured=f"{one.p50_ms:+.3f} ms",
                met=one.p50_ms <= 0.5,
            )
        )
        out.append(
            Check(
                name="added p99 at c=1",
                target="<= 2 ms",
                measured=f"{one.p99_ms:+.3f} ms",
                met=one.p99_ms <= 2.0,
            )
        )
    miss, hit = rate(f"c={connections}"), rate(f"cache hit c={connections}")
    out.append(
        Check(
            name=f"cache-miss rate at c={connections}",
            target=">= 3,000/s",
            measured=f"{miss:,.0f}/s",
            met=miss >= 3000,
        )
    )
    out.append(
        Check(
            name=f"cache-hit rate at c={connections}",
            target=">= 5,000/s",
            measured=f"{hit:,.0f}/s",
            met=hit >= 5000,
        )
    )
    if stream is not None and stream.ttft_p50_ms is not None:
        out.append(
            Check(
                name="added time to first token (p50)",
                target="<= 1 ms",
                measured=f"{stream.ttft_p50_ms:+.3f} ms",
                met=stream.ttft_p50_ms <= 1.0,
            )
        )
    return out
