"""Multiprocess bookkeeping: the directory cleared at start, dead workers found, empty files."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

from aiorch.monitoring.multiprocess import WorkerFilesCollector
from aiorch.server.workers import ENV, departed_workers, prepare_multiprocess


def test_one_worker_without_the_variable_keeps_metrics_in_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV, "")  # set, so that monkeypatch restores whatever was there
    assert prepare_multiprocess(1) is None
    assert os.environ[ENV] == ""


def test_several_workers_get_a_fresh_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "")
    directory = prepare_multiprocess(2)
    assert directory is not None
    try:
        assert os.environ[ENV] == str(directory)
        assert directory.is_dir()
        assert list(directory.iterdir()) == []
    finally:
        directory.rmdir()


@pytest.mark.parametrize("workers", [1, 4])
def test_a_given_directory_loses_only_metric_files(
    workers: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A previous run's files would add to this run's counters; anything else there stays."""
    monkeypatch.setenv(ENV, str(tmp_path))
    for name in ("counter_17.db", "histogram_17.db", "gauge_livesum_17.db", "gauge_max_17.db"):
        (tmp_path / name).write_bytes(b"\0" * 16)
    (tmp_path / "notes.txt").write_text("not ours")
    (tmp_path / "sub").mkdir()

    assert prepare_multiprocess(workers) == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "sub"]


def test_departed_workers_are_the_live_gauges_of_pids_no_longer_running(tmp_path: Path) -> None:
    for name in (
        "gauge_livesum_10.db",
        "gauge_liveall_11.db",
        "gauge_livesum_12.db",
        "gauge_max_13.db",  # not a live mode: never removed by mark_process_dead
        "counter_14.db",
        "histogram_15.db",
    ):
        (tmp_path / name).touch()
    assert departed_workers(tmp_path, alive={12}) == {10, 11}
    assert departed_workers(tmp_path, alive={10, 11, 12}) == set()


def _counter_file(path: Path, value: float) -> None:
    """A counter file as a worker leaves it, written by prometheus_client's own writer."""
    values = MmapedDict(str(path))
    key = mmap_key("orchestrator_queries", "orchestrator_queries_total", [], [], "Queries.")
    values.write_value(key, value, 0.0)
    values.close()


def test_an_empty_file_from_a_starting_worker_does_not_fail_the_scrape(tmp_path: Path) -> None:
    _counter_file(tmp_path / "counter_100.db", 3)
    _counter_file(tmp_path / "counter_101.db", 4)
    (tmp_path / "counter_102.db").touch()  # created, not yet sized

    # prometheus_client's own collector fails the whole scrape on it (client_python#1199) ...
    plain = CollectorRegistry()
    MultiProcessCollector(plain, path=str(tmp_path))
    with pytest.raises(struct.error):
        generate_latest(plain)

    # ... ours leaves the empty file out and merges the others.
    registry = CollectorRegistry()
    WorkerFilesCollector(registry, tmp_path)
    assert registry.get_sample_value("orchestrator_queries_total") == 7
