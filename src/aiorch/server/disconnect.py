"""Noticing a client that went away before its answer was ready.

uvicorn cancels nothing when a client disconnects during a plain (non-streaming) request, and a
thinking model can take minutes: without watching the connection, a client that gave up would
keep its upstream call running to the end, and a client's retry would start a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

T = TypeVar("T")
# nginx's "client closed request": recorded in the HTTP metrics, seen by nobody.
CLIENT_GONE = 499
# Most answers come sooner than this; only slower ones pay for a watcher task.
WATCH_AFTER = 0.25


async def client_gone(request: Request) -> None:
    """Returns when the client disconnects. Call only after the body has been read."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_client_leaves(
    request: Request, work: Coroutine[Any, Any, T], watch_after: float = WATCH_AFTER
) -> T | None:
    """The result of `work`, or None if the client left first (`work` is then cancelled)."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait((task,), timeout=watch_after)
        if not done:
            gone = asyncio.ensure_future(client_gone(request))
            try:
                await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
            finally:
                gone.cancel()
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None
    return task.result()


def client_gone_response() -> Response:
    return Response(status_code=CLIENT_GONE)
