"""What is measured: a server under test and the request sent to it, one row of the table each.

- `upstream`: straight to the mock (the request aiorch would send Qwen);
- `forwarder /v1`, `forwarder /api`: the bare forwarder (`forwarder.py`) with the same request
  as the upstream row, and with the `/api/ai/query` body;
- `<build> /v1 miss|hit`, `<build> /api miss|hit`: each aiorch build under test (several builds
  can be measured in one run, each from its own venv);
- `<build> /api typed miss`: the `/api` miss with `query_type` given, so not classified: the rest
  of the request path, comparable between builds whose routers differ (closed loop only).

Every aiorch row is compared with the forwarder row of its endpoint (CPU per request) and with the
upstream row of its scenario (added latency).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aiorch.bench.targets import HttpTarget
from benchmarks.overhead.generators import Shape
from benchmarks.overhead.servers import Proc
from benchmarks.overhead.shapes import (
    AIORCH_HEADERS,
    AIORCH_PATH,
    CHAT_HIT,
    CHAT_MISS,
    CHAT_PATH,
    DIRECT,
    DIRECT_HEADERS,
    HIT,
    MISS,
    QWEN_MODEL,
    TYPED_MISS,
    UPSTREAM_KEY,
    UPSTREAM_PATH,
)

Kind = Literal["upstream", "forwarder", "aiorch"]
UPSTREAM = "upstream"


def forwarder_label(endpoint: str) -> str:
    return f"forwarder {endpoint}"


@dataclass(frozen=True)
class Subject:
    label: str
    kind: Kind
    endpoint: str  # "/v1" or "/api": which forwarder row it is compared with
    server: Proc  # whose CPU is measured
    path: str
    headers: dict[str, str]
    shape: Shape
    hit: bool = False
    build: str | None = None  # the aiorch build's name
    typed: bool = False  # the query type given: no classification

    @property
    def unique(self) -> bool:
        return not self.hit

    @property
    def baseline(self) -> str:
        return forwarder_label(self.endpoint)

    def stream_target(self) -> HttpTarget:
        """The same server streamed: `/v1/chat/completions` with `stream: true`, a unique query."""
        if self.kind == "aiorch":
            return HttpTarget(self.server.url, endpoint="chat", stream=True, model="qwen")
        key = UPSTREAM_KEY if self.kind == "upstream" else None
        return HttpTarget(
            self.server.url, endpoint="chat", stream=True, model=QWEN_MODEL, api_key=key
        )


def closed_loop(mock: Proc, forwarder: Proc, builds: dict[str, Proc]) -> list[Subject]:
    """Every row of the c=1 and c=N phases."""
    rows = [
        Subject(UPSTREAM, "upstream", "/v1", mock, UPSTREAM_PATH, DIRECT_HEADERS, DIRECT),
        Subject(
            forwarder_label("/v1"), "forwarder", "/v1", forwarder, CHAT_PATH, AIORCH_HEADERS, DIRECT
        ),
        Subject(
            forwarder_label("/api"),
            "forwarder",
            "/api",
            forwarder,
            AIORCH_PATH,
            AIORCH_HEADERS,
            MISS,
        ),
    ]
    for name, proc in builds.items():
        for endpoint, path, miss, hit in (
            ("/v1", CHAT_PATH, CHAT_MISS, CHAT_HIT),
            ("/api", AIORCH_PATH, MISS, HIT),
        ):
            for shape, is_hit in ((miss, False), (hit, True)):
                label = f"{name} {endpoint} {'hit' if is_hit else 'miss'}"
                rows.append(
                    Subject(
                        label,
                        "aiorch",
                        endpoint,
                        proc,
                        path,
                        AIORCH_HEADERS,
                        shape,
                        hit=is_hit,
                        build=name,
                    )
                )
        rows.append(
            Subject(
                f"{name} /api typed miss",
                "aiorch",
                "/api",
                proc,
                AIORCH_PATH,
                AIORCH_HEADERS,
                TYPED_MISS,
                build=name,
                typed=True,
            )
        )
    return rows


def misses(subjects: list[Subject]) -> list[Subject]:
    """The rows of the open-loop and fixed-delay phases: no cache hits, nothing typed."""
    return [s for s in subjects if not (s.hit or s.typed)]


def streamed(subjects: list[Subject]) -> list[Subject]:
    """One streamed row per server: the upstream, the forwarder and each build (on /v1)."""
    return [s for s in subjects if s.endpoint == "/v1" and not s.hit]
