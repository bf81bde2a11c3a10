"""Deterministic answers: plausible words seeded by the prompt, or scripted by rules.

A token is a whitespace-separated word. Answers are kept as "pieces", one word each with the
whitespace that follows it, so that a stream sends one token per chunk and the joined text
splits back into exactly as many tokens as were counted.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from aiorch.mock.settings import Rule

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
_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
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


def count_tokens(text: str) -> int:
    return len(text.split())


def pieces(text: str) -> tuple[str, ...]:
    """Split text into one-word pieces; whitespace before the first word is kept with it."""
    found = re.findall(r"\s*\S+\s*", text)
    return tuple(found)


def _end(parts: list[str]) -> tuple[str, ...]:
    if parts:
        parts[-1] = parts[-1].rstrip()
    return tuple(parts)


def _sentences(
    rng: random.Random, vocabulary: tuple[str, ...], count: int, into: list[str]
) -> None:
    while count > 0:
        length = min(count, rng.randint(6, 14))
        words = rng.choices(vocabulary, k=length)
        words[0] = words[0].capitalize()
        words[-1] += "."
        into.extend(word + " " for word in words)
        count -= length


def _code_block(rng: random.Random) -> list[str]:
    name = "_".join(rng.sample(_WORDS[:60], 2))
    return [
        "```python\n",
        "def ",
        f"{name}(items):\n    ",
        "return ",
        "sorted(items)\n",
        "```\n\n",
    ]


def _seed(*parts: str) -> int:
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Generator:
    """Answers for prompts, with a bounded cache so repeated prompts cost a dict lookup."""

    def __init__(self, rules: tuple[Rule, ...] = ()) -> None:
        self._rules = [
            (re.compile(r.match), None if r.model is None else re.compile(r.model), r)
            for r in rules
        ]
        self._scripted = {
            id(r): (pieces(r.content), pieces(r.reasoning or "")) for _, _, r in self._rules
        }
        self._cache: dict[tuple[object, ...], tuple[tuple[str, ...], tuple[str, ...]]] = {}

    def answer(
        self,
        *,
        model: str,
        prompt: str,
        last_user: str,
        system: str,
        tokens: int,
        reasoning_tokens: int,
        thinking: bool,
        max_tokens: int | None,
    ) -> Answer:
        key = (model, prompt, tokens, reasoning_tokens if thinking else -1)
        found = self._cache.get(key)
        if found is None:
            found = self._make(model, prompt, last_user, system, tokens, reasoning_tokens, thinking)
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()  # cheap and bounded; load tests rarely reuse old prompts
            self._cache[key] = found
        reasoning, content = found
        if max_tokens is None or len(reasoning) + len(content) <= max_tokens:
            return Answer(reasoning, content, "stop")
        # Kimi-style: thinking and answer share the budget, thinking comes first.
        kept_reasoning = _end(list(reasoning[:max_tokens]))
        kept_content = _end(list(content[: max_tokens - len(kept_reasoning)]))
        return Answer(kept_reasoning, kept_content, "length")

    def _make(
        self,
        model: str,
        prompt: str,
        last_user: str,
        system: str,
        tokens: int,
        reasoning_tokens: int,
        thinking: bool,
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        for match, model_match, rule in self._rules:
            if model_match is not None and model_match.search(model) is None:
                continue
            if match.search(last_user) or match.search(system):
                content, reasoning = self._scripted[id(rule)]
                if thinking and not reasoning:
                    reasoning = self._words(_seed("r", model, prompt), reasoning_tokens, False)
                return (reasoning if thinking else ()), content
        seed = _seed(model, prompt)
        lowered = last_user.lower()
        code = any(hint in lowered for hint in _CODE_HINTS)
        content = self._words(seed, tokens, code)
        reasoning = self._words(seed ^ 0x5EED, reasoning_tokens, False, _REASONING_WORDS)
        return (reasoning if thinking else ()), content

    @staticmethod
    def _words(
        seed: int, count: int, code: bool, vocabulary: tuple[str, ...] = _WORDS
    ) -> tuple[str, ...]:
        rng = random.Random(seed)
        parts: list[str] = []
        block = _code_block(rng) if code and count >= 12 else []
        if block:
            _sentences(rng, vocabulary, min(8, count - len(block)), parts)
            parts[-1] = parts[-1].rstrip() + "\n\n"
            parts.extend(block)
        _sentences(rng, vocabulary, count - len(parts), parts)
        return _end(parts)
