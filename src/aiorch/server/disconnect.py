"""Noticing a client that went away before its answer was ready.

uvicorn cancels nothing when a client disconnects during a plain (non-streaming) request, and a
thinking model can take minutes: without watching the connection, a client that gave up would
keep its upstream call running to the end, and a client's retry would start a second one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

T = TypeVar("T")
# nginx's "client closed request": recorded in the HTTP metrics, seen by nobody.
CLIENT_GONE = 499
# Most answers come sooner than this; only slower ones pay for a watcher task.
WATCH_AFTER = 0.25


async def client_gone(receive: Receive) -> None:
    """Returns when the client disconnects. Call only after the body has been read."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def unless_client_leaves(
    request: Request, work: Awaitable[T], watch_after: float = WATCH_AFTER
) -> T | None:
    """The result of `work`, awaited in this task; None if the client left first (`work` is
    then cancelled). The connection is watched once `work` has taken `watch_after`: until then
    a request costs one timer, not a task."""
    task = asyncio.current_task()
    assert task is not None
    watch = _Watch(request.receive, task)
    timer = asyncio.get_running_loop().call_later(watch_after, watch.start)
    try:
        return await work
    except asyncio.CancelledError:
        if watch.gone and task.uncancel() == 0:  # our cancellation, and nobody else's
            return None
        raise
    finally:
        timer.cancel()
        watch.stop()


class _Watch:
    """Cancels `task` when the client disconnects, from the moment it is started."""

    def __init__(self, receive: Receive, task: asyncio.Task[object]) -> None:
        self.receive = receive
        self.task = task
        self.gone = False
        self.watcher: asyncio.Future[None] | None = None

    def start(self) -> None:
        self.watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        await client_gone(self.receive)
        self.gone = True
        self.task.cancel()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.cancel()


def client_gone_response() -> Response:
    return Response(status_code=CLIENT_GONE)
