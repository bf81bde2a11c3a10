"""The mock upstream and aiorch as child processes on free loopback ports, and their CPU and RSS.

The environment of both is cleared of every KIMI_*, QWEN_* and AIORCH_* variable first, so the
developer's shell cannot change what is measured; the settings used are all stated here.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click
import psutil

from benchmarks.overhead.generators import FAST, wrk_version
from benchmarks.overhead.shapes import AIORCH_PATH, HIT, QUERY, QWEN_MODEL, UPSTREAM_KEY


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KIMI_", "QWEN_", "AIORCH_"))}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return {**env, **values}


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self, lines: int = 20) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


def _wait_ready(proc: Proc, path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.process.poll() is not None:
            raise RuntimeError(f"{proc.name} exited at start-up:\n{proc.tail()}")
        try:
            with urllib.request.urlopen(proc.url + path, timeout=1.0) as response:
                if response.status < 500:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not answer {path} within {timeout} s:\n{proc.tail()}")


@contextlib.contextmanager
def started(name: str, argv: Sequence[str], env: dict[str, str], port: int) -> Iterator[Proc]:
    log = Path(tempfile.gettempdir()) / f"aiorch-overhead-{name}-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(list(argv), stdout=sink, stderr=subprocess.STDOUT, env=env)
    proc = Proc(name, process, port, log)
    try:
        _wait_ready(proc, "/healthz")
        yield proc
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def mock_argv(port: int, tokens: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "aiorch",
        "mock-upstream",
        "--port",
        str(port),
        "--api-key",
        UPSTREAM_KEY,
        "--tokens",
        str(tokens),
        "--seed",
        "1",
        "--no-access-log",
    ]


def aiorch_argv(port: int, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "aiorch",
        "serve",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        "warning",
        "--no-access-log",
    ]


def aiorch_env(upstream: str) -> dict[str, str]:
    """Both models on the mock's OpenAI-compatible API; no keys, no Redis, in-memory cache."""
    return clean_env(
        KIMI_BASE_URL=f"{upstream}/v1",
        KIMI_API_KEY=UPSTREAM_KEY,
        QWEN_BASE_URL=f"{upstream}/v1",
        QWEN_API_KEY=UPSTREAM_KEY,
        QWEN_MODEL=QWEN_MODEL,
    )


@dataclass
class Usage:
    cpu_percent: float  # of one core, averaged over the phase
    peak_rss_mb: float


@dataclass
class Sampler:
    """CPU time and peak RSS of a process tree over one phase (RSS sampled every 100 ms)."""

    pid: int
    usage: Usage | None = None  # set when the phase ends
    _peak: float = 0.0
    _cpu0: float = 0.0
    _t0: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.pid)
        return [root, *root.children(recursive=True)]

    def _cpu(self) -> float:
        total = 0.0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def _rss(self) -> float:
        total = 0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total / 2**20

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            self._peak = max(self._peak, self._rss())

    def __enter__(self) -> Sampler:
        self._cpu0, self._t0, self._peak = self._cpu(), time.perf_counter(), self._rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.usage = Usage(
            cpu_percent=round(
                100 * (self._cpu() - self._cpu0) / max(time.perf_counter() - self._t0, 1e-9), 1
            ),
            peak_rss_mb=round(max(self._peak, self._rss()), 1),
        )


def _post_json(url: str, body: dict[str, object], headers: dict[str, str]) -> dict[str, object]:
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        data: dict[str, object] = json.load(response)
        return data


def probe(aiorch: Proc) -> str:
    """Check the measured paths before timing them: a miss goes to Qwen, a repeat is a hit."""
    miss = _post_json(aiorch.url + AIORCH_PATH, {"query": f"{QUERY} (request probe)"}, {})
    if miss.get("selected_service") != "qwen" or miss.get("offline"):
        raise click.ClickException(f"the miss path does not reach Qwen on the mock: {miss}")
    hit_body = json.loads(HIT[0] + HIT[1])
    _post_json(aiorch.url + AIORCH_PATH, hit_body, {})
    hit = _post_json(aiorch.url + AIORCH_PATH, hit_body, {})
    if not hit.get("cached"):
        raise click.ClickException(f"the hit path is not served from the cache: {hit}")
    return f"{miss['query_type']} -> {miss['selected_service']} ({miss['model']})"


def set_delay(mock: Proc, latency_ms: float) -> None:
    _post_json(mock.url + "/_mock/config", {"latency_ms": latency_ms}, {})


def machine() -> dict[str, object]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "load_average_at_start": [round(x, 2) for x in psutil.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "aiorch_commit": commit or "unknown",
    }


def settings_block(
    aiorch_port: int,
    workers: int,
    route: str,
    tokens: int,
    delay_ms: float,
    use_wrk: bool,
    wrk_threads: int,
    duration: float,
    rounds: int,
) -> dict[str, object]:
    """Every setting that decides the figures, printed and saved with them."""
    client = "python, httptools client on uvloop" if FAST else "python, aiohttp on uvloop"
    return {
        "machine": machine(),
        "aiorch": {
            "command": " ".join(["python", *aiorch_argv(aiorch_port, workers)[1:]]),
            "workers": workers,
            "server": "uvicorn with uvloop and httptools (aiorch serve)",
            "logging": "level warning, access log off",
            "backends": f"kimi and qwen: OpenAI-compatible API on the mock ({QWEN_MODEL})",
            "cache": "in-memory (no AIORCH_REDIS_URL), default size",
            "auth": "no AIORCH_API_KEYS",
            "miss_path": route,
        },
        "mock": {
            "workers": 1,
            "tokens": tokens,
            "latency_ms": [0, delay_ms],
            "server": "aiohttp on uvloop, access log off",
        },
        "generators": {
            "closed_loop": f"{wrk_version()}, {wrk_threads} thread(s)" if use_wrk else client,
            "open_loop": f"{client} (aiorch.bench runner, latency from the intended send)",
            "stream": "python, aiohttp on uvloop (aiorch.bench HttpTarget)",
        },
        "duration_s_per_phase": duration,
        "rounds": rounds,
    }
