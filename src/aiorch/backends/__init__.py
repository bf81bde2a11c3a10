"""Backends: one small protocol (`Backend`), one class per transport, picked by configuration."""

from __future__ import annotations

import importlib

from aiorch.backends.base import Backend, Call, Readiness
from aiorch.service_settings import ServiceSettings
from aiorch.types import BackendKind

# Swappable implementations, named in one place.
BACKENDS: dict[BackendKind, str] = {
    BackendKind.OPENAI: "aiorch.backends.openai_compat:OpenAIBackend",
    BackendKind.OLLAMA: "aiorch.backends.ollama:OllamaBackend",
    BackendKind.OFFLINE: "aiorch.backends.offline:OfflineBackend",
}


def build_backend(settings: ServiceSettings) -> Backend:
    module_name, _, class_name = BACKENDS[settings.kind].partition(":")
    backend: Backend = getattr(importlib.import_module(module_name), class_name)(settings)
    return backend


__all__ = ["BACKENDS", "Backend", "Call", "Readiness", "build_backend"]
