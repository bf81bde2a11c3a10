"""The metric classes aiorch's families are built from: prometheus_client's, with `labels`
answered from a dict once a label tuple has been seen (the hot path makes a dozen such calls)."""

from __future__ import annotations

from typing import Any, Self

import prometheus_client
from prometheus_client.metrics import MetricWrapperBase


class _ChildCache(MetricWrapperBase):
    """`labels(*values)` answered from a dict once a label tuple has been seen.

    prometheus_client's `labels` stringifies every value and takes a lock on each call (about
    0.75 us; a query makes a dozen such calls). The child it returns for a tuple never changes
    until `remove` or `clear`, which empty this cache too, so behaviour is the same.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._children: dict[tuple[object, ...], Self] = {}

    def labels(self, *labelvalues: object, **labelkwargs: object) -> Self:
        if labelkwargs:
            return super().labels(*labelvalues, **labelkwargs)
        child = self._children.get(labelvalues)
        if child is None:
            child = self._children[labelvalues] = super().labels(*labelvalues)
        return child

    def remove(self, *labelvalues: object) -> None:
        self._children.clear()
        super().remove(*labelvalues)

    def remove_by_labels(self, labels: dict[str, str]) -> None:
        self._children.clear()
        super().remove_by_labels(labels)

    def clear(self) -> None:
        self._children.clear()
        super().clear()


# aiorch's families are built from these: the same classes, names and labels as
# prometheus_client's, with `labels` served from the cache above.
class Counter(_ChildCache, prometheus_client.Counter):
    pass


class Gauge(_ChildCache, prometheus_client.Gauge):
    pass


class Histogram(_ChildCache, prometheus_client.Histogram):
    pass
