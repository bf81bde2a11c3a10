"""Where aiorch's CPU goes on one path under load: py-spy on the worker while wrk drives it.

    python -m benchmarks.overhead.profile --path v1|api [--hit|--stream] [--seconds 15] [--native]

Starts the mock upstream and one `aiorch serve` worker (the same settings as the overhead
benchmark, `--python` to profile another build), drives one path with wrk (closed loop,
`--connections`, default 32; misses unless `--hit`), samples the worker with
`py-spy record --format raw` and prints the samples grouped three ways: by module (self time, the
leaf frame), by function (self time) and by function (inclusive: on the stack at all). py-spy
leaves idle samples out (the loop waiting in epoll), so the shares are of the time the worker was
running. `--keep FILE` keeps the raw stacks (flamegraph tools read them); `--speedscope FILE`
records a second profile in speedscope's format instead of printing.

py-spy is not a dependency of aiorch: install it where you like (`pip install py-spy`) and pass
`--py-spy`, or have it on PATH. It needs to be allowed to ptrace the worker (root, or
`kernel.yama.ptrace_scope` 0).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import click
from rich.table import Table

from aiorch.bench.report import make_console
from benchmarks.overhead import servers
from benchmarks.overhead.generators import run_wrk, wrk_path
from benchmarks.overhead.shapes import (
    AIORCH_HEADERS,
    AIORCH_PATH,
    CHAT_HIT,
    CHAT_MISS,
    CHAT_PATH,
    HIT,
    MISS,
)

# "function (path/to/file.py:123)" or, for native frames, "function (libfoo.so)".
FRAME = re.compile(r"^(?P<function>.*?) \((?P<where>[^()]*)\)$")
PACKAGE_ROOTS = ("site-packages/", "/src/", "lib/python3")


def module_of(where: str) -> str:
    """`aiorch.pipeline`, `aiohttp`, `asyncio`, `native: libuv` ...: how samples are grouped."""
    path = where.rsplit(":", 1)[0]
    if not path.endswith((".py", ".pyx", ".pxd", ".pxi")):
        name = Path(path).name or "?"
        return f"native: {name.split('.so')[0]}"
    for root in PACKAGE_ROOTS:
        if root in path:
            path = path.rsplit(root, 1)[1]
            break
    parts = [p for p in Path(path).with_suffix("").parts if p not in ("", "/")]
    if parts and re.fullmatch(r"python3\.\d+", parts[0]):
        parts = parts[1:]
    if not parts:
        return "?"
    if parts[0] == "aiorch" and len(parts) > 1:
        return ".".join(
            parts[:3] if parts[1] in ("server", "backends", "monitoring") else parts[:2]
        )
    return parts[0]


def parse(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    """py-spy's raw format: `frame;frame;...;leaf count`, outermost frame first."""
    stacks = []
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def _parts(frame: str) -> tuple[str, str, str]:
    """(module, function, file name) of one frame."""
    found = FRAME.match(frame)
    if found is None:
        return "?", frame, "?"
    where = found["where"]
    return module_of(where), found["function"], where.rsplit("/", 1)[-1].split(":")[0]


def _is_python(frame: str) -> bool:
    found = FRAME.match(frame)
    return found is not None and ".py" in found["where"]


# libc calls that enter the kernel: with --native, time in them is the system's, not Python's.
SYSCALLS = frozenset(
    {
        "write",
        "writev",
        "read",
        "readv",
        "recv",
        "recvfrom",
        "send",
        "sendto",
        "sendmsg",
        "epoll_wait",
        "epoll_pwait",
        "getpid",
        "accept4",
        "close",
        "shutdown",
        "clock_gettime",
    }
)
GC = "GC (the cyclic collector)"
KERNEL = "kernel (system calls)"


def attribute(frames: list[str]) -> tuple[str, str]:
    """Who a sample is charged to: the collector if it was running, a system call if the leaf is
    one, else the innermost Python frame (native frames under it are its work), else the leaf."""
    names = [_parts(frame)[1] for frame in frames]
    if "gc_collect_main" in names:
        return GC, "gc_collect_main"
    python = [frame for frame in frames if _is_python(frame)]
    caller = python[-1] if python else frames[-1]
    module, function, file = _parts(caller)
    if names[-1] in SYSCALLS:
        return KERNEL, f"{names[-1]} <- {function} ({file})"
    if function == "Runner.run" and caller != frames[-1]:
        # Below asyncio's runner with no Python frame in between: the event loop's own C code.
        module, function, file = _parts(frames[-1])
    return module, f"{function} ({file})"


# Areas, first match wins: how the optimisation step reads the profile.
AREAS = (
    ("GC", (GC,)),
    ("kernel", (KERNEL,)),
    ("aiorch: classifier", ("aiorch.classifier", "aiorch.gates", "aiorch.router_model")),
    ("aiorch: server", ("aiorch.server",)),
    ("metrics", ("aiorch.monitoring", "prometheus_client")),
    ("aiorch: core", ("aiorch",)),
    ("asyncio", ("asyncio", "contextlib", "_weakrefset", "weakref", "native: _asyncio")),
    (
        "uvicorn, uvloop, httptools",
        ("uvicorn", "native: loop", "native: libuv", "native: httptools"),
    ),
    ("starlette, anyio", ("starlette", "anyio", "sniffio")),
    ("aiohttp", ("aiohttp", "yarl", "multidict", "native: _http", "native: llhttp")),
    ("msgspec", ("msgspec", "native: _core")),
)


def area_of(module: str) -> str:
    for area, prefixes in AREAS:
        if module.startswith(prefixes):
            return area
    return "other"


def tally(
    stacks: list[tuple[list[str], int]],
) -> tuple[Counter[str], Counter[str], Counter[str], Counter[str]]:
    """Samples by area and by module (self), by function (self) and by function (inclusive)."""
    by_area: Counter[str] = Counter()
    by_module: Counter[str] = Counter()
    by_self: Counter[str] = Counter()
    by_total: Counter[str] = Counter()
    for frames, count in stacks:
        module, function = attribute(frames)
        by_area[area_of(module)] += count
        by_module[module] += count
        by_self[f"{module}: {function}"] += count
        seen = set()
        for frame in frames:
            if _is_python(frame):
                module, function, file = _parts(frame)
                seen.add(f"{module}: {function} ({file})")
        for name in seen:
            by_total[name] += count
    return by_area, by_module, by_self, by_total


def _print(title: str, counts: Counter[str], total: int, top: int) -> None:
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("where")
    table.add_column("share", justify="right")
    table.add_column("samples", justify="right")
    for name, count in counts.most_common(top):
        table.add_row(name, f"{100 * count / total:.1f}%", f"{count:,}")
    make_console().print(table)
    make_console().print()


def record(
    spy: str,
    python: str | None,
    path: str,
    shape: tuple[str, str],
    *,
    unique: bool,
    connections: int,
    seconds: int,
    rate: int,
    native: bool,
    out: Path,
    speedscope: bool,
) -> None:
    """Start the mock and one aiorch worker, load one path with wrk, and py-spy the worker."""
    mock_port, port = servers.free_port(), servers.free_port()
    argv = servers.aiorch_argv(port, 1, *([python] if python else []))
    with (
        servers.started(
            "mock", servers.mock_argv(mock_port, 30), servers.clean_env(), mock_port
        ) as mock,
        servers.started("aiorch", argv, servers.aiorch_env(mock.url), port) as aiorch,
    ):
        servers.probe(aiorch)
        run_wrk(aiorch.url, path, AIORCH_HEADERS, shape, connections=connections, duration=2)
        command = [
            spy,
            "record",
            "--pid",
            str(aiorch.process.pid),
            "--rate",
            str(rate),
            "--duration",
            str(seconds),
            "--format",
            "speedscope" if speedscope else "raw",
            "--output",
            str(out),
            *(["--native"] if native else []),
        ]
        spying = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        load = threading.Thread(
            target=run_wrk,
            args=(aiorch.url, path, AIORCH_HEADERS, shape),
            kwargs={"connections": connections, "duration": seconds + 2, "unique": unique},
        )
        load.start()
        _, error = spying.communicate()
        load.join()
        if spying.returncode != 0:
            raise click.ClickException(f"py-spy failed: {error.decode(errors='replace')}")


def report(stacks: list[tuple[list[str], int]], heading: str, top: int) -> None:
    total = sum(count for _, count in stacks)
    if not total:
        raise click.ClickException("py-spy recorded no samples")
    make_console().print(f"{total:,} samples of the worker running (idle left out), {heading}\n")
    by_area, by_module, by_self, by_total = tally(stacks)
    _print("by area (self)", by_area, total, top)
    _print(
        "by module (self: the innermost Python frame, or the collector, or a system call)",
        by_module,
        total,
        top,
    )
    _print("by function (self)", by_self, total, top)
    # Frames on every stack (the interpreter's entry, the CLI, the server's run loop) say nothing.
    inner = Counter({name: n for name, n in by_total.items() if n < total})
    _print("by Python function (inclusive: anywhere on the stack)", inner, total, top)


@click.command(context_settings={"show_default": True, "max_content_width": 100})
@click.option("--path", "which", type=click.Choice(["v1", "api"]), default="v1")
@click.option("--hit", is_flag=True, help="The cache-hit request instead of misses.")
@click.option("--stream", is_flag=True, help="/v1 misses streamed (SSE to the end).")
@click.option("--seconds", type=click.IntRange(2), default=15)
@click.option("--connections", type=click.IntRange(1), default=32)
@click.option("--rate", type=click.IntRange(1), default=500, help="py-spy samples per second.")
@click.option("--native", is_flag=True, help="Native frames too (uvloop, httptools, msgspec).")
@click.option("--top", type=click.IntRange(1), default=30)
@click.option("--py-spy", "py_spy", default=None, help="The py-spy binary (default: on PATH).")
@click.option("--python", default=None, help="The interpreter of the aiorch build to profile.")
@click.option("--keep", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--speedscope", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option(
    "--from",
    "raw",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Only print the tables of raw stacks kept before (--keep).",
)
def main(
    which: str,
    hit: bool,
    stream: bool,
    seconds: int,
    connections: int,
    rate: int,
    native: bool,
    top: int,
    py_spy: str | None,
    python: str | None,
    keep: Path | None,
    speedscope: Path | None,
    raw: Path | None,
) -> None:
    """Profile one aiorch worker on one path under wrk load, and print where its CPU goes."""
    if raw is not None:
        report(parse(raw.read_text().splitlines()), str(raw), top)
        return
    spy = py_spy or shutil.which("py-spy")
    if spy is None:
        raise click.ClickException("py-spy not found: pip install py-spy, or pass --py-spy")
    if wrk_path() is None:
        raise click.ClickException("wrk is not installed (apt-get install wrk)")
    if stream and (which != "v1" or hit):
        raise click.BadParameter("--stream profiles /v1 misses only")
    path = CHAT_PATH if which == "v1" else AIORCH_PATH
    shape = (CHAT_HIT if hit else CHAT_MISS) if which == "v1" else (HIT if hit else MISS)
    if stream:  # wrk reads the whole chunked answer: a stream from request to [DONE]
        shape = (shape[0], shape[1].replace('"temperature":0', '"stream":true'))
    out = speedscope or Path(tempfile.mkstemp(suffix=".txt")[1])
    record(
        spy,
        python,
        path,
        shape,
        unique=not hit,
        connections=connections,
        seconds=seconds,
        rate=rate,
        native=native,
        out=out,
        speedscope=speedscope is not None,
    )
    if speedscope is not None:
        make_console().print(f"speedscope profile written to {speedscope}")
        return
    text = out.read_text()
    out.unlink()
    if keep is not None:
        keep.write_text(text)
    kind = "hits" if hit else "streamed misses" if stream else "misses"
    report(
        parse(text.splitlines()),
        f"{rate}/s for {seconds} s, {path} {kind}, wrk c={connections}"
        + (", native frames" if native else ""),
        top,
    )


if __name__ == "__main__":
    main()
