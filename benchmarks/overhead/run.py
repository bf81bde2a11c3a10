"""`python -m benchmarks.overhead`: what aiorch costs per request, beside a bare forwarder, one run.

Starts the mock upstream, the bare forwarder (`forwarder.py`) and `aiorch serve` (one worker
unless told otherwise; several builds at once with `--aiorch NAME=PYTHON`) on free loopback
ports, then measures, `--runs` times over:

  c=1, c=N      closed loop (wrk if installed): straight to the mock, through the forwarder
                (/v1 and /api shaped), through each build (/v1 and /api, misses and cache hits)
  stream c=1    /v1/chat/completions streamed: the mock, the forwarder, each build
  open R/s      (with --rates) open loop at fixed rates, latency from the intended send
  D ms          (with --delay-ms) the same misses against a fixed-delay upstream

Every row reports the server under test's CPU time per completed request (its process tree, from
/proc via psutil, over the measurement) and, for aiorch, the ratio to the forwarder's of the same
endpoint in the same run. The generators run in their own processes (wrk) or in this one, never
in a measured server. Figures are medians over the runs; each run's figures are printed too.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from pathlib import Path

import click
import msgspec
import psutil

from aiorch.bench.report import make_console
from benchmarks.overhead import servers
from benchmarks.overhead.generators import RawPost, Result, run_python, run_wrk, write_json
from benchmarks.overhead.generators import wrk_path as find_wrk
from benchmarks.overhead.servers import Proc, Sampler, set_delay, settings_block
from benchmarks.overhead.shapes import QUERY
from benchmarks.overhead.subjects import Subject, closed_loop, misses, streamed
from benchmarks.overhead.summary import Row, checks, summarise
from benchmarks.overhead.table import render_checks, render_details, render_headline, render_runs

ZERO = "zero-delay"


class Bench:
    """Measures subjects one after the other and keeps a row for each."""

    def __init__(self, mock: Proc, *, duration: float, use_wrk: bool, threads: int) -> None:
        self.mock = mock
        self.duration, self.use_wrk, self.threads = duration, use_wrk, threads
        self.run = 0
        self.rows: list[Row] = []
        self.console = make_console(stderr=True)

    def measure(
        self, upstream: str, scenario: str, subject: Subject, go: Callable[[], Result]
    ) -> Row:
        with Sampler(subject.server.process.pid) as server, Sampler(self.mock.process.pid) as mock:
            result = go()
        assert server.usage is not None
        assert mock.usage is not None
        row = Row(
            run=self.run,
            upstream=upstream,
            scenario=scenario,
            label=subject.label,
            kind=subject.kind,
            endpoint=subject.endpoint,
            hit=subject.hit,
            build=subject.build,
            result=result,
            cpu_us=round(server.usage.cpu_seconds * 1e6 / max(result.requests, 1), 1),
            system_us=round(server.usage.system_seconds * 1e6 / max(result.requests, 1), 1),
            cpu_percent=server.usage.cpu_percent,
            peak_rss_mb=server.usage.peak_rss_mb,
            mock_cpu_percent=mock.usage.cpu_percent,
        )
        ttft = "" if result.ttft_p50 is None else f"  ttft {result.ttft_p50:7.3f} ms"
        self.console.print(
            f"  run {self.run + 1} {upstream:>10} {scenario:<11} {subject.label:<16}"
            f" {result.rate:>8,.0f}/s  p50 {result.p50:7.3f} ms{ttft}  p99 {result.p99:8.3f} ms"
            f"  CPU {row.cpu_us:6,.0f} us/req  errors {result.errors}"
        )
        self.rows.append(row)
        return row

    def closed(self, subject: Subject, connections: int) -> Result:
        if self.use_wrk:
            return run_wrk(
                subject.server.url,
                subject.path,
                subject.headers,
                subject.shape,
                connections=connections,
                duration=self.duration,
                threads=self.threads,
                unique=subject.unique,
            )
        return self.python(subject, concurrency=connections)

    def python(
        self, subject: Subject, *, concurrency: int = 1, rate: float | None = None
    ) -> Result:
        url = subject.server.url + subject.path
        pool = max(concurrency, 4096 if rate else 1)
        return run_python(
            lambda: RawPost(url, subject.headers, subject.shape, unique=subject.unique, pool=pool),
            query=QUERY,
            duration=self.duration,
            concurrency=concurrency,
            rate=rate,
        )

    def stream(self, subject: Subject) -> Result:
        return run_python(subject.stream_target, query=QUERY, duration=self.duration)


def _rates(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


def _builds(specs: tuple[str, ...]) -> dict[str, str]:
    if not specs:
        return {"aiorch": sys.executable}
    builds: dict[str, str] = {}
    for spec in specs:
        name, sep, python = spec.partition("=")
        if not sep or not name.isidentifier() or not python or name in builds:
            raise click.BadParameter(
                f"expected a new NAME=PYTHON, got {spec!r}", param_hint="--aiorch"
            )
        builds[name] = python
    return builds


def one_run(
    bench: Bench,
    subjects: list[Subject],
    connections: int,
    open_rates: list[float],
    slow_rates: list[float],
    delay_ms: float | None,
) -> None:
    """Every phase once. The order of the subjects turns by one each run, so that none is always
    measured first (right after a phase change) or last."""
    turn = bench.run % len(subjects)
    order = subjects[turn:] + subjects[:turn]
    for c in (1, connections):
        for subject in order:
            bench.measure(ZERO, f"c={c}", subject, partial(bench.closed, subject, c))
    for subject in streamed(order):
        bench.measure(ZERO, "stream c=1", subject, partial(bench.stream, subject))
    for rate in open_rates:
        for subject in misses(order):
            bench.measure(
                ZERO, f"open {rate:g}/s", subject, partial(bench.python, subject, rate=rate)
            )
    if delay_ms is None:
        return
    set_delay(bench.mock, delay_ms)
    try:
        slow = f"{delay_ms:g} ms"
        for subject in misses(order):
            bench.measure(
                slow, f"c={connections}", subject, partial(bench.closed, subject, connections)
            )
        for rate in slow_rates:
            for subject in misses(order):
                bench.measure(
                    slow, f"open {rate:g}/s", subject, partial(bench.python, subject, rate=rate)
                )
    finally:
        set_delay(bench.mock, 0)


def ceilings(bench: Bench, upstream: Subject, connections: int) -> dict[str, float]:
    """What the generators and the mock can do at all: well above every rate measured, or the
    rows measure them rather than the server."""
    found: dict[str, float] = {}
    if bench.use_wrk:
        result = run_wrk(
            bench.mock.url,
            "/healthz",
            {},
            ("", ""),
            connections=connections,
            duration=bench.duration,
            threads=bench.threads,
            unique=False,
            method="GET",
        )
        found[f"wrk, GET /healthz of the mock, c={connections}"] = result.rate
    result = bench.python(upstream, concurrency=connections)
    found[f"python generator, POST to the mock, c={connections}"] = result.rate
    return found


@click.command(context_settings={"show_default": True, "max_content_width": 100})
@click.option("--duration", type=click.FloatRange(1), default=4.0, help="Seconds per measurement.")
@click.option("--runs", type=click.IntRange(1), default=5, help="Whole runs; figures are medians.")
@click.option("--connections", type=click.IntRange(2), default=32, help="Closed-loop c=N.")
@click.option(
    "--aiorch",
    "aiorch_builds",
    multiple=True,
    metavar="NAME=PYTHON",
    help="An aiorch build under test: NAME labels its rows, PYTHON (a venv's interpreter) runs "
    "`-m aiorch serve`. Repeat to measure several builds in one run. Default: aiorch=this python.",
)
@click.option("--rates", default="", help="Open-loop rates (req/s), zero delay, e.g. 200,1000.")
@click.option("--delay-ms", type=click.FloatRange(0), default=None, help="Fixed-delay phases.")
@click.option("--delay-rates", default="200,1000", help="Open-loop rates with the delay.")
@click.option("--tokens", type=click.IntRange(1), default=30, help="Answer length (mock).")
@click.option(
    "--generator",
    type=click.Choice(["auto", "wrk", "python"]),
    default="auto",
    help="Closed-loop generator; auto: wrk if installed.",
)
@click.option("--wrk-threads", type=click.IntRange(1), default=1)
@click.option("--aiorch-workers", type=click.IntRange(1), default=1)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write every row, figure and setting here.",
)
def main(
    duration: float,
    runs: int,
    connections: int,
    aiorch_builds: tuple[str, ...],
    rates: str,
    delay_ms: float | None,
    delay_rates: str,
    tokens: int,
    generator: str,
    wrk_threads: int,
    aiorch_workers: int,
    json_path: Path | None,
) -> None:
    """Measure what aiorch costs: the mock, a bare forwarder and aiorch, side by side."""
    open_rates, slow_rates = _rates(rates), _rates(delay_rates)
    builds = _builds(aiorch_builds)
    use_wrk = generator == "wrk" or (generator == "auto" and find_wrk() is not None)
    if generator == "wrk" and find_wrk() is None:
        raise click.ClickException("--generator wrk: wrk is not installed (apt-get install wrk)")
    out, err = make_console(), make_console(stderr=True)
    cores = {name: servers.core_info(python) for name, python in builds.items()}
    started_at, loads = time.perf_counter(), []
    with ExitStack() as stack:
        mock_port = servers.free_port()
        mock = stack.enter_context(
            servers.started(
                "mock", servers.mock_argv(mock_port, tokens), servers.clean_env(), mock_port
            )
        )
        port = servers.free_port()
        forwarder = stack.enter_context(
            servers.started(
                "forwarder", servers.forwarder_argv(port, mock.url), servers.clean_env(), port
            )
        )
        servers.probe_forwarder(forwarder)
        procs: dict[str, Proc] = {}
        for name, python in builds.items():
            port = servers.free_port()
            argv = servers.aiorch_argv(port, aiorch_workers, python)
            procs[name] = stack.enter_context(
                servers.started(name, argv, servers.aiorch_env(mock.url), port)
            )
            cores[name]["miss_path"] = servers.probe(procs[name])
            err.print(f"{name}: {cores[name]['commit']} at {procs[name].url} -> mock {mock.url}")
        subjects = closed_loop(mock, forwarder, procs)
        # Warm-up, not reported: connection pools, the interpreter's caches, allocations.
        warm = Bench(mock, duration=1.0, use_wrk=use_wrk, threads=wrk_threads)
        for subject in subjects:
            warm.closed(subject, connections)
        bench = Bench(mock, duration=duration, use_wrk=use_wrk, threads=wrk_threads)
        for run in range(runs):
            bench.run = run
            load = [round(x, 2) for x in psutil.getloadavg()]
            loads.append(load)
            busy = (
                " (busy: compare only rows of this run)"
                if load[0] > 0.5 * (os.cpu_count() or 1)
                else ""
            )
            err.print(f"run {run + 1} of {runs}: load average {load}{busy}")
            one_run(bench, subjects, connections, open_rates, slow_rates, delay_ms)
        limits = ceilings(bench, subjects[0], connections)
    loads.append([round(x, 2) for x in psutil.getloadavg()])
    figures = summarise(bench.rows, next(iter(builds)) if len(builds) > 1 else None)
    results = checks(figures, list(builds), connections)
    out.print()
    render_headline(figures, connections, runs, out)
    render_runs(figures, connections, runs, out)
    render_details(figures, out)
    out.print("[bold]load generator and mock ceilings[/bold] (zero-delay mock):")
    for name, value in limits.items():
        out.print(f"  {name}: {value:,.0f} requests/s")
    out.print()
    render_checks(results, out)
    settings = settings_block(
        cores, aiorch_workers, tokens, delay_ms, use_wrk, wrk_threads, duration, runs
    )
    out.print(
        f"\nwhole run {time.perf_counter() - started_at:.0f} s; load average at the start of "
        f"each run and at the end: {loads}"
    )
    out.print(f"settings: {json.dumps(settings)}", soft_wrap=True)
    if json_path is not None:
        write_json(
            json_path,
            {
                "settings": settings,
                "load_averages": loads,
                "rows": msgspec.to_builtins(bench.rows),
                "figures": msgspec.to_builtins(figures),
                "ceilings_rps": limits,
                "targets": msgspec.to_builtins(results),
            },
        )
        err.print(f"JSON written to {json_path}")
