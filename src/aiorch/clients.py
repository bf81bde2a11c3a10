"""`KimiClient`/`KimiConfig` and `QwenClient`/`QwenConfig`: one model, straight, no orchestration.

The guide's benchmark uses `KimiClient` directly, as the orchestrator does underneath. The
transport follows the environment: an API key or base URL means the OpenAI-compatible API, an
Ollama URL means Ollama, neither means offline (`config.is_configured` is then False).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from types import TracebackType

import msgspec

from aiorch.backends import Backend, Readiness, build_backend
from aiorch.config import BackendSettings, load_settings
from aiorch.types import BackendKind, Completion, CompletionRequest, Message, Service, StreamChunk


class ModelConfig(msgspec.Struct, frozen=True):
    backend: BackendSettings

    @property
    def is_configured(self) -> bool:
        """False when neither a key/base URL nor an Ollama URL is set (offline)."""
        return self.backend.kind is not BackendKind.OFFLINE

    @property
    def model(self) -> str:
        return self.backend.model_id


class KimiConfig(ModelConfig, frozen=True):
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KimiConfig:
        return cls(load_settings(environ).backend(Service.KIMI))


class QwenConfig(ModelConfig, frozen=True):
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> QwenConfig:
        return cls(load_settings(environ).backend(Service.QWEN))


class ModelClient:
    """Ask one model directly: `await client.ask("...")` or `client.stream(request)`."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.backend: Backend = build_backend(config.backend)

    async def complete(self, request: CompletionRequest) -> Completion:
        return await self.backend.complete(request)

    async def ask(
        self, prompt: str, *, max_tokens: int | None = None, thinking: bool | None = None
    ) -> Completion:
        request = CompletionRequest(
            messages=(Message("user", prompt),), max_tokens=max_tokens, thinking=thinking
        )
        return await self.backend.complete(request)

    def stream(self, request: CompletionRequest) -> AsyncIterator[StreamChunk]:
        return self.backend.stream(request)

    async def probe(self) -> Readiness:
        return await self.backend.probe()

    async def close(self) -> None:
        await self.backend.close()

    async def __aenter__(self) -> ModelClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class KimiClient(ModelClient):
    def __init__(self, config: KimiConfig | None = None) -> None:
        super().__init__(config or KimiConfig.from_env())


class QwenClient(ModelClient):
    def __init__(self, config: QwenConfig | None = None) -> None:
        super().__init__(config or QwenConfig.from_env())
