"""Server-sent events: framing, the error event that ends a failed stream, waiting for a
stream's first event while watching the client, and the response that sends the rest."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from aiorch.errors import AiorchError
from aiorch.server.disconnect import client_gone, unless_client_leaves

T = TypeVar("T")

log = logging.getLogger(__name__)
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
    try:
        first = await unless_client_leaves(request, anext(events))
    except BaseException:
        await events.aclose()
        raise
    if first is None:
        await events.aclose()
    return first


class EventStream(Response):
    """The rest of a streamed answer, as it comes, every event made ready at once in one write.

    The events are made in a task of their own and written by this one: while the upstream's
    bytes keep arriving, they pile up, and go out together when the maker next waits (a write
    per event cost a system call and a pass through every ASGI layer each). Nothing waits for
    company: the first event ready is written as soon as this task runs. A client that
    disconnects cancels the maker, which closes the stream (and so the upstream call).
    """

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        headers: Mapping[str, str],
        failed: Callable[[], bytes],
    ) -> None:
        self.chunks = chunks
        self.status_code = 200
        self.media_type = "text/event-stream"
        self.background = None
        self.init_headers(headers)
        self.failed = failed  # the error event for a defect in making the chunks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        pending: list[bytes] = []
        ready = asyncio.Event()
        maker = asyncio.ensure_future(self._make(pending, ready))
        watcher = asyncio.ensure_future(_cancel_when_gone(receive, maker))
        try:
            while True:
                await ready.wait()
                ready.clear()
                last = maker.done()
                body = b"".join(pending)
                pending.clear()
                await send({"type": "http.response.body", "body": body, "more_body": not last})
                if last:
                    return
        finally:
            watcher.cancel()
            if not maker.done():
                maker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await maker

    async def _make(self, pending: list[bytes], ready: asyncio.Event) -> None:
        try:
            async for chunk in self.chunks:
                pending.append(chunk)
                ready.set()
        except Exception:
            log.exception("a stream failed while its events were made")
            pending.append(self.failed())
        finally:
            ready.set()


async def _cancel_when_gone(receive: Receive, task: asyncio.Future[None]) -> None:
    await client_gone(receive)
    task.cancel()
