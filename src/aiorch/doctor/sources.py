"""Reading aiorch directly: two scrapes of `/metrics` some seconds apart, and `/readyz`.

Every network or format problem becomes a `SourceError` whose message an on-call engineer can
act on (what was called, what happened, what to check); nothing here lets a traceback out.
"""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from aiorch.doctor.exposition import (
    ExpositionError,
    Scrape,
    between,
    expected_families,
    missing_families,
    parse,
    totals,
    traffic,
)
from aiorch.doctor.findings import count, seconds
from aiorch.doctor.observation import Observation, Readiness, Window, decode_readiness

MAX_BODY = 64 * 1024 * 1024  # a /metrics this large is itself a problem worth reporting


class SourceError(Exception):
    """A source could not be read; `str()` is the whole story for the user."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes


def fetch(url: str, *, timeout: float, headers: dict[str, str] | None = None) -> Response:
    """GET `url`; an HTTP error status is returned, not raised. Network errors: `SourceError`."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Response(response.status, response.read(MAX_BODY))
    except urllib.error.HTTPError as error:
        with error:
            return Response(error.code, error.read(MAX_BODY))
    except urllib.error.URLError as error:
        raise SourceError(f"cannot reach {url}: {_reason(error.reason)}") from None
    except TimeoutError:
        raise SourceError(f"{url} did not answer within {timeout:g} s") from None
    except (OSError, ValueError, http.client.HTTPException) as error:
        # HTTPException: something answered that does not speak HTTP, or hung up mid-answer.
        raise SourceError(f"cannot read {url}: {error!r}") from None


def _reason(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (nothing is listening there)"
    if isinstance(reason, socket.gaierror):
        return "unknown host"
    if isinstance(reason, TimeoutError):
        return "timed out"
    return str(reason)


def scrape(base_url: str, *, timeout: float, token: str | None = None) -> Scrape:
    url = f"{base_url}/metrics"
    # The text format, not OpenMetrics: it is what the parser reads.
    headers = {"Accept": "text/plain; version=0.0.4"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    response = fetch(url, timeout=timeout, headers=headers)
    if response.status == 401:
        hint = "the token was refused" if token else "pass --metrics-token"
        raise SourceError(f"{url} needs the metrics token (HTTP 401): {hint}")
    if response.status != 200:
        raise SourceError(f"{url} answered HTTP {response.status}")
    try:
        return parse(response.body.decode("utf-8", errors="replace"))
    except ExpositionError as error:
        raise SourceError(f"{url}: {error}") from None


def readiness(base_url: str, *, timeout: float, token: str | None = None) -> Readiness:
    url = f"{base_url}/readyz"
    headers = {"Accept": "application/json"}
    if token:  # the metrics token unlocks each backend's details (URL, model, the probe's words)
        headers["Authorization"] = f"Bearer {token}"
    response = fetch(url, timeout=timeout, headers=headers)
    # 503 carries the same JSON: "unavailable", with each backend's detail.
    if response.status not in (200, 503):
        raise SourceError(f"{url} answered HTTP {response.status}")
    try:
        return decode_readiness(response.body)
    except ValueError as error:
        raise SourceError(f"{url} did not answer with aiorch's readiness JSON: {error}") from None


def read_readiness(
    base_url: str, timeout: float, token: str | None = None
) -> tuple[Readiness | None, str | None]:
    try:
        return readiness(base_url, timeout=timeout, token=token), None
    except SourceError as error:
        return None, str(error)


def observe(
    base_url: str,
    *,
    interval: float,
    timeout: float = 10.0,
    token: str | None = None,
    wait: Callable[[float], None] = time.sleep,
) -> Observation:
    """Scrape, wait `interval` seconds, scrape again; read `/readyz`.

    With no queries between the scrapes (or `interval` 0), the figures are totals since aiorch
    started, and the window's note says so.
    """
    base_url = base_url.rstrip("/")
    expected = len(expected_families())
    try:
        first = scrape(base_url, timeout=timeout, token=token)
        second = first
        if interval > 0:
            wait(interval)
            second = scrape(base_url, timeout=timeout, token=token)
    except SourceError as error:
        window = Window("metrics", f"{base_url}/metrics", interval, False, "no figures: see below")
        ready, ready_error = read_readiness(base_url, timeout, token)
        return Observation(
            window,
            None,
            metrics_error=str(error),
            expected_families=expected,
            readiness=ready,
            readiness_error=ready_error,
        )
    view = between(first, second) if interval > 0 else totals(second)
    since_start = interval <= 0 or traffic(view) <= 0
    if interval > 0 and since_start:
        view = totals(second)
    # What happened before the window, when anything did: the baseline a phase grew from.
    before = totals(first)
    baseline = None if since_start or traffic(before) <= 0 else before
    queries = view.total("orchestrator_queries_total")
    if interval <= 0:
        note = f"One scrape: totals since aiorch started ({count(queries)} queries)"
    elif since_start:
        note = (
            f"No queries in the {seconds(interval)} between two scrapes: the figures are "
            f"totals since aiorch started ({count(queries)} queries)."
        )
    else:
        note = f"{count(queries)} queries in the {seconds(interval)} between two scrapes"
    ready, ready_error = read_readiness(base_url, timeout, token)
    return Observation(
        Window("metrics", f"{base_url}/metrics", interval, since_start, note, queries),
        view,
        missing_families=missing_families(second),
        expected_families=expected,
        readiness=ready,
        readiness_error=ready_error,
        baseline=baseline,
    )
