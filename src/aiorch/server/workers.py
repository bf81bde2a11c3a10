"""Several workers on one host: one coherent `/metrics` through Prometheus multiprocess mode.

In multiprocess mode prometheus_client keeps each worker's values in files named for the worker's
pid under `PROMETHEUS_MULTIPROC_DIR`, and every scrape merges all of them, so whichever worker
answers `/metrics` reports every worker's observations. Two pieces of bookkeeping keep the merge
honest (https://prometheus.github.io/client_python/multiprocess/):

- The directory is emptied before the first worker starts. Files left by a previous run (a
  restarted container keeps its volume) would otherwise be added to this run's counters.
- When a worker exits, its live gauges are dropped (`mark_process_dead`). A worker killed in the
  middle of a request would otherwise count as in flight for ever. Its counter and histogram files
  stay on purpose: what it observed did happen, and dropping it would make counters go backwards.

uvicorn's supervisor restarts dead workers but has no hook for it (gunicorn has `child_exit`), so
`Supervisor` is a small subclass that looks after each round of its loop for live-gauge files
whose process is no longer one of its workers.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from socket import socket

import uvicorn
from prometheus_client import multiprocess
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

ENV = "PROMETHEUS_MULTIPROC_DIR"
# prometheus_client's file names: counter_<pid>.db, histogram_<pid>.db, gauge_<mode>_<pid>.db.
# Only the live modes (livesum, liveall, ...) describe running processes.
LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db")


def prepare_multiprocess(workers: int) -> Path | None:
    """Turn multiprocess mode on (several workers, or the variable already set) and empty its
    directory; return the directory, or None when one process keeps its metrics in memory.

    Set in `os.environ` before the workers are spawned, so each one inherits it and
    prometheus_client, imported fresh in the worker, writes to files from its first metric.
    """
    given = os.environ.get(ENV)
    if workers <= 1 and not given:
        return None
    directory = Path(given) if given else Path(tempfile.mkdtemp(prefix="aiorch-prom-"))
    directory.mkdir(parents=True, exist_ok=True)
    # Only prometheus_client's own files: the variable may name a directory (or a mounted volume)
    # that holds other things or cannot itself be removed.
    for stale in directory.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[ENV] = str(directory)
    return directory


def departed_workers(directory: Path, alive: set[int]) -> set[int]:
    """Pids that left live-gauge files in `directory` but are not among the `alive` workers."""
    pids = set()
    for path in directory.iterdir():
        match = LIVE_GAUGE_FILE.fullmatch(path.name)
        if match:
            pids.add(int(match.group(1)))
    return pids - alive


class Supervisor(Multiprocess):
    """uvicorn's supervisor, which also marks every worker that has gone as dead.

    Workers go in several ways: they crash or are killed and get replaced, SIGHUP replaces them
    all, SIGTTOU retires one, a replacement fails its start-up check, and at shutdown they all go.
    Rather than follow each path, the supervisor sweeps after each round of its loop (its loop is
    single-threaded, so `self.processes` is then exactly the running workers).
    """

    def __init__(self, config: uvicorn.Config, sockets: list[socket], directory: Path) -> None:
        super().__init__(config, sockets)
        self.directory = directory

    def sweep(self) -> set[int]:
        alive = {p.pid for p in self.processes if p.pid is not None and p.process.is_alive()}
        gone = departed_workers(self.directory, alive)
        for pid in gone:
            multiprocess.mark_process_dead(pid, str(self.directory))  # type: ignore[no-untyped-call]
        return gone

    def keep_subprocess_alive(self) -> None:
        super().keep_subprocess_alive()
        self.sweep()

    def handle_signals(self) -> None:
        super().handle_signals()
        self.sweep()

    def join_all(self) -> None:
        super().join_all()
        self.sweep()


def serve(config: uvicorn.Config) -> None:
    """Run the server as `uvicorn.run` would, with `Supervisor` in charge of several workers."""
    given = os.environ.get(ENV)
    directory = prepare_multiprocess(config.workers)
    try:
        if config.workers <= 1:
            server = uvicorn.Server(config)
            server.run()
            if not server.started:
                sys.exit(STARTUP_FAILURE)
            return
        assert directory is not None
        Supervisor(config, [config.bind_socket()], directory).run()
    except KeyboardInterrupt:
        pass
    finally:
        if directory is not None and not given:  # ours, made by mkdtemp: nobody else reads it
            shutil.rmtree(directory, ignore_errors=True)
