"""Playing a stream out in time, and the faults that break it, for both dialects.

A dialect hands over its events as bytes: an opening (the role chunks; empty for Ollama), one
event per token, a closing (finish chunks and `[DONE]`, or Ollama's `done` line, made when it is
due because it carries timings), one malformed event and one error event. `play` writes them at
the model's token rate and acts out the stream faults:

- `cut`: the opening and `cut_after` token events, then the connection closes (no closing);
- `stall`: `stall_after` token events, `stall_ms` of silence, then the rest as normal;
- `malformed_event`: a bad event becomes the stream's `malformed_at`-th event (counting the
  opening as the first where there is one); every real event still arrives;
- `stream_error`: `stream_error_after` token events, the error event, then a clean end;
- `malformed` (the older fault): one good event, the bad one, then the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from aiorch.mock import faults
from aiorch.mock.engine import Job, emit


@dataclass(slots=True)
class Events:
    opening: bytes
    tokens: list[bytes]
    closing: bytes | Callable[[], bytes]
    malformed: bytes
    error: bytes


async def play(
    request: web.Request,
    response: web.StreamResponse,
    job: Job,
    events: Events,
    *,
    legacy_malformed: bytes,
) -> web.StreamResponse:
    fault = job.fault
    if fault is not None:
        response.headers["X-Mock-Fault"] = fault
    await response.prepare(request)
    await job.wait_first_token()
    b = job.behaviour
    interval = job.token_interval_s
    tokens = list(events.tokens)
    if fault == "malformed":
        await response.write(legacy_malformed)
        if not isinstance(events.closing, bytes):  # Ollama's done line still comes
            await response.write(events.closing())
        await response.write_eof()
        return response
    if fault == "malformed_event":
        _insert_malformed(events, tokens, b.malformed_at)
    if fault == "cut":
        await emit(response, _opened(events.opening, tokens[: b.cut_after]), interval)
        faults.drop_connection(request)
        return response
    if fault == "stream_error":
        await emit(response, _opened(events.opening, tokens[: b.stream_error_after]), interval)
        await response.write(events.error)
        await response.write_eof()
        return response
    if fault == "stall":
        head, rest = tokens[: b.stall_after], tokens[b.stall_after :]
        await emit(response, _opened(events.opening, head), interval)
        await asyncio.sleep(b.stall_ms / 1000)
        tokens, events.opening = rest, b""
    items = _opened(events.opening, tokens) or [b""]
    if isinstance(events.closing, bytes):
        items[-1] += events.closing
        await emit(response, items, interval)
    else:
        await emit(response, items, interval)
        await response.write(events.closing())
    await response.write_eof()
    return response


def _opened(opening: bytes, tokens: list[bytes]) -> list[bytes]:
    """The opening goes out with the first token, so that the first token is not an interval
    late; with no tokens it goes out alone."""
    if not tokens:
        return [opening] if opening else []
    return [opening + tokens[0], *tokens[1:]]


def _insert_malformed(events: Events, tokens: list[bytes], nth: int) -> None:
    position = nth - 1  # 0-based among the events
    if events.opening:
        if position == 0:
            events.opening = events.malformed + events.opening
            return
        position -= 1
    if position < len(tokens):
        tokens[position] = events.malformed + tokens[position]
    elif isinstance(events.closing, bytes):
        events.closing = events.malformed + events.closing
    else:
        closing = events.closing
        events.closing = lambda: events.malformed + closing()
