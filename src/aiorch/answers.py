"""Queries into messages, several answers into one, a finished answer into a stream, and one
upstream call shared by identical queries in flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from aiorch.errors import RequestError
from aiorch.types import Message, QueryResult, Service, StreamChunk, StreamStart

TITLES = {Service.KIMI.value: "Kimi-K2-Thinking", Service.QWEN.value: "Qwen Coder"}


def build_messages(query: str, context: str | None = None) -> list[Message]:
    if not isinstance(query, str):
        raise RequestError("query must be a string", param="query")
    messages = [Message("system", f"Context:\n{context}")] if context else []
    messages.append(Message("user", query))
    return messages


def merge_answers(answers: Mapping[str, str]) -> str:
    """One text from several services' answers, each under its model family's name."""
    if len(answers) == 1:
        return next(iter(answers.values()))
    return "\n\n".join(f"## {TITLES.get(name, name)}\n\n{text}" for name, text in answers.items())


async def replay(result: QueryResult) -> AsyncIterator[StreamStart | StreamChunk]:
    """A finished answer as a stream: start, the whole text, the end."""
    yield StreamStart(
        result.query_type,
        result.selected_service,
        result.model,
        result.request_id,
        cached=result.cached,
        fallback=result.fallback,
        offline=result.offline,
    )
    yield StreamChunk(
        content=result.answer, reasoning_content=result.reasoning_content or "", model=result.model
    )
    yield StreamChunk(finish_reason="stop", usage=result.usage, model=result.model)


class SharedCall:
    """One upstream call awaited by every identical query in flight.

    The call outlives any single waiter (it is shielded), but not all of them: when the last
    waiter is cancelled (its client went away), the call is cancelled too.
    """

    def __init__(self, task: asyncio.Task[QueryResult]) -> None:
        self.task = task
        self.waiters = 0

    async def join(self) -> QueryResult:
        self.waiters += 1
        try:
            return await asyncio.shield(self.task)
        except asyncio.CancelledError:
            self.waiters -= 1
            if self.waiters == 0:
                self.task.cancel()
            raise
