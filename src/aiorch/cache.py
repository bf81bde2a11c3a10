"""The answer cache: an async interface, an in-process LRU with TTL, and the cache key.

Values are opaque bytes so that every implementation (in-process here, Redis in
`aiorch.redis_store`) stores the same thing. Only complete, successful answers are stored.
"""

from __future__ import annotations

import hashlib
import logging
import time
import unicodedata
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import msgspec

from aiorch.types import AgentType, QueryType

log = logging.getLogger(__name__)

KEY_PREFIX = "aiorch:answer:v1:"


class Cache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl: float) -> None: ...

    async def clear(self) -> None: ...

    async def close(self) -> None: ...


class MemoryCache:
    """An LRU bounded both in entries and in bytes, with a per-entry TTL."""

    def __init__(
        self,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._clock():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if len(value) > self.max_bytes or ttl <= 0:
            return
        if key in self._entries:
            self._remove(key)
        self._entries[key] = (self._clock() + ttl, value)
        self._bytes += len(value)
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._remove(next(iter(self._entries)))

    async def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    async def close(self) -> None:
        return None

    def _remove(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self._bytes -= len(value)


def normalise_query(text: str) -> str:
    """Equal queries up to unicode form and runs of whitespace share a key; case is kept (code)."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def cache_key(
    *,
    messages: tuple[tuple[str, str], ...],
    query_type: QueryType,
    agent_type: AgentType,
    target: str,
    max_tokens: int | None,
    temperature: float | None,
    thinking: bool | None,
    tenant: str,
) -> str:
    """A digest of everything that changes the answer: text, type, models, parameters, tenant.

    `target` names where the query goes (the route's services and their model ids), so changing
    a model in the configuration never serves the old model's answers.
    """
    parts = (
        tuple((role, normalise_query(content)) for role, content in messages),
        query_type.value,
        agent_type.value,
        target,
        max_tokens,
        temperature,
        thinking,
        tenant,
    )
    return KEY_PREFIX + hashlib.blake2b(msgspec.json.encode(parts), digest_size=20).hexdigest()
