"""Benchmarks: the engine behind `aiorch bench` and the guide's two scripts.

Targets (`targets`): one backend through `KimiClient`/`QwenClient`, the orchestrator in-process,
or a running aiorch over HTTP. Load shapes (`runner`): closed loop at a fixed concurrency, or open
loop at a constant arrival rate with latency timed from each request's intended send time (free
of coordinated omission). `stats` summarises, `report` prints, plots and serialises.
"""

from __future__ import annotations

from aiorch.bench.mix import DEFAULT_MIX, Picker, QueryItem, load_mix
from aiorch.bench.runner import Plan, run
from aiorch.bench.stats import LatencyStats, Recorder, Summary

__all__ = [
    "DEFAULT_MIX",
    "LatencyStats",
    "Picker",
    "Plan",
    "QueryItem",
    "Recorder",
    "Summary",
    "load_mix",
    "run",
]
