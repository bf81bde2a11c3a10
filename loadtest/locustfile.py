"""Locust scenarios for aiorch: `/api/ai/query` by query type, and the OpenAI endpoint streamed.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000
    locust -f loadtest/locustfile.py --headless -u 50 -r 10 -t 5m --host http://127.0.0.1:8000

Queries come from `loadtest/queries.jsonl` (shared with k6 and `aiorch bench --mix`). Each task
picks a query of its type and sends it with that `query_type`; the `auto` task sends the untyped
ones and lets aiorch classify. A share of queries (AIORCH_LOADTEST_UNIQUE, default 0.3) gets a
unique tag and so misses the cache; the rest repeat, as real users' questions do, and the
`popular` task asks the same question every time: a cache hit after the first.

A request fails on a non-2xx status, a body without an answer, or an error event in a stream.
Streams are read to `data: [DONE]`: Locust times the POST to its first byte, and a second entry,
`SSE <name>`, times the whole stream and fails if it ends early or with an error event.

Environment: AIORCH_API_KEY (sent as a Bearer key), AIORCH_LOADTEST_WAIT ("min,max" seconds
between a user's requests, default "1,3"), AIORCH_LOADTEST_UNIQUE, AIORCH_LOADTEST_QUERIES (a
different JSONL mix).
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from locust import HttpUser, between, task

HERE = Path(__file__).resolve().parent
QUERY_TYPES = ("code", "reasoning", "requirements", "testing", "general", "unknown")
POPULAR = "What is the difference between a process and a thread?"


def load_queries(path: Path) -> dict[str, list[str]]:
    """Queries by type; untyped entries go under "auto"."""
    pools: dict[str, list[str]] = defaultdict(list)
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            entry = json.loads(line)
            weight = max(1, round(float(entry.get("weight", 1))))
            pools[entry.get("query_type") or "auto"].extend([entry["query"]] * weight)
    return dict(pools)


def _wait() -> tuple[float, float]:
    low, _, high = os.environ.get("AIORCH_LOADTEST_WAIT", "1,3").partition(",")
    return float(low), float(high or low)


QUERIES = load_queries(Path(os.environ.get("AIORCH_LOADTEST_QUERIES", HERE / "queries.jsonl")))
UNIQUE_SHARE = float(os.environ.get("AIORCH_LOADTEST_UNIQUE", "0.3"))


class AiorchUser(HttpUser):
    wait_time = between(*_wait())

    def on_start(self) -> None:
        self.client.headers["Content-Type"] = "application/json"
        key = os.environ.get("AIORCH_API_KEY")
        if key:
            self.client.headers["Authorization"] = f"Bearer {key}"

    def _query_text(self, kind: str) -> str:
        text = random.choice(QUERIES.get(kind) or QUERIES["code"])
        if random.random() < UNIQUE_SHARE:
            text = f"{text} (ticket {uuid.uuid4().hex[:8]})"
        return text

    def _ask(self, kind: str, text: str, query_type: str | None = None) -> None:
        body: dict[str, Any] = {"query": text}
        if query_type or kind in QUERY_TYPES:
            body["query_type"] = query_type or kind
        with self.client.post(
            "/api/ai/query", json=body, name=f"/api/ai/query [{kind}]", catch_response=True
        ) as response:
            if not 200 <= response.status_code < 300:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            try:
                data = response.json()
            except ValueError:
                response.failure("the body is not JSON")
                return
            if not isinstance(data.get("answer"), str) or "selected_service" not in data:
                response.failure(f"no answer in the body: {response.text[:200]}")
                return
            response.success()

    @task(4)
    def code(self) -> None:
        self._ask("code", self._query_text("code"))

    @task(2)
    def reasoning(self) -> None:
        self._ask("reasoning", self._query_text("reasoning"))

    @task(1)
    def requirements(self) -> None:
        self._ask("requirements", self._query_text("requirements"))

    @task(1)
    def testing(self) -> None:
        self._ask("testing", self._query_text("testing"))

    @task(1)
    def general(self) -> None:
        self._ask("general", self._query_text("general"))

    @task(1)
    def unknown(self) -> None:
        self._ask("unknown", self._query_text("unknown"))

    @task(1)
    def auto(self) -> None:
        """No query_type: aiorch's classifier decides."""
        self._ask("auto", self._query_text("auto"))

    @task(2)
    def popular(self) -> None:
        """The same question every time: served from the cache after the first."""
        self._ask("popular", POPULAR, "general")

    @task(1)
    def chat(self) -> None:
        body = {
            "model": "auto",
            "messages": [{"role": "user", "content": self._query_text("code")}],
        }
        with self.client.post(
            "/v1/chat/completions", json=body, name="/v1/chat/completions", catch_response=True
        ) as response:
            if not 200 <= response.status_code < 300:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            try:
                choices = response.json()["choices"]
                choices[0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                response.failure(f"not a chat completion: {response.text[:200]}")
                return
            response.success()

    @task(2)
    def chat_stream(self) -> None:
        model = random.choice(("auto", "auto", "kimi", "qwen"))
        kind = random.choice(("reasoning", "code", "general"))
        body = {
            "model": model,
            "stream": True,
            "messages": [{"role": "user", "content": self._query_text(kind)}],
        }
        name = f"/v1/chat/completions [stream {model}]"
        started = time.perf_counter()
        with self.client.post(
            "/v1/chat/completions", json=body, name=name, stream=True, catch_response=True
        ) as response:
            if not 200 <= response.status_code < 300:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return
            response.success()
            error, length = self._read_sse(response)
        self.environment.events.request.fire(
            request_type="SSE",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            response=None,
            context={},
            exception=error,
        )

    @staticmethod
    def _read_sse(response: Any) -> tuple[Exception | None, int]:
        """Read the stream to `data: [DONE]`; an error event or an early end is a failure."""
        length = 0
        try:
            for raw in response.iter_lines():
                length += len(raw) + 1
                line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    return None, length
                data = json.loads(payload)
                if "error" in data:
                    return RuntimeError(f"error event: {payload[:200]}"), length
        except Exception as error:  # a cut connection or a bad event: the stream failed
            return RuntimeError(f"stream broke: {error!r}"), length
        return RuntimeError("the stream ended without data: [DONE]"), length
