"""`python -m benchmarks.overhead`: added latency and throughput ceilings of aiorch, in one run.

Starts the mock upstream and `aiorch serve` (one worker unless told otherwise) on free loopback
ports, then measures the same requests straight to the mock and through aiorch:

  zero-delay upstream (pure gateway cost)
    c=1, c=N          closed loop: latency at one connection, throughput ceiling at N
    cache hit c=1/c=N the same query every time through aiorch (answered from the cache)
    open R/s          open loop at fixed rates, latency from the intended send time
    stream c=1        /v1/chat/completions streamed: time to first text and to the end
  fixed-delay upstream (realistic numbers in flight), via the mock's runtime config
    c=N, open R/s

Through aiorch every request is a cache miss (a unique query, classified as code and routed to
Qwen) unless the scenario says "cache hit". Straight to the mock, the body is the one aiorch sends.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median

import click
import msgspec
import psutil

from aiorch.bench.report import make_console
from aiorch.bench.targets import HttpTarget
from benchmarks.overhead import servers
from benchmarks.overhead.generators import (
    RawPost,
    Result,
    Shape,
    combine,
    run_python,
    run_wrk,
    write_json,
    wrk_path,
)
from benchmarks.overhead.servers import Proc, Sampler, Usage, probe, set_delay, settings_block
from benchmarks.overhead.shapes import (
    AIORCH_HEADERS,
    AIORCH_PATH,
    DIRECT,
    DIRECT_HEADERS,
    HIT,
    MISS,
    QUERY,
    QWEN_MODEL,
    UPSTREAM_KEY,
    UPSTREAM_PATH,
)
from benchmarks.overhead.table import Row, checks, diffs_of, render, render_checks


class Bench:
    """Runs phases against the two servers and keeps the rows.

    Each phase is cut into `rounds` slices that alternate between the paths (direct, aiorch,
    direct, aiorch, ...), and each figure is the median over the slices: a burst of load from
    elsewhere on the machine then spoils one slice of each path instead of one whole path.
    """

    def __init__(
        self,
        mock: Proc,
        aiorch: Proc,
        *,
        duration: float,
        use_wrk: bool,
        threads: int,
        rounds: int = 1,
    ) -> None:
        self.mock, self.aiorch = mock, aiorch
        self.use_wrk, self.threads, self.rounds = use_wrk, threads, rounds
        self.duration = duration / rounds  # one slice
        self.rows: list[Row] = []
        self.console = make_console(stderr=True)

    def _sampled(self, go: Callable[[], Result]) -> tuple[Result, Usage, Usage]:
        with (
            Sampler(self.aiorch.process.pid) as on_aiorch,
            Sampler(self.mock.process.pid) as on_mock,
        ):
            result = go()
        assert on_aiorch.usage is not None
        assert on_mock.usage is not None
        return result, on_aiorch.usage, on_mock.usage

    def measure_paths(
        self, upstream: str, scenario: str, runs: dict[str, Callable[[], Result]]
    ) -> list[Row]:
        slices: dict[str, list[tuple[Result, Usage, Usage]]] = {path: [] for path in runs}
        for _ in range(self.rounds):
            for path, go in runs.items():
                slices[path].append(self._sampled(go))
        rows = []
        for path, got in slices.items():
            result = combine([r for r, _, _ in got])
            direct = path == "direct"
            row = Row(
                upstream=upstream,
                scenario=scenario,
                path=path,
                result=result,
                aiorch_cpu_percent=None if direct else median(a.cpu_percent for _, a, _ in got),
                aiorch_peak_rss_mb=None if direct else max(a.peak_rss_mb for _, a, _ in got),
                mock_cpu_percent=median(m.cpu_percent for _, _, m in got),
                slices=[r for r, _, _ in got],
            )
            self.console.print(
                f"  {upstream:>10}  {scenario:<16} {path:<7} {result.rate:>9,.0f}/s"
                f"  p50 {result.p50:8.3f} ms  p99 {result.p99:8.3f} ms  errors {result.errors}"
            )
            self.rows.append(row)
            rows.append(row)
        return rows

    def measure(self, upstream: str, scenario: str, path: str, go: Callable[[], Result]) -> Row:
        return self.measure_paths(upstream, scenario, {path: go})[0]

    def closed(self, direct: bool, shape: Shape, connections: int, unique: bool = True) -> Result:
        base = self.mock.url if direct else self.aiorch.url
        path = UPSTREAM_PATH if direct else AIORCH_PATH
        headers = DIRECT_HEADERS if direct else AIORCH_HEADERS
        if self.use_wrk:
            return run_wrk(
                base,
                path,
                headers,
                shape,
                connections=connections,
                duration=self.duration,
                threads=self.threads,
                unique=unique,
            )
        return self.python(direct, shape, concurrency=connections, unique=unique)

    def python(
        self,
        direct: bool,
        shape: Shape,
        *,
        concurrency: int = 1,
        rate: float | None = None,
        unique: bool = True,
    ) -> Result:
        base = self.mock.url if direct else self.aiorch.url
        path = UPSTREAM_PATH if direct else AIORCH_PATH
        headers = DIRECT_HEADERS if direct else AIORCH_HEADERS
        pool = max(concurrency, 4096 if rate else 1)
        return run_python(
            lambda: RawPost(base + path, headers, shape, unique=unique, pool=pool),
            query=QUERY,
            duration=self.duration,
            concurrency=concurrency,
            rate=rate,
        )

    def stream(self, direct: bool) -> Result:
        def target() -> HttpTarget:
            if direct:
                return HttpTarget(
                    self.mock.url,
                    endpoint="chat",
                    stream=True,
                    model=QWEN_MODEL,
                    api_key=UPSTREAM_KEY,
                )
            return HttpTarget(self.aiorch.url, endpoint="chat", stream=True, model="qwen")

        return run_python(target, query=QUERY, duration=self.duration)

    def pair(self, upstream: str, scenario: str, run: Callable[[bool], Result]) -> None:
        self.measure_paths(
            upstream, scenario, {"direct": lambda: run(True), "aiorch": lambda: run(False)}
        )


def _rates(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


def phases(
    bench: Bench,
    connections: int,
    open_rates: list[float],
    slow_rates: list[float],
    delay_ms: float | None,
) -> dict[str, float]:
    """Every measured phase, in order; returns the generator ceilings."""
    zero = "zero-delay"

    def closed(c: int) -> Callable[[bool], Result]:
        return lambda direct: bench.closed(direct, DIRECT if direct else MISS, c)

    def opened(rate: float) -> Callable[[bool], Result]:
        return lambda direct: bench.python(direct, DIRECT if direct else MISS, rate=rate)

    def hit(c: int) -> Callable[[], Result]:
        return lambda: bench.closed(False, HIT, c, unique=False)

    for c in (1, connections):
        bench.pair(zero, f"c={c}", closed(c))
    for c in (1, connections):
        bench.measure(zero, f"cache hit c={c}", "aiorch", hit(c))
    for rate in open_rates:
        bench.pair(zero, f"open {rate:g}/s", opened(rate))
    bench.pair(zero, "stream c=1", bench.stream)
    ceilings: dict[str, float] = {}
    if bench.use_wrk:
        row = bench.measure(
            zero,
            "ceiling",
            "healthz",
            lambda: run_wrk(
                bench.mock.url,
                "/healthz",
                {},
                ("", ""),
                connections=connections,
                duration=bench.duration,
                threads=bench.threads,
                unique=False,
                method="GET",
            ),
        )
        ceilings[f"wrk, GET /healthz of the mock, c={connections}"] = row.result.rate
    row = bench.measure(
        zero,
        "ceiling",
        "direct",
        lambda: bench.python(
            True,
            DIRECT,
            concurrency=connections,
        ),
    )
    ceilings[f"python generator, POST to the mock, c={connections}"] = row.result.rate
    if delay_ms is not None:
        set_delay(bench.mock, delay_ms)
        try:
            slow = f"{delay_ms:g} ms"
            bench.pair(slow, f"c={connections}", closed(connections))
            for rate in slow_rates:
                bench.pair(slow, f"open {rate:g}/s", opened(rate))
        finally:
            set_delay(bench.mock, 0)
    return ceilings


@click.command(context_settings={"show_default": True, "max_content_width": 100})
@click.option("--duration", type=click.FloatRange(1), default=6.0, help="Seconds per phase.")
@click.option(
    "--rounds",
    type=click.IntRange(1),
    default=3,
    help="Slices per phase, alternating direct/aiorch; figures are medians over slices.",
)
@click.option("--connections", type=click.IntRange(2), default=32, help="Closed-loop c=N.")
@click.option("--rates", default="200,1000", help="Open-loop rates (req/s), zero delay.")
@click.option("--delay-ms", type=click.FloatRange(0), default=100.0, help="Fixed-delay variant.")
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
@click.option("--skip-delay", is_flag=True, help="Only the zero-delay upstream.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write every figure and setting here.",
)
def main(
    duration: float,
    rounds: int,
    connections: int,
    rates: str,
    delay_ms: float,
    delay_rates: str,
    tokens: int,
    generator: str,
    wrk_threads: int,
    aiorch_workers: int,
    skip_delay: bool,
    json_path: Path | None,
) -> None:
    """Measure what aiorch adds: straight to the mock upstream vs through aiorch, one run."""
    open_rates, slow_rates = _rates(rates), _rates(delay_rates)
    if duration / rounds < 1:
        raise click.BadParameter("each slice (--duration / --rounds) must last at least 1 s")
    use_wrk = generator == "wrk" or (generator == "auto" and wrk_path() is not None)
    if generator == "wrk" and wrk_path() is None:
        raise click.ClickException("--generator wrk: wrk is not installed (apt-get install wrk)")
    out, err = make_console(), make_console(stderr=True)
    load = psutil.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        err.print(
            f"[yellow]warning: load average {load:.2f} before the run: figures will be "
            "noisy; compare only rows of this run[/yellow]"
        )
    started = time.perf_counter()
    mock_port, aiorch_port = servers.free_port(), servers.free_port()
    mock_env, aiorch_argv = servers.clean_env(), servers.aiorch_argv(aiorch_port, aiorch_workers)
    with servers.started("mock", servers.mock_argv(mock_port, tokens), mock_env, mock_port) as mock:
        with servers.started(
            "aiorch", aiorch_argv, servers.aiorch_env(mock.url), aiorch_port
        ) as aiorch:
            route = probe(aiorch)
            settings = settings_block(
                aiorch_port,
                aiorch_workers,
                route,
                tokens,
                delay_ms,
                use_wrk,
                wrk_threads,
                duration,
                rounds,
            )
            err.print(f"aiorch {aiorch.url} -> mock {mock.url}; miss path: {route}")
            # Warm-up, not reported: connection pools, the interpreter's caches, allocations.
            warm = Bench(mock, aiorch, duration=1.0, use_wrk=use_wrk, threads=wrk_threads)
            warm.closed(True, DIRECT, connections)
            warm.closed(False, MISS, connections)
            bench = Bench(
                mock,
                aiorch,
                duration=duration,
                use_wrk=use_wrk,
                threads=wrk_threads,
                rounds=rounds,
            )
            ceilings = phases(
                bench, connections, open_rates, slow_rates, None if skip_delay else delay_ms
            )
    rows = [r for r in bench.rows if r.scenario != "ceiling"]
    diffs = diffs_of(rows)
    for row in rows:
        if (row.upstream, row.scenario, row.path) == ("zero-delay", f"c={connections}", "direct"):
            name = f"{row.result.generator}, POST to the mock, c={connections}"
            ceilings[name] = row.result.rate
    results = checks(diffs, rows, connections)
    out.print()
    render(rows, diffs, out)
    notes = [
        f"  {r.upstream} {r.scenario} {r.path}: the generator sent late (lag p99 "
        f"{r.result.lag_p99:.1f} ms); that row measures the generator as much as the server"
        for r in rows
        if r.result.lag_p99 is not None and r.result.lag_p99 > 5.0
    ]
    if notes:
        out.print("[yellow]notes:[/yellow]")
        for note in notes:
            out.print(note)
        out.print()
    out.print("[bold]load generator and mock ceilings[/bold] (zero-delay mock):")
    for name, value in ceilings.items():
        out.print(f"  {name}: {value:,.0f} requests/s")
    out.print()
    render_checks(results, out)
    end_load = [round(x, 2) for x in psutil.getloadavg()]
    out.print(
        f"\nwhole run {time.perf_counter() - started:.0f} s; load average at the end {end_load}"
    )
    out.print(f"settings: {json.dumps(settings)}", soft_wrap=True)
    if json_path is not None:
        write_json(
            json_path,
            {
                "settings": settings,
                "rows": msgspec.to_builtins(bench.rows),
                "added": [msgspec.to_builtins(d) for d in diffs.values()],
                "ceilings_rps": ceilings,
                "targets": msgspec.to_builtins(results),
            },
        )
        err.print(f"JSON written to {json_path}")
