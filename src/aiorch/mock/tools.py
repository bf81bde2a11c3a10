"""Deterministic tool calls, and answers that use tool results.

When a request offers tools and `tool_choice` is not "none", the model calls tools unless the
conversation already ends with tool results (then it answers in text that uses them; a forced
`tool_choice` calls again, as real models do). Which tools: a function named by `tool_choice`
(exactly one call); else the tools whose names appear in the last user message, in order, or the
first tool if none is named. Several are called at once when the prompt names several (or the
`tool_calls` knob asks for N) and `parallel_tool_calls` is not false. Arguments are made up to
fit each tool's JSON schema (see `schema`), from the conversation's digest.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from aiorch.mock.conversation import Refusal, Spec, Tool, Turn
from aiorch.mock.schema import SchemaError, instance
from aiorch.mock.words import Filler, subject_words


@dataclass(frozen=True, slots=True)
class Call:
    """A tool call the mock makes."""

    id: str
    name: str
    arguments: str  # JSON text, `json.dumps` style (so it splits into whitespace tokens)
    index: int

    @property
    def tokens(self) -> int:
        return 1 + len(self.arguments.split())


def check_tools(spec: Spec) -> None:
    """OpenAI's request-level checks on tools and tool_choice."""
    names = [tool.name for tool in spec.tools]
    if spec.forced_tool is not None and spec.forced_tool not in names:
        raise Refusal(
            400,
            f"Invalid value for 'tool_choice': function '{spec.forced_tool}' is not in 'tools'.",
            param="tool_choice",
        )
    if spec.tool_choice in ("required", "function") and not spec.tools:
        raise Refusal(
            400,
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            param="tool_choice",
        )


def ends_with_results(turns: list[Turn]) -> bool:
    return bool(turns) and turns[-1].role == "tool"


def wants_calls(spec: Spec, turns: list[Turn]) -> bool:
    if not spec.tools or spec.tool_choice == "none":
        return False
    if spec.tool_choice in ("required", "function"):
        return True
    return not ends_with_results(turns)


def plan_calls(
    spec: Spec, last_user: str, digest: bytes, id_style: str, earlier_calls: int
) -> tuple[Call, ...]:
    """The calls this turn makes. `id_style` is "kimi" (`functions.NAME:N`, N counting every
    call in the conversation, as Kimi numbers them), "ollama" or "openai"."""
    tools = {tool.name: tool for tool in spec.tools}
    if spec.forced_tool is not None:
        chosen = [tools[spec.forced_tool]]
    else:
        lowered = last_user.lower()
        named = sorted(
            (pos, tool.name)
            for tool in spec.tools
            for pos in [_mention(lowered, tool.name)]
            if pos >= 0
        )
        chosen = [tools[name] for _, name in named] or [spec.tools[0]]
        if spec.tool_calls_wanted:
            pool = chosen + [t for t in spec.tools if t not in chosen]
            chosen = [pool[i % len(pool)] for i in range(spec.tool_calls_wanted)]
        if not spec.parallel_tool_calls:
            chosen = chosen[:1]
    subject = subject_words(last_user)
    calls = []
    for index, tool in enumerate(chosen):
        seed = hashlib.blake2b(digest + f"\x1f{tool.name}\x1f{index}".encode(), digest_size=16)
        arguments = _arguments(tool, Filler(seed.digest(), subject))
        calls.append(
            Call(
                _call_id(id_style, tool.name, earlier_calls + index, seed.hexdigest()),
                tool.name,
                arguments,
                index,
            )
        )
    return tuple(calls)


def _mention(text: str, name: str) -> int:
    """Where a tool's name (or its words: get_weather -> "get weather") appears, or -1."""
    pos = text.find(name.lower())
    if pos < 0:
        spaced = re.sub(r"[_\-.]+", " ", name.lower()).strip()
        pos = text.find(spaced) if spaced else -1
    return pos


def _arguments(tool: Tool, filler: Filler) -> str:
    parameters = tool.parameters if tool.parameters is not None else {"type": "object"}
    try:
        value = instance(parameters, filler)
    except SchemaError as error:
        raise Refusal(
            400,
            f"Invalid schema for function '{tool.name}': {error}",
            param="tools",
            ollama=f"invalid tool schema for {tool.name}: {error}",
        ) from None
    return json.dumps(value, ensure_ascii=False)


def _call_id(style: str, name: str, number: int, digest: str) -> str:
    if style == "kimi":
        return f"functions.{name}:{number}"
    if style == "ollama":
        return "call_" + digest[:8]
    return "call_" + digest[:24]


def count_calls(turns: list[Turn]) -> int:
    return sum(len(turn.calls) for turn in turns)


def results_text(turns: list[Turn], filler: Filler) -> str:
    """An answer that uses the tool results at the end of the conversation."""
    results: list[Turn] = []
    for turn in reversed(turns):
        if turn.role != "tool":
            break
        results.append(turn)
    results.reverse()
    names = _names_by_id(turns)
    parts = []
    for turn in results:
        name = turn.name or names.get(turn.call_id or "", "the tool")
        excerpt = " ".join(turn.text.split()[:40]) or "nothing"
        parts.append(f"{name} returned {excerpt}.")
    return " ".join(parts) + " " + filler.sentence(10)


def _names_by_id(turns: list[Turn]) -> dict[str, str]:
    return {call.id: call.name for turn in turns for call in turn.calls}
