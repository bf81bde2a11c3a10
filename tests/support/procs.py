"""Start real servers (aiorch, the mock upstream, redis, prometheus) on free ports for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
AIORCH = [sys.executable, "-m", "aiorch"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_http(
    url: str, timeout: float = 15.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status < 500:
                    return
        except urllib.error.HTTPError as error:
            if error.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextlib.contextmanager
def run_server(
    argv: Sequence[str],
    *,
    port: int,
    ready_path: str,
    tmp_path: Path,
    env: Mapping[str, str] | None = None,
    name: str = "server",
    timeout: float = 20.0,
) -> Iterator[Server]:
    """Run `argv` until the block ends; the server must answer GET `ready_path` to be ready."""
    log = tmp_path / f"{name}-{port}.log"
    full_env = {**os.environ, **(env or {})}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            list(argv), stdout=sink, stderr=subprocess.STDOUT, env=full_env, cwd=REPO
        )
    server = Server(process, port, log)
    try:
        wait_http(f"{server.url}{ready_path}", timeout=timeout, process=process)
        yield server
    except BaseException:
        print(f"--- {name} log ---\n{server.output()}")  # shown by pytest on failure
        raise
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
