"""Server-sent events: framing, the error event that ends a failed stream, and waiting for a
stream's first event while watching the client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import TypeVar

import msgspec
from starlette.requests import Request

from aiorch.errors import AiorchError
from aiorch.server.disconnect import client_gone

T = TypeVar("T")

_encode = msgspec.json.Encoder().encode
DONE = b"data: [DONE]\n\n"


def event(data: object, name: str | None = None) -> bytes:
    head = b"event: " + name.encode() + b"\n" if name else b""
    return head + b"data: " + _encode(data) + b"\n\n"


def error_event(error: AiorchError, name: str | None = None) -> bytes:
    """An explicit error in the stream: the client never mistakes a failure for a short answer."""
    return event(error.to_dict(), name)


def internal_error(request_id: str) -> AiorchError:
    return AiorchError(f"internal error while streaming (request {request_id})")


async def first_event(request: Request, events: AsyncGenerator[T, None]) -> T | None:
    """The stream's first event, or None when the client leaves before it (the stream is then
    closed, which cancels the upstream call).

    Until the response starts nothing else watches the connection, and a thinking model can
    take minutes to its first token: without this, a client that gives up meanwhile would keep
    the upstream call running until that token. Errors raised before the first event propagate,
    so that they become plain JSON errors with their status.
    """

    async def first() -> T:
        return await anext(events)

    answer = asyncio.ensure_future(first())
    gone = asyncio.ensure_future(client_gone(request))
    try:
        await asyncio.wait((answer, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not answer.done():
            answer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await answer  # let the stream run its cleanup before we go on
            await events.aclose()
    if answer.cancelled():
        return None
    return answer.result()
