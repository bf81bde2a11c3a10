"""The model's rules, applied before it answers: what the real providers refuse with a 400.

Each check raises a `Refusal` worded as the provider words it (Moonshot/OpenAI, and Ollama where
it differs), or, for Ollama's context, cuts the conversation as Ollama does.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiorch.mock.capabilities import ModelCaps
from aiorch.mock.conversation import (
    Refusal,
    Spec,
    Turn,
    check_reasoning_kept,
    check_tool_pairing,
    prompt_tokens,
)
from aiorch.mock.tools import check_tools


def _ollama_name(model: str) -> str:
    return f"registry.ollama.ai/library/{model}"


def thinking(caps: ModelCaps, model: str, asked: bool | None) -> bool:
    """Whether this request thinks: the request's switch, else the model's default."""
    if asked is None:
        return caps.thinks_by_default
    if asked and not caps.thinking:
        raise Refusal(
            400,
            f"thinking is not supported by model {model}",
            param="thinking",
            ollama=f'"{model}" does not support thinking',
        )
    return asked


def fixed_parameters(caps: ModelCaps, sent: Mapping[str, float | None], think: bool) -> None:
    """Kimi K2.6 and K3 accept only their own temperature, top_p, n and penalties."""
    fixed = {**caps.fixed, **(caps.fixed_without_thinking if not think else {})}
    for name, value in sent.items():
        if value is None or name not in fixed:
            continue
        if abs(float(value) - fixed[name]) > 1e-9:
            raise Refusal(
                400, f"invalid {name}: only {fixed[name]:g} is allowed for this model", param=name
            )


def max_tokens(caps: ModelCaps, max_tokens: int | None, max_completion: int | None) -> int | None:
    """The output budget this model honours."""
    if max_tokens is not None and caps.max_tokens == "refused":
        raise Refusal(
            400,
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            param="max_tokens",
            code="unsupported_parameter",
        )
    if caps.max_tokens == "ignored":
        return max_completion
    return max_completion if max_completion is not None else max_tokens


def request(
    caps: ModelCaps, model: str, turns: list[Turn], spec: Spec, *, openai: bool, used: int
) -> None:
    """Tools, images, logprobs and tool-call history; context length (OpenAI dialect).
    `used` is the prompt's length in tokens."""
    if spec.tools and not caps.tools:
        raise Refusal(
            400,
            f"tools are not supported by model {model}",
            param="tools",
            ollama=f"{_ollama_name(model)} does not support tools",
        )
    if spec.tools or spec.forced_tool is not None or spec.tool_choice != "auto":
        check_tools(spec)
    tool_history = False
    for index, turn in enumerate(turns):
        if turn.images and not caps.vision:
            raise Refusal(
                400,
                "Invalid content type. image_url is only supported by certain models.",
                param=f"messages.[{index}].content",
                ollama=f"{_ollama_name(model)} does not support vision",
            )
        if turn.calls or turn.role == "tool":
            tool_history = True
    if spec.logprobs and not caps.logprobs:
        raise Refusal(400, f"logprobs are not supported by model {model}", param="logprobs")
    if not openai:
        return
    if tool_history:
        check_tool_pairing(turns)
    if spec.thinking and caps.reasoning_in_tool_history:
        check_reasoning_kept(turns)
    if spec.json_mode and not any("json" in t.text.lower() for t in turns):
        raise Refusal(
            400,
            "'messages' must contain the word 'json' in some form, to use 'response_format' "
            "of type 'json_object'.",
            param="messages",
        )
    context(caps, used, spec.max_tokens)


def context(caps: ModelCaps, used: int, max_tokens: int | None) -> None:
    window = caps.context_window
    if used > window:
        raise context_refusal(window, f"your messages resulted in {used} tokens")
    if max_tokens is not None and used + max_tokens > window:
        raise context_refusal(
            window,
            f"you requested {used + max_tokens} tokens ({used} in the messages, "
            f"{max_tokens} in the completion)",
        )


def context_refusal(window: int, detail: str) -> Refusal:
    return Refusal(
        400,
        f"This model's maximum context length is {window} tokens. However, {detail}. "
        "Please reduce the length of the messages or completion.",
        param="messages",
        code="context_length_exceeded",
        ollama="the input length exceeds the context length",
    )


def prefill(caps: ModelCaps, model: str) -> None:
    if caps.prefill == "none":
        raise prefill_refusal(model)


def prefill_refusal(model: str) -> Refusal:
    return Refusal(
        400,
        f"model {model} does not support continuing an assistant message (partial mode)",
        param="messages",
        code="prefill_unsupported",
        ollama=f'"{model}" does not support continuing an assistant message',
    )


def ollama_window(
    caps: ModelCaps,
    turns: list[Turn],
    used: int,
    num_ctx: int | None,
    default_ctx: int,
    truncate: bool,
) -> tuple[list[Turn], int]:
    """Ollama's context: `options.num_ctx` (else the server default), at most the model's.
    A prompt that does not fit loses its oldest messages (system messages and the last one are
    kept), silently, as Ollama does; with `truncate: false` it is a 400. Returns the turns kept
    and how many tokens were dropped."""
    window = min(num_ctx or default_ctx, caps.context_window)
    if used <= window:
        return turns, 0
    if not truncate:
        raise context_refusal(window, f"your messages resulted in {used} tokens")
    for start in range(1, len(turns)):
        kept = [t for t in turns[:start] if t.role == "system"] + turns[start:]
        if prompt_tokens(kept) <= window:
            return kept, used - prompt_tokens(kept)
    kept = [t for t in turns[:-1] if t.role == "system"] + turns[-1:]
    return kept, used - prompt_tokens(kept)
