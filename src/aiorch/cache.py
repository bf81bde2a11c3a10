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

from aiorch.request import ChatRequest
from aiorch.types import AgentType

log = logging.getLogger(__name__)

# v3: keys cover the whole request and keep code's whitespace (v1 collapsed it). A new prefix, so
# that a shared Redis never serves an entry keyed the old way after an upgrade.
KEY_PREFIX = "aiorch:answer:v3:"


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
    """The message as its meaning goes: only what cannot change that meaning is normalised.

    The Unicode form (NFC: "e" + combining acute is "\u00e9"), line endings (CRLF and a lone CR are
    LF) and whitespace around the whole message. Everything inside is kept verbatim: in code,
    indentation and line breaks are meaning (Python's blocks, YAML's nesting, a Makefile's tabs),
    so two snippets that differ only there must never share an answer or a coalesced call.
    """
    text = unicodedata.normalize("NFC", text)
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def cache_key(
    request: ChatRequest,
    *,
    targets: tuple[str, ...],
    agent_type: AgentType,
    tenant: str,
) -> str:
    """A digest of everything that changes the answer: the messages, every parameter, the models
    asked, the agent and the tenant.

    `targets` names the route's models (`service/model-id`), so changing a model in the
    configuration never serves the old model's answers. Fields that do not change the answer
    (streaming, the end user's id, metadata) are left out, so a stream and a plain request share
    entries.
    """
    messages = tuple(
        msgspec.structs.replace(m, content=normalise_query(m.content))
        if isinstance(m.content, str)
        else m
        for m in request.messages
    )
    keyed = msgspec.structs.replace(
        request,
        messages=messages,
        model="",
        stream=False,
        stream_options=None,
        user=None,
        metadata=None,
        store=None,
        safety_identifier=None,
        prompt_cache_key=None,
    )
    parts = (keyed, targets, agent_type.value, tenant)
    return KEY_PREFIX + hashlib.blake2b(msgspec.json.encode(parts), digest_size=20).hexdigest()
