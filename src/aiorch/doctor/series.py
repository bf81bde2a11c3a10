"""Samples grouped the way the checks ask for them, and PromQL's `histogram_quantile`.

A `View` holds, for each sample name (`orchestrator_queries_total`,
`kimi_response_duration_seconds_bucket`, ...), the value of every series: counter and bucket
increases over a window, or totals since start, and gauges' current values. Both sources (two
scrapes of `/metrics`, or a Prometheus server) fill the same `View`, so the checks cannot tell them
apart. Labels the checks do not group by (instance, job, pod) are summed away, as `sum by (...)`.
"""

from __future__ import annotations

import math
import operator
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

# A series' labels, sorted by name so that equal label sets compare equal.
Labels = tuple[tuple[str, str], ...]


def labels_of(mapping: Mapping[str, str]) -> Labels:
    return tuple(sorted(mapping.items()))


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts `(upper bound, count)`, sorted, the `+Inf` bucket last."""

    buckets: tuple[tuple[float, float], ...]

    @property
    def count(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0

    def quantile(self, q: float) -> float | None:
        """PromQL's `histogram_quantile(q, ...)`; None where PromQL gives NaN (no observations).

        Linear interpolation inside the bucket holding the rank, from 0 for the first bucket; a
        rank in the `+Inf` bucket gives the highest finite bound, as in Prometheus.
        """
        if q < 0:
            return -math.inf
        if q > 1:
            return math.inf
        buckets = _monotonic(self.buckets)
        if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
            return None
        observations = buckets[-1][1]
        if observations <= 0:
            return None
        rank = q * observations
        index = next(
            (i for i, (_, count) in enumerate(buckets[:-1]) if count >= rank), len(buckets) - 1
        )
        if index == len(buckets) - 1:
            return buckets[-2][0]
        if index == 0 and buckets[0][0] <= 0:
            return buckets[0][0]
        start, end, count = 0.0, buckets[index][0], buckets[index][1]
        if index > 0:
            start = buckets[index - 1][0]
            count -= buckets[index - 1][1]
            rank -= buckets[index - 1][1]
        if count <= 0:
            return start
        return start + (end - start) * (rank / count)

    def share_within(self, limit: float) -> float | None:
        """Share of observations at or under `limit`: exact on a bucket boundary, interpolated
        linearly inside a bucket otherwise (the inverse of `quantile`). Past the highest finite
        bound it is a lower bound: where in the `+Inf` bucket observations fall is unknown."""
        buckets = _monotonic(self.buckets)
        total = self.count
        if total <= 0:
            return None
        below, lower = 0.0, 0.0
        for bound, cumulative in buckets:
            if limit >= bound:
                below, lower = cumulative, bound
                continue
            if math.isinf(bound):
                break
            width = bound - lower
            fraction = (limit - lower) / width if width > 0 else 1.0
            below += (cumulative - below) * max(0.0, fraction)
            break
        return min(1.0, below / total)

    def is_boundary(self, value: float) -> bool:
        return any(bound == value for bound, _ in self.buckets)


def _monotonic(buckets: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Counts made non-decreasing, as PromQL does: window deltas across a restart can dip."""
    fixed: list[tuple[float, float]] = []
    highest = 0.0
    for bound, count in sorted(buckets):
        highest = max(highest, count)
        fixed.append((bound, highest))
    return fixed


Key = tuple[str, ...]


class View:
    """Values by sample name and label set, with the few aggregations the checks need."""

    def __init__(self, samples: Mapping[str, Mapping[Labels, float]]) -> None:
        self._samples = {
            name: {labels: float(value) for labels, value in series.items()}
            for name, series in samples.items()
        }

    def names(self) -> frozenset[str]:
        return frozenset(self._samples)

    def series(self, name: str) -> Iterable[tuple[Labels, float]]:
        return self._samples.get(name, {}).items()

    def _matching(
        self, name: str, where: Mapping[str, str] | None
    ) -> Iterable[tuple[dict[str, str], float]]:
        for labels, value in self.series(name):
            mapping = dict(labels)
            if where and any(mapping.get(k) != v for k, v in where.items()):
                continue
            if math.isnan(value):
                continue
            yield mapping, value

    def total(self, name: str, where: Mapping[str, str] | None = None) -> float:
        return sum(value for _, value in self._matching(name, where))

    def by(
        self,
        name: str,
        labels: Sequence[str],
        where: Mapping[str, str] | None = None,
        combine: Callable[[float, float], float] = operator.add,
    ) -> dict[Key, float]:
        """`sum by (labels)` (or `max by`, with `combine=max`)."""
        out: dict[Key, float] = {}
        for mapping, value in self._matching(name, where):
            key = tuple(mapping.get(label, "") for label in labels)
            out[key] = combine(out[key], value) if key in out else value
        return out

    def histogram(
        self, family: str, labels: Sequence[str] = (), where: Mapping[str, str] | None = None
    ) -> dict[Key, Histogram]:
        """`sum by (le, labels) (<family>_bucket)`, one `Histogram` per label combination."""
        grouped: dict[Key, dict[float, float]] = defaultdict(lambda: defaultdict(float))
        for mapping, value in self._matching(f"{family}_bucket", where):
            try:
                bound = float(mapping.get("le", ""))
            except ValueError:
                continue
            key = tuple(mapping.get(label, "") for label in labels)
            grouped[key][bound] += value
        return {
            key: Histogram(tuple(sorted(buckets.items())))
            for key, buckets in grouped.items()
            if buckets
        }
