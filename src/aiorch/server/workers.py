"""Several workers on one host: Prometheus multiprocess mode, set up before the workers start."""

from __future__ import annotations

import os
import shutil
import tempfile


def prepare_multiprocess(workers: int) -> None:
    """With more than one worker, every worker writes its values into one cleared directory."""
    if workers <= 1:
        return
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(
        prefix="aiorch-prom-"
    )
    shutil.rmtree(directory, ignore_errors=True)  # stale files from a previous run would count
    os.makedirs(directory, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
