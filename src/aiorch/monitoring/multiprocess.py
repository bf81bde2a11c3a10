"""Merge every worker's metric files into one scrape, even while a worker is starting.

prometheus_client's `MultiProcessCollector` fails the whole scrape on a metric file of zero
bytes, and a starting worker creates its files empty before it sizes them: a scrape that lands in
that moment answers 500, and a worker killed in it leaves the empty file behind for good
(prometheus/client_python#1199, fix proposed in #1207). An empty file holds no observations, so
leaving it out loses nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector


class WorkerFilesCollector(Collector):
    """What `MultiProcessCollector` collects, minus files no worker has written to yet."""

    def __init__(self, registry: CollectorRegistry, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        registry.register(self)

    def collect(self) -> Iterable[Metric]:
        files = []
        for path in self.path.glob("*.db"):
            try:
                if path.stat().st_size > 0:
                    files.append(str(path))
            except FileNotFoundError:  # a live gauge of a worker marked dead since the glob
                continue
        merged: Iterable[Metric] = MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        return merged
