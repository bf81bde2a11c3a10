"""One request's answer, as choices both dialects render: text, thinking, tool calls, and how
each ended.

The order of precedence for the text: a scripted rule, then structured output (a JSON value for
the requested schema), then an answer that uses tool results at the end of the conversation, then
an agent-shaped answer, then plausible words. Tool calls replace the text when the request offers
tools (see `tools`). A trailing assistant prefill is continued: the text is that of the
conversation without the prefill, less the prefill (see `continue_after`). Stop sequences and
the token budget apply last.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from aiorch.mock.conversation import Refusal, Spec, Turn
from aiorch.mock.schema import SchemaError, instance
from aiorch.mock.shapes import fill, find_template
from aiorch.mock.text import Answer, Generator, budget, pieces, reasoning_words
from aiorch.mock.tools import (
    Call,
    count_calls,
    ends_with_results,
    plan_calls,
    results_text,
    wants_calls,
)
from aiorch.mock.words import Filler, story_ids, subject_words


@dataclass(slots=True)  # not frozen: a frozen dataclass costs microseconds to build
class Choice:
    index: int
    reasoning: tuple[str, ...]
    content: tuple[str, ...]
    calls: tuple[Call, ...]
    finish_reason: str  # "stop", "length" or "tool_calls"
    completion_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        calls = sum(c.tokens for c in self.calls) if self.calls else 0
        self.completion_tokens = len(self.reasoning) + len(self.content) + calls

    @property
    def content_text(self) -> str:
        return "".join(self.content)

    @property
    def reasoning_text(self) -> str:
        return "".join(self.reasoning)


@dataclass(slots=True)
class Question:
    """Everything an answer is a function of."""

    digest: bytes  # of the conversation without the prefill (and the model, if asked)
    model: str
    turns: list[Turn]
    last_user: str
    system: str
    spec: Spec
    prefill: str | None
    tokens: int
    reasoning_tokens: int
    id_style: str  # tool call ids: "kimi", "ollama" or "openai"


def choice_digest(digest: bytes, index: int) -> bytes:
    if index == 0:
        return digest
    return hashlib.blake2b(digest + index.to_bytes(2, "big"), digest_size=16).digest()


def compose(question: Question, generator: Generator) -> tuple[Choice, ...]:
    if question.spec.n == 1:
        return (_one(question, generator, 0),)
    return tuple(_one(question, generator, i) for i in range(question.spec.n))


def _one(q: Question, generator: Generator, index: int) -> Choice:
    spec = q.spec
    digest = choice_digest(q.digest, index)
    if q.prefill is None and wants_calls(spec, q.turns):
        reasoning = reasoning_words(digest, q.reasoning_tokens) if spec.thinking else ()
        calls = plan_calls(spec, q.last_user, digest, q.id_style, count_calls(q.turns))
        kept = budget(reasoning, (), spec.max_tokens)
        if kept.finish_reason == "length":  # thinking used the whole budget: no call was made
            return Choice(index, kept.reasoning, (), (), "length")
        return Choice(index, reasoning, (), calls, "tool_calls")
    reasoning, content = _text(q, generator, digest)
    if q.prefill is not None:
        content = continue_after(content, q.prefill)
        reasoning = ()  # a continuation goes straight on with the answer
    if spec.stop:
        content = _stop(content, spec.stop)
    answer: Answer = budget(reasoning, content, spec.max_tokens)
    return Choice(index, answer.reasoning, answer.content, (), answer.finish_reason)


def _text(
    q: Question, generator: Generator, digest: bytes
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    spec = q.spec
    special = spec.schema is not None or spec.json_mode or ends_with_results(q.turns)
    if not special or generator.script(q.model, q.last_user, q.system) is not None:
        return generator.parts(
            digest=digest,
            model=q.model,
            last_user=q.last_user,
            system=q.system,
            tokens=q.tokens,
            reasoning_tokens=q.reasoning_tokens,
            thinking=spec.thinking,
        )
    reasoning = reasoning_words(digest, q.reasoning_tokens) if spec.thinking else ()
    context = q.last_user or _last_text(q.turns)
    filler = Filler(digest, subject_words(context), story_ids(context))
    if spec.schema is not None or spec.json_mode:
        return reasoning, pieces(structured(spec, q.last_user, q.system, filler))
    return reasoning, pieces(results_text(q.turns, filler))


def _last_text(turns: list[Turn]) -> str:
    return next((t.text for t in reversed(turns) if t.text), "")


def structured(spec: Spec, last_user: str, system: str, filler: Filler) -> str:
    """JSON text valid for the requested schema; in JSON mode, of the shape the prompt shows
    (as for agent prompts), else an object with an `answer`."""
    if spec.schema is not None:
        try:
            value = instance(spec.schema, filler)
        except SchemaError as error:
            raise Refusal(
                400,
                f"Invalid schema for response_format: {error}",
                param="response_format",
                ollama=f"invalid JSON schema in format: {error}",
            ) from None
        return json.dumps(value, ensure_ascii=False)
    for text in (last_user, system):
        found = find_template(text) if text else None
        if found is not None:
            return json.dumps(fill(found[0], filler), ensure_ascii=False)
    return json.dumps({"answer": filler.sentence(12)}, ensure_ascii=False)


def continue_after(content: tuple[str, ...], prefix: str) -> tuple[str, ...]:
    """The rest of `content` after `prefix`. When the prefix is the beginning of the text (to
    the character), the rest is exactly what follows it, so prefix + rest == the whole text;
    otherwise the answer goes on after as many words as the prefix has."""
    text = "".join(content)
    if text.startswith(prefix):
        rest = text[len(prefix) :]
    else:
        rest = "".join(content[len(prefix.split()) :])
        if rest and prefix and not prefix[-1].isspace():
            rest = " " + rest
    return pieces(rest)


def _stop(content: tuple[str, ...], stop: tuple[str, ...]) -> tuple[str, ...]:
    text = "".join(content)
    cut = min((p for p in (text.find(s) for s in stop if s) if p >= 0), default=-1)
    return content if cut < 0 else pieces(text[:cut])
