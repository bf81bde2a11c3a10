"""The answer cache: what the key covers, and the LRU's entry, byte and TTL bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from aiorch.cache import KEY_PREFIX, MemoryCache, cache_key, normalise_query
from aiorch.config import load_settings
from aiorch.monitoring.prometheus_metrics import Metrics
from aiorch.orchestrator import AIOrchestrator
from aiorch.request import ChatMessage, ChatRequest, Thinking
from aiorch.types import AgentType


def chat(*messages: tuple[str, str], **fields: Any) -> ChatRequest:
    return ChatRequest(
        messages=tuple(ChatMessage(role=r, content=c) for r, c in messages),  # type: ignore[arg-type]
        model="auto",
        **fields,
    )


BASE: dict[str, Any] = {
    "request": chat(("user", "Why is the sky blue?")),
    "targets": ("kimi/kimi-k2-thinking", "qwen/qwen2.5-coder:7b"),
    "agent_type": AgentType.DIRECT,
    "tenant": "",
}


def key(**changes: Any) -> str:
    values = {**BASE, **changes}
    return cache_key(
        values["request"],
        targets=values["targets"],
        agent_type=values["agent_type"],
        tenant=values["tenant"],
    )


def test_key_is_stable_and_prefixed() -> None:
    assert key() == key()
    assert key().startswith(KEY_PREFIX)


@pytest.mark.parametrize(
    ("field", "other"),
    [
        ("request", chat(("user", "Why is the sea blue?"))),
        ("request", chat(("system", "Context:\nkids"), ("user", "Why is the sky blue?"))),
        ("request", chat(("assistant", "Why is the sky blue?"))),
        ("request", chat(("user", "Why is the sky blue?"), max_tokens=100)),
        ("request", chat(("user", "Why is the sky blue?"), temperature=0.0)),
        ("request", chat(("user", "Why is the sky blue?"), thinking=Thinking("enabled"))),
        ("request", chat(("user", "Why is the sky blue?"), seed=7)),
        ("request", chat(("user", "Why is the sky blue?"), tools=({"type": "function"},))),
        (
            "request",
            chat(("user", "Why is the sky blue?"), response_format={"type": "json_object"}),
        ),
        ("agent_type", AgentType.BA),
        ("targets", ("kimi/kimi-k2.6", "qwen/qwen2.5-coder:7b")),
        ("targets", ("qwen/qwen2.5-coder:7b", "kimi/kimi-k2-thinking")),
        ("tenant", "a1b2c3"),
    ],
)
def test_key_covers_everything_that_changes_the_answer(field: str, other: Any) -> None:
    assert key(**{field: other}) != key()


def test_key_leaves_out_what_does_not_change_the_answer() -> None:
    streamed = chat(("user", "Why is the sky blue?"), stream=True, user="u-1")
    assert key(request=streamed) == key()
    assert key(request=BASE["request"].set(model="kimi")) == key()  # the targets say it


def test_key_ignores_what_cannot_change_meaning_but_not_case() -> None:
    composed = chat(("user", "Caf\u00e9  is\tnice\r\nreally"))
    decomposed = chat(("user", " \r\nCafe\u0301  is\tnice\nreally\n "))

    assert key(request=composed) == key(request=decomposed)
    assert key(request=chat(("user", "why is the sky blue?"))) != key()


@pytest.mark.parametrize(
    "other",
    [
        "def f():\n  return 1\n",  # indentation
        "def f():\n    return  1\n",  # inner spaces
        "def f():\n\treturn 1\n",  # a tab for spaces
        "def f(): return 1\n",  # a line break
        "def f():\n\n    return 1\n",  # a blank line
    ],
)
def test_key_keeps_code_verbatim(other: str) -> None:
    code = "def f():\n    return 1\n"

    assert key(request=chat(("user", code))) != key(request=chat(("user", other)))


def test_normalise_query_touches_only_unicode_form_line_endings_and_the_ends() -> None:
    assert normalise_query("  def f():\r\n    return 1\r\n ") == "def f():\n    return 1"
    assert normalise_query("a\rb") == "a\nb"  # a lone CR is an old Mac line ending


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_get_set_and_clear() -> None:
    cache = MemoryCache()
    assert await cache.get("a") is None

    await cache.set("a", b"one", ttl=60)
    assert await cache.get("a") == b"one"
    assert (len(cache), cache.size_bytes) == (1, 3)

    await cache.clear()
    assert await cache.get("a") is None
    assert (len(cache), cache.size_bytes) == (0, 0)


async def test_entries_expire_after_their_ttl() -> None:
    clock = Clock()
    cache = MemoryCache(clock=clock)
    await cache.set("short", b"x", ttl=10)
    await cache.set("long", b"y", ttl=100)

    clock.now += 9.9
    assert await cache.get("short") == b"x"
    clock.now += 0.1
    assert await cache.get("short") is None
    assert await cache.get("long") == b"y"
    assert len(cache) == 1  # the expired entry is gone, with its bytes
    assert cache.size_bytes == 1


async def test_zero_ttl_is_not_stored() -> None:
    cache = MemoryCache()
    await cache.set("a", b"x", ttl=0)
    assert len(cache) == 0


async def test_entry_bound_evicts_the_least_recently_used() -> None:
    cache = MemoryCache(max_entries=3)
    for name in "abc":
        await cache.set(name, name.encode(), ttl=60)
    assert await cache.get("a") == b"a"  # a is now the most recently used

    await cache.set("d", b"d", ttl=60)

    assert await cache.get("b") is None
    assert [await cache.get(n) for n in "acd"] == [b"a", b"c", b"d"]
    assert len(cache) == 3


async def test_byte_bound_evicts_until_it_fits() -> None:
    cache = MemoryCache(max_bytes=10)
    await cache.set("a", b"1234", ttl=60)
    await cache.set("b", b"5678", ttl=60)
    await cache.set("c", b"90ab", ttl=60)

    assert await cache.get("a") is None
    assert cache.size_bytes == 8
    assert len(cache) == 2


async def test_a_value_larger_than_the_whole_cache_is_not_stored() -> None:
    cache = MemoryCache(max_bytes=10)
    await cache.set("small", b"123", ttl=60)
    await cache.set("huge", b"x" * 11, ttl=60)

    assert await cache.get("huge") is None
    assert await cache.get("small") == b"123"  # nothing was evicted for it


async def test_overwriting_keeps_the_byte_count_right() -> None:
    cache = MemoryCache(max_bytes=100)
    await cache.set("a", b"x" * 50, ttl=60)
    await cache.set("a", b"y" * 10, ttl=60)

    assert cache.size_bytes == 10
    assert len(cache) == 1


def orchestrator(tmp_path: Path, config: str = "") -> AIOrchestrator:
    path = tmp_path / "aiorch.toml"
    path.write_text(config)
    settings = load_settings({}, config_path=path)
    return AIOrchestrator(settings, metrics=Metrics(CollectorRegistry()))


async def test_tenants_do_not_share_answers(tmp_path: Path) -> None:
    orch = orchestrator(tmp_path)
    first = await orch.process_query("Why?", "reasoning", tenant="team-a")
    same = await orch.process_query("Why?", "reasoning", tenant="team-a")
    other = await orch.process_query("Why?", "reasoning", tenant="team-b")
    await orch.close()

    assert (first.cached, same.cached, other.cached) == (False, True, False)


async def test_tenants_share_answers_when_configured(tmp_path: Path) -> None:
    orch = orchestrator(tmp_path, "[cache]\nper_key = false\n")
    await orch.process_query("Why?", "reasoning", tenant="team-a")
    other = await orch.process_query("Why?", "reasoning", tenant="team-b")
    await orch.close()

    assert other.cached is True


async def test_parameters_and_type_change_the_entry(tmp_path: Path) -> None:
    orch = orchestrator(tmp_path)
    await orch.process_query("Why?", "reasoning")
    hotter = await orch.process_query("Why?", "reasoning", temperature=0.1)
    shorter = await orch.process_query("Why?", "reasoning", max_tokens=10)
    as_code = await orch.process_query("Why?", "code")
    uncached = await orch.process_query("Why?", "reasoning", use_cache=False)
    await orch.close()

    assert not any(r.cached for r in (hotter, shorter, as_code, uncached))


async def test_cache_can_be_turned_off(tmp_path: Path) -> None:
    orch = orchestrator(tmp_path, "[cache]\nenabled = false\n")
    await orch.process_query("Why?", "reasoning")
    again = await orch.process_query("Why?", "reasoning")
    await orch.close()

    assert again.cached is False
