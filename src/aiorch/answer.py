"""An answer's facts in two shapes: as events while it is generated, and whole once it is done.

Backends yield `Delta`s (increments of one choice: text, reasoning, tool calls, logprobs, the
finish reason) and then one `End` (usage, the model that answered). A `Collector` folds deltas
into whole `Choice`s; `deltas()` unfolds whole choices into deltas again (a cache replay, a plain
upstream answer). The pipeline's plain ending is its streamed ending collected, so both carry the
same facts: the real finish reason, every tool call, usage once.
"""

from __future__ import annotations

from typing import Any

import msgspec

from aiorch.request import FunctionCall, ToolCall
from aiorch.types import Attempt, Fallback, QueryType, Usage


class ToolCallDelta(msgspec.Struct, frozen=True, omit_defaults=True):
    """A piece of one tool call: its id and name come first, its arguments in pieces."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    type: str | None = None


class Delta(msgspec.Struct, frozen=True, omit_defaults=True):
    """One increment of one choice (`index`); the last for a choice has its finish reason."""

    index: int = 0
    content: str = ""
    reasoning: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    refusal: str = ""
    logprobs: tuple[Any, ...] = ()  # entries of `logprobs.content`, as the upstream sent them
    finish_reason: str | None = None

    @property
    def has_output(self) -> bool:
        """Whether it carries anything a client would see (not just a finish reason)."""
        return bool(self.content or self.reasoning or self.tool_calls or self.refusal)


class Timings(msgspec.Struct, frozen=True):
    """Seconds, as Ollama reports them on its last event: a cold start shows as `load`."""

    total: float | None = None
    load: float | None = None
    prompt_eval: float | None = None
    eval: float | None = None


class End(msgspec.Struct, frozen=True):
    """The upstream finished: what it counted, and which model it says answered."""

    usage: Usage
    model: str = ""
    timings: Timings | None = None


class Skipped(msgspec.Struct, frozen=True):
    """A malformed upstream event that was skipped: counted by the service, never passed on."""


SKIPPED = Skipped()
Event = Delta | End | Skipped  # what a backend yields


class Choice(msgspec.Struct, frozen=True, omit_defaults=True):
    index: int
    content: str
    finish_reason: str | None
    reasoning: str | None = None
    tool_calls: tuple[ToolCall, ...] | None = None
    refusal: str | None = None
    logprobs: tuple[Any, ...] | None = None


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """A whole answer with every fact about how it came to be; what the cache stores."""

    choices: tuple[Choice, ...]
    usage: Usage
    model: str  # the model that answered (the last one, after a continuation)
    service: str
    selected: str  # the `selected_service` label: the service that answered, or "multi"
    query_type: QueryType
    request_id: str = ""
    latency_ms: float = 0.0
    cached: bool = False
    offline: bool = False
    fallback: Fallback | None = None
    attempts: tuple[Attempt, ...] = ()
    adjustments: tuple[str, ...] = ()
    answers: dict[str, str] | None = None  # per service, for merged multi-service answers
    routing: str | None = None
    labels: tuple[str, ...] = ()  # the `model` metric label of each model that answered

    @property
    def text(self) -> str:
        return self.choices[0].content if self.choices else ""

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason if self.choices else None

    @property
    def complete(self) -> bool:
        """Every choice ended as the model meant it to (worth caching)."""
        return all(c.finish_reason in ("stop", "length", "tool_calls") for c in self.choices)


class _Building:
    __slots__ = ("content", "finish_reason", "logprobs", "reasoning", "refusal", "tools")

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.refusal: list[str] = []
        self.logprobs: list[Any] = []
        self.tools: dict[int, list[Any]] = {}  # index -> [id, name, type, argument pieces]
        self.finish_reason: str | None = None


class Collector:
    """Deltas in, whole choices out."""

    def __init__(self) -> None:
        self._choices: dict[int, _Building] = {}

    def add(self, delta: Delta) -> None:
        building = self._choices.get(delta.index)
        if building is None:
            building = self._choices[delta.index] = _Building()
        if delta.content:
            building.content.append(delta.content)
        if delta.reasoning:
            building.reasoning.append(delta.reasoning)
        if delta.refusal:
            building.refusal.append(delta.refusal)
        if delta.logprobs:
            building.logprobs.extend(delta.logprobs)
        for piece in delta.tool_calls:
            call = building.tools.get(piece.index)
            if call is None:
                call = building.tools[piece.index] = [None, None, None, []]
            call[0] = call[0] or piece.id
            call[1] = call[1] or piece.name
            call[2] = call[2] or piece.type
            call[3].append(piece.arguments)
        if delta.finish_reason is not None:
            building.finish_reason = delta.finish_reason

    @property
    def text(self) -> str:
        """The first choice's text so far: what a continuation starts from."""
        building = self._choices.get(0)
        return "".join(building.content) if building else ""

    @property
    def has_output(self) -> bool:
        return any(b.content or b.reasoning or b.tools or b.refusal for b in self._choices.values())

    def choices(self) -> tuple[Choice, ...]:
        if not self._choices:
            return (Choice(0, "", None),)
        return tuple(_choice(i, self._choices[i]) for i in sorted(self._choices))


def _choice(index: int, b: _Building) -> Choice:
    calls = tuple(
        ToolCall(
            id=call[0] or f"call_{index}_{i}",
            type=call[2] or "function",
            function=FunctionCall(call[1] or "", "".join(call[3])),
        )
        for i, call in sorted(b.tools.items())
    )
    return Choice(
        index=index,
        content="".join(b.content),
        finish_reason=b.finish_reason,
        reasoning="".join(b.reasoning) or None,
        tool_calls=calls or None,
        refusal="".join(b.refusal) or None,
        logprobs=tuple(b.logprobs) if b.logprobs else None,
    )


def deltas(choices: tuple[Choice, ...]) -> list[Delta]:
    """Whole choices as one delta each, the finish reason included."""
    return [
        Delta(
            index=c.index,
            content=c.content,
            reasoning=c.reasoning or "",
            tool_calls=tuple(
                ToolCallDelta(i, t.id, t.function.name, t.function.arguments, t.type)
                for i, t in enumerate(c.tool_calls or ())
            ),
            refusal=c.refusal or "",
            logprobs=c.logprobs or (),
            finish_reason=c.finish_reason,
        )
        for c in choices
    ]
