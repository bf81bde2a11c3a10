"""Deterministic answers: plausible words seeded by the prompt, or scripted by rules.

A token is a whitespace-separated word. Answers are kept as "pieces", one word each with the
whitespace that follows it, so that a stream sends one token per chunk and the joined text
splits back into exactly as many tokens as were counted.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from aiorch.mock.settings import Rule
from aiorch.mock.shapes import shaped

# fmt: off
_WORDS = (
    "the", "service", "request", "model", "latency", "token", "cache", "route", "answer", "query",
    "system", "user", "data", "stream", "value", "result", "config", "state", "error", "retry",
    "limit", "budget", "queue", "worker", "backend", "client", "response", "metric", "trace",
    "span", "timeout", "fallback", "thread", "buffer", "record", "schema", "field", "index",
    "handles", "returns", "keeps", "sends", "reads", "writes", "checks", "builds", "splits",
    "merges", "caches", "routes", "quickly", "safely", "often", "only", "first", "then", "each",
    "every", "both", "either", "simple", "small", "large", "stable", "fast", "slow", "early",
    "late", "clear", "careful", "precise", "a", "an", "this", "that", "it", "we", "you", "with",
    "for", "from", "into", "over", "under", "after", "before", "when", "while", "because", "so",
    "and", "or", "but", "not", "also",
)
_REASONING_WORDS = (
    "the", "user", "asks", "about", "this", "so", "first", "I", "should", "check", "what", "they",
    "need", "then", "consider", "the", "constraints", "and", "edge", "cases", "maybe", "the",
    "simplest", "approach", "works", "let", "me", "verify", "each", "step", "carefully",
    "because", "a", "wrong", "assumption", "here", "would", "change", "the", "answer", "okay",
    "that", "seems", "right",
)
_CODE_HINTS = (
    "code", "function", "def ", "class ", "```", "python", "implement", "script", "bug",
    "refactor", "compile", "код", "функци", "реализ",
)
# fmt: on
_CACHE_ENTRIES = 4096
_CACHE_MAX_TOKENS = 4096  # longer answers are regenerated: cheap next to sending them


@dataclass(slots=True)
class Answer:
    reasoning: tuple[str, ...]  # pieces
    content: tuple[str, ...]
    finish_reason: str  # "stop" or "length"

    @property
    def completion_tokens(self) -> int:
        return len(self.reasoning) + len(self.content)

    @property
    def reasoning_text(self) -> str:
        return "".join(self.reasoning)

    @property
    def content_text(self) -> str:
        return "".join(self.content)


def pieces(text: str) -> tuple[str, ...]:
    """Split text into one-word pieces; whitespace before the first word is kept with it."""
    found = re.findall(r"\s*\S+\s*", text)
    return tuple(found)


def _end(parts: list[str]) -> tuple[str, ...]:
    if parts:
        parts[-1] = parts[-1].rstrip()
    return tuple(parts)


def _sentences(stream: bytes, vocabulary: tuple[str, ...], count: int) -> list[str]:
    """`count` words as sentences of 6 to 14, drawn from `stream` (one byte per word, then one
    per sentence length): a hash's bytes are far cheaper than seeding a `random.Random`."""
    size = len(vocabulary)
    parts = [vocabulary[b % size] + " " for b in stream[:count]]
    start, cursor = 0, count
    while start < count:
        end = min(start + 6 + stream[cursor] % 9, count) - 1
        cursor += 1
        parts[start] = parts[start].capitalize()
        parts[end] = parts[end][:-1] + ". "
        start = end + 1
    return parts


def _code_block(stream: bytes) -> list[str]:
    name = f"{_WORDS[stream[0] % 60]}_{_WORDS[stream[1] % 60]}"
    return [
        "```python\n",
        "def ",
        f"{name}(items):\n    ",
        "return ",
        "sorted(items)\n",
        "```\n\n",
    ]


def _words(key: bytes, count: int, code: bool, vocabulary: tuple[str, ...]) -> tuple[str, ...]:
    stream = hashlib.shake_128(key).digest(2 * count + 8)
    if not (code and count >= 12):
        return _end(_sentences(stream, vocabulary, count))
    block = _code_block(stream[-2:])
    lead = min(8, count - len(block))
    parts = _sentences(stream, vocabulary, lead)
    parts[-1] = parts[-1].rstrip() + "\n\n"
    parts += block
    parts += _sentences(stream[lead:], vocabulary, count - len(parts))
    return _end(parts)


@dataclass(frozen=True, slots=True)
class _Script:
    match: re.Pattern[str]
    model: re.Pattern[str] | None
    content: tuple[str, ...]
    reasoning: tuple[str, ...]


def budget(reasoning: tuple[str, ...], content: tuple[str, ...], max_tokens: int | None) -> Answer:
    """Kimi-style: thinking and answer share the budget, thinking comes first."""
    if max_tokens is None or len(reasoning) + len(content) <= max_tokens:
        return Answer(reasoning, content, "stop")
    kept_reasoning = _end(list(reasoning[:max_tokens]))
    kept_content = _end(list(content[: max_tokens - len(kept_reasoning)]))
    return Answer(kept_reasoning, kept_content, "length")


def reasoning_words(digest: bytes, count: int) -> tuple[str, ...]:
    return _words(b"r" + digest, count, False, _REASONING_WORDS)


def plain_words(digest: bytes, count: int) -> tuple[str, ...]:
    return _words(digest, count, False, _WORDS)


Parts = tuple[tuple[str, ...], tuple[str, ...]]  # (reasoning pieces, content pieces)


class Generator:
    """Answers for prompts, with a bounded cache so repeated prompts cost a dict lookup."""

    def __init__(self, rules: tuple[Rule, ...] = ()) -> None:
        self._scripts = [
            _Script(
                re.compile(r.match),
                None if r.model is None else re.compile(r.model),
                pieces(r.content),
                pieces(r.reasoning or ""),
            )
            for r in rules
        ]
        self._cache: dict[tuple[bytes, str, int, int], Parts] = {}

    def parts(
        self,
        *,
        digest: bytes,
        model: str,
        last_user: str,
        system: str,
        tokens: int,
        reasoning_tokens: int,
        thinking: bool,
    ) -> Parts:
        """The whole answer (before any budget): a scripted rule's, an agent-shaped one (see
        `shapes`), or plausible words; keyed by `digest`, a hash of the conversation."""
        # The model is in the key only for the rules that name one.
        key = (digest, model if self._scripts else "", tokens, reasoning_tokens if thinking else -1)
        found = self._cache.get(key)
        if found is None:
            found = self._make(digest, model, last_user, system, tokens, reasoning_tokens, thinking)
            if len(self._cache) >= _CACHE_ENTRIES:
                self._cache.clear()  # cheap and bounded; load tests rarely reuse old prompts
            if len(found[0]) + len(found[1]) <= _CACHE_MAX_TOKENS:
                self._cache[key] = found
        return found

    def script(self, model: str, last_user: str, system: str) -> _Script | None:
        for script in self._scripts:
            if script.model is not None and script.model.search(model) is None:
                continue
            if script.match.search(last_user) or script.match.search(system):
                return script
        return None

    def _make(
        self,
        digest: bytes,
        model: str,
        last_user: str,
        system: str,
        tokens: int,
        reasoning_tokens: int,
        thinking: bool,
    ) -> Parts:
        reasoning: tuple[str, ...] = ()
        script = self.script(model, last_user, system)
        if script is not None:
            if thinking:
                reasoning = script.reasoning or reasoning_words(digest, reasoning_tokens)
            return reasoning, script.content
        if thinking:
            reasoning = reasoning_words(digest, reasoning_tokens)
        text = shaped(last_user, system, digest)
        if text is not None:
            return reasoning, pieces(text)
        lowered = last_user.lower()
        code = any(hint in lowered for hint in _CODE_HINTS)
        return reasoning, _words(digest, tokens, code, _WORDS)
