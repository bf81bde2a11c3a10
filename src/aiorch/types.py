"""The value types shared by every layer: closed label sets, requests, answers, stream chunks.

Every enum here is a closed set of metric label values: user input is mapped onto these (or
rejected) before it reaches a metric, so no client can grow the series count.
"""

from __future__ import annotations

import enum
from typing import Literal

import msgspec


class QueryType(enum.StrEnum):
    CODE = "code"
    REASONING = "reasoning"
    REQUIREMENTS = "requirements"
    TESTING = "testing"
    GENERAL = "general"
    UNKNOWN = "unknown"


class Service(enum.StrEnum):
    """A model family the orchestrator routes to."""

    KIMI = "kimi"
    QWEN = "qwen"


class SelectedService(enum.StrEnum):
    """The `selected_service` label: one service, or both at once for unknown queries."""

    KIMI = "kimi"
    QWEN = "qwen"
    MULTI = "multi"


class AgentType(enum.StrEnum):
    DIRECT = "direct"
    BA = "ba"
    DEV = "dev"
    QA = "qa"


class BackendKind(enum.StrEnum):
    OPENAI = "openai"
    OLLAMA = "ollama"
    OFFLINE = "offline"


class Mode(enum.StrEnum):
    """The `mode` label of the per-model families: whether the model was asked to think."""

    THINKING = "thinking"
    INSTANT = "instant"


class Status(enum.StrEnum):
    SUCCESS = "success"
    ERROR = "error"


class TokenType(enum.StrEnum):
    PROMPT = "prompt"
    COMPLETION = "completion"
    # Reasoning tokens are a part of the completion tokens, counted again on their own.
    REASONING = "reasoning"


Role = Literal["system", "user", "assistant"]


class Message(msgspec.Struct, frozen=True):
    role: Role
    content: str


class Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )


class CompletionRequest(msgspec.Struct, frozen=True):
    """What a backend is asked: provider-neutral, already validated."""

    messages: tuple[Message, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    thinking: bool | None = None  # None: the backend's configured default
    request_id: str = ""


class Timings(msgspec.Struct, frozen=True):
    """Seconds. Ollama reports the last four itself; other backends leave them None."""

    total: float = 0.0
    first_token: float | None = None
    load: float | None = None
    prompt_eval: float | None = None
    eval: float | None = None


class Completion(msgspec.Struct, frozen=True):
    content: str
    model: str
    usage: Usage = Usage()
    reasoning_content: str | None = None
    finish_reason: str | None = "stop"
    timings: Timings = Timings()
    offline: bool = False


class StreamChunk(msgspec.Struct, frozen=True):
    """One increment of a streamed answer; the last chunk carries finish_reason and usage."""

    content: str = ""
    reasoning_content: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str = ""


class Attempt(msgspec.Struct, frozen=True):
    """One backend call made for a query, successful or not: the audit trail of a fallback."""

    service: Service
    model: str
    error_type: str | None = None
    message: str | None = None
    latency_ms: float = 0.0
    retry_after: float | None = None  # seconds the upstream (or an open breaker) asked to wait


class Fallback(msgspec.Struct, frozen=True):
    from_service: Service
    to_service: Service
    reason: str


class QueryResult(msgspec.Struct, frozen=True):
    """The answer to one `process_query` call: the body of `POST /api/ai/query`."""

    answer: str
    query_type: QueryType
    selected_service: SelectedService
    model: str
    cached: bool
    fallback: Fallback | None
    usage: Usage
    latency_ms: float
    request_id: str
    agent_type: AgentType = AgentType.DIRECT
    reasoning_content: str | None = None
    offline: bool = False
    attempts: tuple[Attempt, ...] = ()
    answers: dict[str, str] | None = None  # per service, for multi-service answers


class StreamStart(msgspec.Struct, frozen=True):
    """The first event of a streamed answer: who answers, before any text arrives."""

    query_type: QueryType
    selected_service: SelectedService
    model: str
    request_id: str
    cached: bool = False
    fallback: Fallback | None = None
    offline: bool = False
