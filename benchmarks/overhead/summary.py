"""Rows of every run, and their medians over the runs; the targets checked against the medians.

Differences and ratios are taken inside each run first (a row against the upstream row or the
forwarder row measured minutes apart in the same run), then the median of those is reported: on
a shared machine a ratio from one run means more than the ratio of two medians.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable

import msgspec

from benchmarks.overhead.generators import Result
from benchmarks.overhead.subjects import UPSTREAM, forwarder_label


class Row(msgspec.Struct, kw_only=True):
    """One subject, one scenario, one run."""

    run: int
    upstream: str  # "zero-delay" or "100 ms"
    scenario: str  # "c=1", "c=32", "stream c=1", "open 1000/s"
    label: str  # "upstream", "forwarder /v1", "new /api miss", ...
    kind: str  # "upstream", "forwarder" or "aiorch"
    endpoint: str
    hit: bool
    build: str | None
    result: Result
    cpu_us: float  # CPU time of the server under test per completed request
    system_us: float  # of which in the kernel
    cpu_percent: float  # of one core, over the measurement
    peak_rss_mb: float
    mock_cpu_percent: float


class Figures(msgspec.Struct, kw_only=True):
    """One subject in one scenario: medians over the runs, and each run's value."""

    upstream: str
    scenario: str
    label: str
    kind: str
    endpoint: str
    hit: bool
    build: str | None
    rate: float
    p50: float
    p99: float
    p999: float
    max: float
    errors: int
    ttft_p50: float | None
    cpu_us: float
    system_us: float
    cpu_percent: float
    peak_rss_mb: float
    mock_cpu_percent: float
    added_p50: float | None  # minus the upstream row of the same run
    added_p99: float | None
    added_ttft: float | None
    cpu_ratio: float | None  # over the forwarder row of the same endpoint and run
    build_ratio: float | None  # over the reference build's same row and run (several builds)
    runs: dict[str, list[float | None]]  # figure -> one value per run


class Check(msgspec.Struct, kw_only=True):
    issue: int
    name: str
    target: str
    measured: str
    met: bool


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(present) if present else None


def _num(value: float | None) -> float:
    return math.nan if value is None else value


def summarise(rows: list[Row], reference: str | None = None) -> list[Figures]:
    """One `Figures` per (upstream, scenario, label), in the order first measured. With several
    builds, `reference` names the one the others' CPU per request is divided by (same run)."""
    by_run = {(r.run, r.upstream, r.scenario, r.label): r for r in rows}
    keys = list(dict.fromkeys((r.upstream, r.scenario, r.label) for r in rows))
    out = []
    for upstream, scenario, label in keys:
        mine = sorted(
            (r for r in rows if (r.upstream, r.scenario, r.label) == (upstream, scenario, label)),
            key=lambda r: r.run,
        )

        def versus(row: Row, other: str, figure: Callable[[Row], float | None]) -> float | None:
            base = by_run.get((row.run, row.upstream, row.scenario, other))
            mine, theirs = figure(row), None if base is None else figure(base)
            return None if mine is None or theirs is None else mine - theirs

        def ratio(row: Row) -> float | None:
            base = by_run.get((row.run, row.upstream, row.scenario, forwarder_label(row.endpoint)))
            return row.cpu_us / base.cpu_us if base is not None and base.cpu_us > 0 else None

        def against_reference(row: Row) -> float | None:
            if reference is None or row.build is None or row.build == reference:
                return None
            twin = reference + row.label[len(row.build) :]
            base = by_run.get((row.run, row.upstream, row.scenario, twin))
            return row.cpu_us / base.cpu_us if base is not None and base.cpu_us > 0 else None

        first = mine[0]
        direct = first.kind == "upstream"
        runs: dict[str, list[float | None]] = {
            "req/s": [r.result.rate for r in mine],
            "p50 ms": [r.result.p50 for r in mine],
            "added p50 ms": [
                None if direct else versus(r, UPSTREAM, lambda x: x.result.p50) for r in mine
            ],
            "p99 ms": [r.result.p99 for r in mine],
            "added p99 ms": [
                None if direct else versus(r, UPSTREAM, lambda x: x.result.p99) for r in mine
            ],
            "ttft p50 ms": [r.result.ttft_p50 for r in mine],
            "added ttft ms": [
                None if direct else versus(r, UPSTREAM, lambda x: x.result.ttft_p50) for r in mine
            ],
            "CPU us/req": [r.cpu_us for r in mine],
            "x forwarder": [None if first.kind != "aiorch" else ratio(r) for r in mine],
            "x reference build": [against_reference(r) for r in mine],
        }
        out.append(
            Figures(
                upstream=upstream,
                scenario=scenario,
                label=label,
                kind=first.kind,
                endpoint=first.endpoint,
                hit=first.hit,
                build=first.build,
                rate=_num(_median(runs["req/s"])),
                p50=_num(_median(runs["p50 ms"])),
                p99=_num(_median(runs["p99 ms"])),
                p999=_num(_median(r.result.p999 for r in mine)),
                max=max(r.result.max for r in mine),
                errors=sum(r.result.errors for r in mine),
                ttft_p50=_median(runs["ttft p50 ms"]),
                cpu_us=_num(_median(runs["CPU us/req"])),
                system_us=_num(_median(r.system_us for r in mine)),
                cpu_percent=_num(_median(r.cpu_percent for r in mine)),
                peak_rss_mb=max(r.peak_rss_mb for r in mine),
                mock_cpu_percent=_num(_median(r.mock_cpu_percent for r in mine)),
                added_p50=_median(runs["added p50 ms"]),
                added_p99=_median(runs["added p99 ms"]),
                added_ttft=_median(runs["added ttft ms"]),
                cpu_ratio=_median(runs["x forwarder"]),
                build_ratio=_median(runs["x reference build"]),
                runs=runs,
            )
        )
    return out


def _find(figures: list[Figures], scenario: str, label: str) -> Figures | None:
    for f in figures:
        if (f.upstream, f.scenario, f.label) == ("zero-delay", scenario, label):
            return f
    return None


def _check(
    issue: int, name: str, target: str, value: float | None, limit: float, fmt: str, at_most: bool
) -> Check:
    """`fmt` is a format spec and a unit: ".2f x", "+.3f ms", ",.0f /s"."""
    if value is None:
        return Check(issue=issue, name=name, target=target, measured="not measured", met=False)
    spec, _, unit = fmt.partition(" ")
    met = value <= limit if at_most else value >= limit
    measured = format(value, spec) + (unit if unit in ("x", "/s") else f" {unit}")
    return Check(issue=issue, name=name, target=target, measured=measured, met=met)


def checks(figures: list[Figures], builds: list[str], connections: int) -> list[Check]:
    """Issue 19's targets (and issue 6's, still printed) for each build, on the medians."""
    busy, one = f"c={connections}", "c=1"
    out = []
    for build in builds:
        for endpoint in ("/v1", "/api"):
            for hit, limit in ((False, 2.0), (True, 1.2)):
                label = f"{build} {endpoint} {'hit' if hit else 'miss'}"
                f = _find(figures, busy, label)
                out.append(
                    _check(
                        19,
                        f"{label}: CPU per request / forwarder's, {busy}",
                        f"<= {limit}x",
                        None if f is None else f.cpu_ratio,
                        limit,
                        ".2f x",
                        True,
                    )
                )
        for endpoint in ("/v1", "/api"):
            f = _find(figures, one, f"{build} {endpoint} miss")
            out.append(
                _check(
                    19,
                    f"{build} {endpoint} miss: added p50, c=1",
                    "<= 0.3 ms",
                    None if f is None else f.added_p50,
                    0.3,
                    "+.3f ms",
                    True,
                )
            )
        f = _find(figures, "stream c=1", f"{build} /v1 miss")
        out.append(
            _check(
                19,
                f"{build} stream: added time to first token p50",
                "<= 0.3 ms",
                None if f is None else f.added_ttft,
                0.3,
                "+.3f ms",
                True,
            )
        )
        f = _find(figures, one, f"{build} /api miss")
        out.append(
            _check(
                6,
                f"{build} /api miss: added p99, c=1",
                "<= 2 ms",
                None if f is None else f.added_p99,
                2.0,
                "+.3f ms",
                True,
            )
        )
        for hit, floor in ((False, 3000.0), (True, 5000.0)):
            label = f"{build} /api {'hit' if hit else 'miss'}"
            f = _find(figures, busy, label)
            out.append(
                _check(
                    6,
                    f"{label}: requests/s, {busy}",
                    f">= {floor:,.0f}/s",
                    None if f is None else f.rate,
                    floor,
                    ",.0f /s",
                    False,
                )
            )
    return out
