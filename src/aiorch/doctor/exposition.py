"""`/metrics` text -> a `Scrape`, two scrapes -> a `View` of what happened between them.

Parsing uses prometheus_client's own parser, so whatever aiorch's exporter writes is read the
way the library meant it. The families aiorch should expose are taken from a fresh `Metrics`
registry, never from a list kept here: a family added to the metrics module is expected at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from aiorch.doctor.series import Labels, View, labels_of
from aiorch.monitoring.prometheus_metrics import Metrics

# Sample-name suffixes that accumulate, by family type: their window value is a difference.
CUMULATIVE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum"),
}


class ExpositionError(ValueError):
    """The text is not a Prometheus exposition; the message says where it broke."""


@dataclass(frozen=True)
class Scrape:
    """One scrape: each family's type, and each sample name's series."""

    types: Mapping[str, str]
    samples: Mapping[str, Mapping[Labels, float]]

    def cumulative(self) -> frozenset[str]:
        """Sample names whose values only grow (counters, histogram buckets, counts, sums)."""
        return frozenset(
            family + suffix
            for family, kind in self.types.items()
            for suffix in CUMULATIVE_SUFFIXES.get(kind, ())
        )


def parse(text: str) -> Scrape:
    """Parse the text exposition format. `_created` samples are dropped: nothing here needs
    them, and the text parser turns an unlabelled counter's into a family of its own."""
    types: dict[str, str] = {}
    samples: dict[str, dict[Labels, float]] = {}
    try:
        for family in text_string_to_metric_families(text):
            if family.name.endswith("_created") and family.type in ("gauge", "unknown"):
                continue
            types[family.name] = family.type
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                samples.setdefault(sample.name, {})[labels_of(sample.labels)] = float(sample.value)
    except (ValueError, IndexError, KeyError) as error:
        raise ExpositionError(f"not a Prometheus text exposition: {error}") from None
    return Scrape(types, samples)


@dataclass(frozen=True)
class ExpectedFamily:
    name: str  # as the parser names it: counters without `_total`
    type: str
    sample_names: tuple[str, ...]  # the names Prometheus stores
    always_sampled: bool  # has a series from start-up (no labels), so Prometheus must have it


@cache
def expected_families() -> tuple[ExpectedFamily, ...]:
    """Every family a fresh aiorch `Metrics` registers, in registration order."""
    registry = CollectorRegistry()
    Metrics(registry)
    out = []
    for metric in registry.collect():
        suffixes = CUMULATIVE_SUFFIXES.get(metric.type, ("",))  # a gauge's sample is its name
        sampled = any(not s.name.endswith("_created") for s in metric.samples)
        out.append(
            ExpectedFamily(
                metric.name,
                metric.type,
                tuple(metric.name + suffix for suffix in suffixes),
                sampled,
            )
        )
    return tuple(out)


def missing_families(scrape: Scrape) -> tuple[str, ...]:
    return tuple(f.name for f in expected_families() if f.name not in scrape.types)


def totals(scrape: Scrape) -> View:
    """Counters as totals since the process started; gauges as they are."""
    return View(scrape.samples)


def between(first: Scrape, second: Scrape) -> View:
    """What happened between two scrapes: increases of cumulative series, gauges as in `second`.

    A series that went down was reset (the process restarted): its increase is its new value,
    as in PromQL's `increase`. A series new in `second` started from zero.
    """
    cumulative = second.cumulative()
    out: dict[str, dict[Labels, float]] = {}
    for name, series in second.samples.items():
        before = first.samples.get(name, {})
        if name not in cumulative:
            out[name] = dict(series)
            continue
        out[name] = {
            labels: value - before.get(labels, 0.0) if value >= before.get(labels, 0.0) else value
            for labels, value in series.items()
        }
    return View(out)


# The series whose growth means the service was used: with none, the window says nothing.
TRAFFIC = (
    "orchestrator_queries_total",
    "ai_queries_total",
    "kimi_queries_total",
    "qwen_queries_total",
    "orchestrator_cache_misses_total",
)


def traffic(view: View) -> float:
    """Queries answered or attempted in the view (or since start, for a totals view)."""
    return max(view.total(name) for name in TRAFFIC)
