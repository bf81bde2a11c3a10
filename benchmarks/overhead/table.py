"""The printed tables: the headline (issue 19's columns), every run's figures, the details."""

from __future__ import annotations

import math
import statistics

from rich.console import Console
from rich.table import Table

from benchmarks.overhead.summary import Check, Figures


def _ms(value: float | None, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return "-"
    text = f"{value:+.3f}" if signed else f"{value:.3f}"
    return text if abs(value) < 1000 else f"{value:+,.0f}" if signed else f"{value:,.0f}"


def _us(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.0f}"


def _x(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}x"


def _table(title: str, headings: list[str], right_from: int) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for i, heading in enumerate(headings):
        table.add_column(heading, justify="right" if i >= right_from else "left")
    return table


def _get(figures: list[Figures], scenario: str, label: str) -> Figures | None:
    for f in figures:
        if (f.upstream, f.scenario, f.label) == ("zero-delay", scenario, label):
            return f
    return None


def render_headline(figures: list[Figures], connections: int, runs: int, out: Console) -> None:
    """One line per subject: latency at c=1, throughput and CPU at c=N, the ratios."""
    busy = f"c={connections}"
    builds = any(f.build_ratio is not None for f in figures)
    table = _table(
        f"zero-delay upstream, median of {runs} run(s); CPU = the server under test's CPU time "
        "per completed request (us); x fwd = over the forwarder of the same endpoint, same run"
        + ("; x ref = over the first build's same row, same run" if builds else ""),
        [
            "path",
            "c=1 p50 ms",
            "added p50",
            "c=1 CPU us",
            "x fwd",
            f"{busy} req/s",
            f"{busy} CPU us",
            "x fwd",
            *(["x ref"] if builds else []),
            "errors",
        ],
        1,
    )
    labels = dict.fromkeys(f.label for f in figures if f.scenario in ("c=1", busy))
    previous = ""
    for label in labels:
        one, many = _get(figures, "c=1", label), _get(figures, busy, label)
        group = label.split(" ")[0]
        if previous and group != previous:
            table.add_section()
        previous = group
        table.add_row(
            label,
            _ms(one.p50 if one else None),
            _ms(one.added_p50 if one else None, signed=True),
            _us(one.cpu_us if one else None),
            _x(one.cpu_ratio if one else None),
            "-" if many is None else f"{many.rate:,.0f}",
            _us(many.cpu_us if many else None),
            _x(many.cpu_ratio if many else None),
            *([_x(many.build_ratio if many else None)] if builds else []),
            str((one.errors if one else 0) + (many.errors if many else 0)),
        )
    out.print(table)
    out.print()
    streams = [f for f in figures if f.scenario.startswith("stream")]
    if not streams:
        return
    table = _table(
        f"streamed /v1/chat/completions, c=1, median of {runs} run(s) (a unique query each: "
        "a miss); CPU per stream",
        [
            "path",
            "ttft p50 ms",
            "added ttft",
            "end p50 ms",
            "added end",
            "CPU us",
            "x fwd",
            *(["x ref"] if builds else []),
            "errors",
        ],
        1,
    )
    for f in streams:
        table.add_row(
            f.label,
            _ms(f.ttft_p50),
            _ms(f.added_ttft, signed=True),
            _ms(f.p50),
            _ms(f.added_p50, signed=True),
            _us(f.cpu_us),
            _x(f.cpu_ratio if f.kind == "aiorch" else None),
            *([_x(f.build_ratio)] if builds else []),
            str(f.errors),
        )
    out.print(table)
    out.print()


# The figures of each run shown per scenario: the ones the targets and the headline are read from.
PER_RUN = {
    "c=1": ("p50 ms", "added p50 ms", "CPU us/req"),
    "busy": ("req/s", "CPU us/req", "x forwarder", "x reference build"),
    "stream c=1": (
        "ttft p50 ms",
        "added ttft ms",
        "CPU us/req",
        "x forwarder",
        "x reference build",
    ),
}


def render_runs(figures: list[Figures], connections: int, runs: int, out: Console) -> None:
    table = _table(
        "every run (zero-delay upstream); the last column is the median",
        ["scenario", "path", "figure", *(f"run {i + 1}" for i in range(runs)), "median"],
        3,
    )
    for scenario in ("c=1", f"c={connections}", "stream c=1"):
        key = "busy" if scenario == f"c={connections}" else scenario
        for f in (f for f in figures if f.upstream == "zero-delay" and f.scenario == scenario):
            for figure in PER_RUN[key]:
                values = f.runs[figure]
                if all(v is None for v in values):
                    continue
                fmt = _x if figure.startswith("x ") else _us if "/" in figure else _ms
                signed = figure.startswith("added")
                cells = [_ms(v, True) if signed else fmt(v) for v in values]
                median = statistics.median(v for v in values if v is not None)
                table.add_row(
                    scenario,
                    f.label,
                    figure,
                    *cells,
                    _ms(median, True) if signed else fmt(median),
                )
        table.add_section()
    out.print(table)
    out.print()


def render_details(figures: list[Figures], out: Console) -> None:
    """Every scenario and subject: tails, errors, CPU and memory (medians over the runs)."""
    for upstream in dict.fromkeys(f.upstream for f in figures):
        table = _table(
            f"details, upstream {upstream} (medians over runs; latency in ms; the server under "
            "test's CPU in % of one core and per request in us, of which in the kernel; the "
            "mock's CPU)",
            [
                "scenario",
                "path",
                "rate/s",
                "p50",
                "p99",
                "p99.9",
                "max",
                "added p99",
                "errors",
                "CPU",
                "CPU us",
                "in kernel",
                "RSS MB",
                "mock CPU",
            ],
            2,
        )
        previous = ""
        for f in (f for f in figures if f.upstream == upstream):
            if previous and f.scenario != previous:
                table.add_section()
            table.add_row(
                f.scenario if f.scenario != previous else "",
                f.label,
                f"{f.rate:,.0f}",
                _ms(f.p50),
                _ms(f.p99),
                _ms(f.p999),
                _ms(f.max),
                _ms(f.added_p99, signed=True),
                str(f.errors),
                f"{f.cpu_percent:.0f}%",
                _us(f.cpu_us),
                _us(f.system_us),
                f"{f.peak_rss_mb:.0f}",
                f"{f.mock_cpu_percent:.0f}%",
            )
            previous = f.scenario
        out.print(table)
        out.print()


def render_checks(checks: list[Check], out: Console) -> None:
    table = _table(
        "targets (one worker, zero-delay upstream, medians over the runs)",
        ["issue", "target", "wanted", "measured", ""],
        5,
    )
    previous = 0
    for check in sorted(checks, key=lambda c: -c.issue):
        if previous and check.issue != previous:
            table.add_section()
        previous = check.issue
        table.add_row(
            str(check.issue),
            check.name,
            check.target,
            check.measured,
            "[green]met[/green]" if check.met else "[red]NOT met[/red]",
        )
    out.print(table)
