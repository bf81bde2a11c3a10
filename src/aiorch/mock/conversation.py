"""A chat request in neither dialect: the turns, what the answer must look like, and refusals.

Each dialect module decodes its own wire format into `Turn`s and a `Spec`; everything after that
(checks against the model's capabilities, the answer, its tool calls) works on these types only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class CallIn:
    """A tool call an earlier assistant turn made (as the client sends it back)."""

    id: str
    name: str
    arguments: str  # JSON text


@dataclass(slots=True)
class Turn:
    role: str
    text: str
    calls: tuple[CallIn, ...] = ()
    call_id: str | None = None  # a tool result: the call it answers (OpenAI)
    name: str | None = None  # a tool result: the tool's name (Ollama's tool_name, OpenAI's name)
    reasoning: str | None = None  # an assistant turn's reasoning_content / thinking
    images: int = 0
    partial: bool = False  # Moonshot's partial mode flag


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: Any  # a JSON schema (usually an object schema)


@dataclass(slots=True)
class Spec:
    """What the request asks of the answer, beyond the conversation."""

    tools: tuple[Tool, ...] = ()
    tool_choice: str = "auto"  # "auto", "none", "required", or "function" (see forced_tool)
    forced_tool: str | None = None
    parallel_tool_calls: bool = True
    schema: Any = None  # a JSON schema the answer must satisfy
    json_mode: bool = False  # any JSON object (OpenAI json_object, Ollama "json")
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    max_tokens: int | None = None
    thinking: bool = False
    tool_calls_wanted: int = 0  # from the `tool_calls` knob; 0: as the prompt says


class Refusal(Exception):
    """The upstream answers 4xx. `message` is OpenAI/Moonshot's wording; Ollama's, when it has
    its own, is `ollama`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        ollama: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.param = param
        self.code = code
        self.ollama = ollama or message

    def openai_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.error_type}
        if self.param is not None or self.code is not None:
            error["param"] = self.param
            error["code"] = self.code
        return {"error": error}


def check_tool_pairing(turns: list[Turn]) -> None:
    """OpenAI's rules: every tool message answers a call of the assistant turn just before the
    run of tool messages it belongs to, and every such call gets an answer."""
    open_calls: dict[str, int] = {}  # call id -> index of the assistant turn that made it
    for index, turn in enumerate(turns):
        if turn.role == "tool":
            if turn.call_id is None or turn.call_id not in open_calls:
                raise Refusal(
                    400,
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    param=f"messages.[{index}].role",
                )
            del open_calls[turn.call_id]
            continue
        if open_calls:
            raise _unanswered(open_calls)
        if turn.role == "assistant" and turn.calls:
            open_calls = {call.id: index for call in turn.calls}
    if open_calls:
        raise _unanswered(open_calls)


def _unanswered(open_calls: dict[str, int]) -> Refusal:
    index = next(iter(open_calls.values()))
    return Refusal(
        400,
        "An assistant message with 'tool_calls' must be followed by tool messages responding "
        "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
        + ", ".join(open_calls),
        param=f"messages.[{index}].role",
    )


def check_reasoning_kept(turns: list[Turn]) -> None:
    """Kimi with thinking on: each assistant tool-call turn must keep its reasoning_content."""
    for index, turn in enumerate(turns):
        if turn.role == "assistant" and turn.calls and not turn.reasoning:
            raise Refusal(
                400,
                "thinking is enabled but reasoning_content is missing in assistant tool call "
                f"message at index {index}",
            )


def trailing_prefill(turns: list[Turn], *, partial_flag: bool) -> str | None:
    """The text of a trailing assistant prefill, or None. With `partial_flag` (Moonshot's
    partial mode) only a trailing assistant turn marked `partial` counts."""
    if len(turns) < 2:
        return None
    last = turns[-1]
    if last.role != "assistant" or last.calls:
        return None
    if partial_flag and not last.partial:
        return None
    return last.text


def key_text(turns: list[Turn]) -> str:
    """The conversation as one string: what answers are a function of."""
    parts: list[str] = []
    for turn in turns:
        parts.append(f"{turn.role}: {turn.text}")
        for call in turn.calls:
            parts.append(f"call {call.name} {call.arguments}")
        if turn.role == "tool" and turn.name:
            parts.append(f"tool {turn.name}")
    return "\n".join(parts)


IMAGE_TOKENS = 768  # what one image costs in the context, as Ollama counts a CLIP image


def prompt_tokens(turns: list[Turn]) -> int:
    total = 0
    for turn in turns:
        total += len(turn.text.split()) + IMAGE_TOKENS * turn.images
        for call in turn.calls:
            total += 1 + len(call.arguments.split())
    return total
