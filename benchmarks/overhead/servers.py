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
from benchmarks.overhead.shapes import (
    AIORCH_PATH,
    CHAT_HIT,
    CHAT_PATH,
    HIT,
    QUERY,
    QWEN_MODEL,
    UPSTREAM_KEY,
)


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


def aiorch_argv(port: int, workers: int, python: str = sys.executable) -> list[str]:
    """`aiorch serve` as run by `python`: another venv measures another build of aiorch."""
    return [
        python,
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


def forwarder_argv(port: int, upstream: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks.overhead.forwarder",
        "--port",
        str(port),
        "--upstream",
        upstream,
        "--api-key",
        UPSTREAM_KEY,
        "--model",
        QWEN_MODEL,
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
    cpu_seconds: float  # user + system of the process tree over the phase
    system_seconds: float  # of which in the kernel (system calls: the sockets, mostly)
    cpu_percent: float  # of one core, averaged over the phase
    peak_rss_mb: float


@dataclass
class Sampler:
    """CPU time and peak RSS of a process tree over one phase (RSS sampled every 100 ms)."""

    pid: int
    usage: Usage | None = None  # set when the phase ends
    _peak: float = 0.0
    _cpu0: tuple[float, float] = (0.0, 0.0)
    _t0: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _tree(self) -> list[psutil.Process]:
        root = psutil.Process(self.pid)
        return [root, *root.children(recursive=True)]

    def _cpu(self) -> tuple[float, float]:
        """User + system seconds, and system seconds, of the process tree so far."""
        total = system = 0.0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
                system += times.system
        return total, system

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
        total, system = self._cpu()
        spent = total - self._cpu0[0]
        self.usage = Usage(
            cpu_seconds=spent,
            system_seconds=system - self._cpu0[1],
            cpu_percent=round(100 * spent / max(time.perf_counter() - self._t0, 1e-9), 1),
            peak_rss_mb=round(max(self._peak, self._rss()), 1),
        )


def _post_json(url: str, body: dict[str, object], headers: dict[str, str]) -> dict[str, object]:
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        data: dict[str, object] = json.load(response)
        return data


def probe(aiorch: Proc) -> str:
    """Check the measured paths before timing them: misses reach Qwen, repeats are cache hits."""
    miss = _post_json(aiorch.url + AIORCH_PATH, {"query": f"{QUERY} (request probe)"}, {})
    if miss.get("selected_service") != "qwen" or miss.get("offline"):
        raise click.ClickException(f"{aiorch.name}: /api misses do not reach Qwen: {miss}")
    chat_miss = json.loads(CHAT_HIT[0] + " probe" + CHAT_HIT[1])
    meta = _post_json(aiorch.url + CHAT_PATH, chat_miss, {}).get("aiorch")
    if not isinstance(meta, dict) or meta.get("selected_service") != "qwen" or meta.get("cached"):
        raise click.ClickException(f"{aiorch.name}: /v1 misses do not reach Qwen: {meta}")
    for path, shape in ((AIORCH_PATH, HIT), (CHAT_PATH, CHAT_HIT)):
        body = json.loads(shape[0] + shape[1])
        _post_json(aiorch.url + path, body, {})
        hit = _post_json(aiorch.url + path, body, {})
        meta = hit if path == AIORCH_PATH else hit.get("aiorch")
        if not isinstance(meta, dict) or not meta.get("cached"):
            raise click.ClickException(f"{aiorch.name}: {path} repeats are not cache hits: {hit}")
    return f"{miss['query_type']} -> {miss['selected_service']} ({miss['model']})"


def probe_forwarder(forwarder: Proc) -> None:
    """Both forwarded paths answer with the upstream's chat completion."""
    for path, body in (
        (CHAT_PATH, json.loads(CHAT_HIT[0] + CHAT_HIT[1]) | {"model": QWEN_MODEL}),
        (AIORCH_PATH, json.loads(HIT[0] + HIT[1])),
    ):
        answer = _post_json(forwarder.url + path, body, {})
        if answer.get("object") != "chat.completion":
            raise click.ClickException(f"the forwarder's {path} does not reach the mock: {answer}")


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
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def core_info(python: str) -> dict[str, str]:
    """Where the aiorch that `python` imports lives, and its commit (`-dirty` if edited)."""
    found = subprocess.run(
        [python, "-c", "import aiorch, os; print(os.path.dirname(aiorch.__file__))"],
        capture_output=True,
        text=True,
        check=False,
    )
    where = found.stdout.strip()
    if found.returncode != 0 or not where:
        raise click.ClickException(f"{python} cannot import aiorch: {found.stderr.strip()}")
    commit = subprocess.run(
        ["git", "-C", where, "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {"python": python, "aiorch": where, "commit": commit or "unknown"}


def settings_block(
    cores: dict[str, dict[str, str]],
    workers: int,
    tokens: int,
    delay_ms: float | None,
    use_wrk: bool,
    wrk_threads: int,
    duration: float,
    runs: int,
) -> dict[str, object]:
    """Every setting that decides the figures, printed and saved with them."""
    client = "python, httptools client on uvloop" if FAST else "python, aiohttp on uvloop"
    return {
        "machine": machine(),
        "aiorch": {
            "builds": cores,
            "command": f"PYTHON -m aiorch serve --port PORT --workers {workers} "
            "--log-level warning --no-access-log",
            "workers": workers,
            "server": "uvicorn with uvloop and httptools (aiorch serve)",
            "logging": "level warning, access log off",
            "backends": f"kimi and qwen: OpenAI-compatible API on the mock ({QWEN_MODEL})",
            "cache": "in-memory (no AIORCH_REDIS_URL), default size",
            "auth": "no AIORCH_API_KEYS",
            "/v1 requests": 'model "qwen", temperature 0 (cacheable), not streamed',
        },
        "forwarder": {
            "server": "raw ASGI on uvicorn, uvloop, httptools, one worker, access log off",
            "client": "one aiohttp ClientSession, 256 pooled connections, keep-alive 30 s",
            "/v1/chat/completions": "body forwarded as is to the mock's same path",
            "/api/ai/query": "the query's JSON string spliced as bytes into a chat body for "
            f"{QWEN_MODEL}, sent to the mock's /v1/chat/completions",
        },
        "mock": {
            "workers": 1,
            "tokens": tokens,
            "latency_ms": [0] if delay_ms is None else [0, delay_ms],
            "server": "aiohttp on uvloop, access log off",
        },
        "generators": {
            "closed_loop": f"{wrk_version()}, {wrk_threads} thread(s)" if use_wrk else client,
            "open_loop": f"{client} (aiorch.bench runner, latency from the intended send)",
            "stream": "python, aiohttp on uvloop (aiorch.bench HttpTarget)",
            "process": "the generators run outside every measured process",
        },
        "duration_s_per_measurement": duration,
        "runs": runs,
    }
