"""Hedged calls: ask a second service when the first is slower than usual; take the first answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def hedged(
    first: Callable[[], Awaitable[T]],
    second: Callable[[], Awaitable[T]],
    delay: float,
    succeeded: Callable[[T], bool],
) -> list[T]:
    """Start `first`; if it has not finished after `delay` seconds, start `second` as well.

    Returns the outcomes in the order they finished, stopping at the first that `succeeded`
    (the other call is then cancelled). The calls report failure through their result, not by
    raising. One outcome means `second` was never started.
    """
    tasks = [asyncio.ensure_future(first())]
    outcomes: list[T] = []
    try:
        done, _ = await asyncio.wait(tasks, timeout=delay)
        if not done:
            tasks.append(asyncio.ensure_future(second()))
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            # Both may finish in the same turn: take a success first.
            finished = sorted((t.result() for t in done), key=lambda o: not succeeded(o))
            outcomes.extend(finished)
            if succeeded(finished[0]):
                break
        return outcomes
    finally:
        unfinished = [t for t in tasks if not t.done()]
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
