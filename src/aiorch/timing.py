"""Where a request's time went: its phases, for the `Server-Timing` header and
`aiorch_phase_duration_seconds{phase}`.

    queue       received by the server -> the handler started (the event loop was busy)
    parse       reading and decoding the body
    classify    the query type from the text
    cache       cache lookups and stores
    connect     opening an upstream connection, or waiting for one from the pool
    first_byte  the upstream's wait before its first event (the whole answer for a plain call)
    stream      the first upstream event -> the last
    gateway     everything else the gateway did (routing, assembling the answer, ...)
    total       received -> the answer's last byte handed to the server

The named phases add up to `total`: `gateway` is what the others leave. A request that followed
another's call in flight waits on that call as `first_byte` and `stream`, like any other.
"""

from __future__ import annotations

import time

PHASES = (
    "queue",
    "parse",
    "classify",
    "cache",
    "connect",
    "first_byte",
    "stream",
    "gateway",
    "total",
)
_MEASURED = PHASES[:-2]  # what `gateway` is the rest of


class Timeline:
    """One request's phases, in seconds. Cheap: a dict and a clock read per mark."""

    __slots__ = ("first_event", "late", "phases", "received", "upstream_from", "used")

    def __init__(self, received: float | None = None) -> None:
        now = time.perf_counter()
        self.received = now if received is None else received
        self.phases: dict[str, float] = {}
        if received is not None:
            self.phases["queue"] = max(0.0, now - received)
        self.upstream_from: float | None = None  # when the wait on the upstream began
        self.first_event: float | None = None
        self.late = 0.0  # time spent on other phases after the first event (a cache store)
        self.used = False  # whether the request went through the pipeline at all

    def add(self, phase: str, seconds: float) -> None:
        self.phases[phase] = self.phases.get(phase, 0.0) + seconds
        if self.first_event is not None:
            self.late += seconds

    def waiting(self) -> None:
        """The request now waits on the upstream (after planning and the cache lookup)."""
        self.upstream_from = time.perf_counter()

    def first(self) -> None:
        """The first event of the answer arrived."""
        now = time.perf_counter()
        if self.upstream_from is not None:
            waited = now - self.upstream_from - self.phases.get("connect", 0.0)
            self.add("first_byte", max(0.0, waited))
        self.first_event = now

    def last(self) -> None:
        """The last event of the answer arrived."""
        if self.first_event is not None:
            stream = time.perf_counter() - self.first_event - self.late
            self.phases["stream"] = self.phases.get("stream", 0.0) + max(0.0, stream)

    def finish(self) -> dict[str, float]:
        """Every phase, `gateway` and `total` included, at this moment."""
        total = time.perf_counter() - self.received
        phases = {name: self.phases[name] for name in _MEASURED if name in self.phases}
        phases["gateway"] = max(0.0, total - sum(phases.values()))
        phases["total"] = total
        return phases

    def header(self, phases: dict[str, float] | None = None) -> str:
        """`Server-Timing`: each phase in milliseconds."""
        shown = phases if phases is not None else self.phases
        return ", ".join(f"{name};dur={seconds * 1000:.3f}" for name, seconds in shown.items())
