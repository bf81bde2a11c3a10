"""The one protocol every backend implements, and what a readiness probe reports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import msgspec

from aiorch.config import BackendSettings
from aiorch.types import Completion, CompletionRequest, StreamChunk


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    service: str
    kind: str
    model: str
    url: str | None
    ready: bool
    detail: str
    model_loaded: bool | None = None  # Ollama only: False means the next call pays a cold start

    @classmethod
    def of(
        cls,
        settings: BackendSettings,
        *,
        ready: bool,
        detail: str,
        model_loaded: bool | None = None,
    ) -> Readiness:
        return cls(
            service=settings.service.value,
            kind=settings.kind.value,
            model=settings.model_id,
            url=settings.url,
            ready=ready,
            detail=detail,
            model_loaded=model_loaded,
        )


class Backend(Protocol):
    """A model behind some transport. The orchestrator depends on this, never on a class."""

    settings: BackendSettings

    async def complete(self, request: CompletionRequest) -> Completion:
        """The whole answer. Raises a `BackendError` subclass on any failure."""
        ...

    def stream(self, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        """The answer as it is generated; the last chunk has `finish_reason` and `usage`."""
        ...

    async def probe(self) -> Readiness:
        """A cheap check that the backend answers; never raises."""
        ...

    async def close(self) -> None: ...
