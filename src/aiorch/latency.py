"""Recent latencies of one backend, for hedged requests."""

from __future__ import annotations

import math
from collections import deque


class LatencyWindow:
    """The last `size` successful call latencies of one backend, and a quantile of them."""

    def __init__(self, size: int) -> None:
        self._recent: deque[float] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self._recent)

    def observe(self, seconds: float) -> None:
        self._recent.append(seconds)

    def quantile(self, q: float) -> float | None:
        if not self._recent:
            return None
        ordered = sorted(self._recent)
        rank = math.ceil(q * len(ordered))  # nearest rank: a value that was actually seen
        return ordered[min(len(ordered), max(1, rank)) - 1]
