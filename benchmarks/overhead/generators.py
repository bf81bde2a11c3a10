"""The load generators: `wrk` (C, closed loop) when installed, and aiohttp on uvloop.

wrk drives the closed-loop phases because a Python client tops out below the gateway it measures
on a small machine; it has no constant-rate mode (that is wrk2), so the open-loop and streaming
phases use `aiorch.bench` (aiohttp, latency from the intended send time). Both paths of a
comparison always use the same generator and the same request shapes: whatever the generator
costs is paid equally on both sides.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import msgspec

from aiorch.bench import Picker, Plan, QueryItem
from aiorch.bench.engine import run_loop
from aiorch.bench.runner import run
from aiorch.bench.stats import Summary
from aiorch.bench.targets import BenchFailure, HttpTarget, Outcome

try:
    from benchmarks.overhead.fastclient import FastPool, header_block

    FAST = True
except ImportError:  # httptools comes with uvicorn[standard]; without it, aiohttp
    FAST = False

WRK_MARK = "OVERHEAD-JSON "
WRK_ERRORS = ("connect", "read", "write", "status", "timeout")

# A request body as (prefix, suffix): each request sends prefix + unique tag + suffix, so that
# every request through aiorch misses the cache. A hit path passes the same text every time.
Shape = tuple[str, str]


class Result(msgspec.Struct, kw_only=True):
    """One phase on one path, in milliseconds and requests per second."""

    generator: str
    requests: int
    ok: int
    errors: int
    errors_by_type: dict[str, int]
    duration_s: float
    rate: float
    min: float
    mean: float
    p50: float
    p99: float
    p999: float
    max: float
    ttft_p50: float | None = None
    ttft_p99: float | None = None
    lag_p99: float | None = None  # open loop: how late the generator sent (its own limit)


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str:
    path = wrk_path()
    if path is None:
        return "not installed"
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()[0]
    return first.split("[")[0].split("Copyright")[0].strip()  # "wrk 4.1.0", no banner


def _lua_string(text: str) -> str:
    """A Lua string literal. JSON's escapes are Lua's too, except \\u: keep the text ASCII."""
    if not text.isascii():
        raise ValueError(f"wrk bodies must be ASCII: {text!r}")
    return json.dumps(text)


def _lua(method: str, path: str, headers: dict[str, str], shape: Shape, unique: bool) -> str:
    header_items = ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items())
    prefix, suffix = shape
    body = "prefix .. tag .. '-' .. counter .. suffix" if unique else "prefix .. suffix"
    return f"""
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local counter = 0
local tag = ""
local prefix = {_lua_string(prefix)}
local suffix = {_lua_string(suffix)}
local headers = {{{header_items}}}
function init(args)
  tag = string.format("%d-%d", os.time(), tid or 0)
end
request = function()
  counter = counter + 1
  return wrk.format({_lua_string(method)}, {_lua_string(path)}, headers, {body})
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{WRK_MARK}{{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"min":%d,"mean":%.3f,"max":%d,"p50":%d,"p99":%d,"p999":%d}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9)))
end
"""


def run_wrk(
    base_url: str,
    path: str,
    headers: dict[str, str],
    shape: Shape,
    *,
    connections: int,
    duration: float,
    threads: int = 1,
    unique: bool = True,
    method: str = "POST",
) -> Result:
    binary = wrk_path()
    if binary is None:
        raise RuntimeError("wrk is not installed")
    threads = max(1, min(threads, connections))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_lua(method, path, headers, shape, unique))
    try:
        argv = [
            binary,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "30s",
            "-s",
            script.name,
            base_url,
        ]
        out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    finally:
        os.unlink(script.name)
    lines = [line for line in out.stdout.splitlines() if line.startswith(WRK_MARK)]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    data = json.loads(lines[-1][len(WRK_MARK) :])
    errors = {f"wrk_{name}": data[name] for name in WRK_ERRORS if data[name]}
    seconds = data["duration_us"] / 1e6
    completed = data["requests"]
    failed = data["status"]  # the others are not completed responses, but still errors
    return Result(
        generator="wrk",
        requests=completed,
        ok=completed - failed,
        errors=sum(errors.values()),
        errors_by_type=errors,
        duration_s=round(seconds, 3),
        rate=round((completed - failed) / seconds, 1) if seconds else 0.0,
        min=data["min"] / 1000,
        mean=round(data["mean"] / 1000, 4),
        p50=data["p50"] / 1000,
        p99=data["p99"] / 1000,
        p999=data["p999"] / 1000,
        max=data["max"] / 1000,
    )


class RawPost:
    """POST a fixed-shape JSON body and read the whole answer; any non-2xx is an error.

    Uses the lean client in `fastclient` (httptools), or aiohttp where httptools is missing.
    """

    def __init__(
        self, url: str, headers: dict[str, str], shape: Shape, *, unique: bool, pool: int
    ) -> None:
        self.description = f"POST {url}"
        self.url = url
        parts = urlsplit(url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._path = parts.path or "/"
        self._headers = headers
        self._header_block = header_block(headers)
        self._prefix, self._suffix = shape
        self._unique = unique
        self._count = 0
        self._tag = os.urandom(4).hex()
        self._pool_size = pool
        self._fast: FastPool | None = None
        self._session: aiohttp.ClientSession | None = None

    def _body(self) -> bytes:
        self._count += 1
        middle = f"{self._tag}-{self._count}" if self._unique else ""
        return (self._prefix + middle + self._suffix).encode()

    async def call(self, item: QueryItem) -> Outcome:
        if FAST:
            if self._fast is None:
                self._fast = FastPool(self._host, self._port, self._pool_size)
            status = await self._fast.post(self._path, self._header_block, self._body())
        else:
            if self._session is None:
                self._session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=self._pool_size),
                    headers=self._headers,
                    skip_auto_headers=("User-Agent",),
                )
            async with self._session.post(self.url, data=self._body()) as response:
                await response.read()
                status = response.status
        if status >= 300:
            raise BenchFailure(f"http_{status}")
        return Outcome()

    async def close(self) -> None:
        if self._fast is not None:
            await self._fast.close()
        if self._session is not None:
            await self._session.close()


def _from_summary(summary: Summary, generator: str) -> Result:
    lat = summary.latency_ms
    nan = float("nan")
    ttft = summary.ttft_ms
    lag = summary.generator_lag_ms
    return Result(
        generator=generator,
        requests=summary.requests,
        ok=summary.ok,
        errors=summary.errors,
        errors_by_type=summary.errors_by_type,
        duration_s=summary.duration_s,
        rate=round(summary.ok / summary.duration_s, 1) if summary.duration_s else 0.0,
        min=lat.min if lat else nan,
        mean=lat.avg if lat else nan,
        p50=lat.p50 if lat else nan,
        p99=lat.p99 if lat else nan,
        p999=lat.p999 if lat else nan,
        max=lat.max if lat else nan,
        ttft_p50=ttft.p50 if ttft else None,
        ttft_p99=ttft.p99 if ttft else None,
        lag_p99=lag.p99 if lag else None,
    )


def run_python(
    make_target: Callable[[], RawPost | HttpTarget],
    *,
    query: str,
    duration: float,
    concurrency: int = 1,
    rate: float | None = None,
) -> Result:
    """Closed loop at `concurrency`, or open loop at `rate` (latency from the intended send)."""
    plan = Plan(concurrency=concurrency, rate=rate, duration=duration, timeout=30.0)
    picker = Picker([QueryItem(query)], in_order=True, unique=True)  # HttpTarget sends these

    async def go() -> Summary:
        target = make_target()
        try:
            return await run(target, picker, plan)
        finally:
            await target.close()

    return _from_summary(run_loop(go()), "python")


def _median(values: list[float | None]) -> float:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return round(statistics.median(present), 4) if present else math.nan


def combine(results: list[Result]) -> Result:
    """Slices of one phase as one result: counts add up, every figure is the slices' median."""
    if len(results) == 1:
        return results[0]
    errors: dict[str, int] = {}
    for result in results:
        for name, count in result.errors_by_type.items():
            errors[name] = errors.get(name, 0) + count
    ttft50 = [r.ttft_p50 for r in results if r.ttft_p50 is not None]
    ttft99 = [r.ttft_p99 for r in results if r.ttft_p99 is not None]
    lags = [r.lag_p99 for r in results if r.lag_p99 is not None]
    return Result(
        generator=results[0].generator,
        requests=sum(r.requests for r in results),
        ok=sum(r.ok for r in results),
        errors=sum(r.errors for r in results),
        errors_by_type=errors,
        duration_s=round(sum(r.duration_s for r in results), 3),
        rate=_median([r.rate for r in results]),
        min=min(r.min for r in results),
        mean=_median([r.mean for r in results]),
        p50=_median([r.p50 for r in results]),
        p99=_median([r.p99 for r in results]),
        p999=_median([r.p999 for r in results]),
        max=max(r.max for r in results),
        ttft_p50=_median(list(ttft50)) if ttft50 else None,
        ttft_p99=_median(list(ttft99)) if ttft99 else None,
        lag_p99=_median(list(lags)) if lags else None,
    )


def write_json(path: Path, data: object) -> None:
    path.write_bytes(msgspec.json.format(msgspec.json.encode(data), indent=2) + b"\n")
