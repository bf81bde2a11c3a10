"""The offline backend: no model at all. Deterministic, instant, and labelled offline everywhere.

It lets the service start and answer with no keys and no URLs, for smoke tests, demos and load
tests of the orchestrator itself. Every answer says plainly that no model produced it.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

from aiorch.backends.base import Readiness
from aiorch.config import BackendSettings
from aiorch.types import Completion, CompletionRequest, StreamChunk, Timings, Usage

PREFIX = "[offline: no model is configured for {service}]"


class OfflineBackend:
    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings

    def _answer(self, request: CompletionRequest) -> tuple[str, Usage]:
        prompt = request.messages[-1].content if request.messages else ""
        digest = hashlib.blake2b(prompt.encode(), digest_size=6).hexdigest()
        text = (
            f"{PREFIX.format(service=self.settings.service.value)} "
            f"aiorch received your query ({len(prompt)} characters, digest {digest}). "
            "Set KIMI_API_KEY/KIMI_OLLAMA_URL or QWEN_OLLAMA_URL/QWEN_BASE_URL for real answers."
        )
        prompt_tokens = sum(len(m.content.split()) for m in request.messages)
        return text, Usage(prompt_tokens, len(text.split()), 0)

    async def complete(self, request: CompletionRequest) -> Completion:
        text, usage = self._answer(request)
        return Completion(
            content=text, model=self.settings.model_id, usage=usage, timings=Timings(), offline=True
        )

    async def stream(self, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        text, usage = self._answer(request)
        model = self.settings.model_id
        words = text.split(" ")
        for i, word in enumerate(words):
            yield StreamChunk(content=word if i == 0 else " " + word, model=model)
        yield StreamChunk(finish_reason="stop", usage=usage, model=model)

    async def probe(self) -> Readiness:
        s = self.settings
        detail = "offline: answers are placeholders, no model is configured"
        return Readiness.of(s, ready=True, detail=detail)

    async def close(self) -> None:
        return None
