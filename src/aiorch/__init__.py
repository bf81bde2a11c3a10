"""aiorch: one observable endpoint for Kimi-K2-Thinking and Qwen Coder.

The public API is the names in `__all__`; modules not re-exported here are private. Names load
on first use, so that `import aiorch` (and the `aiorch` command) stays fast and imports neither
prometheus_client nor aiohttp before it must.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "AIOrchestrator": "aiorch.orchestrator",
    "QueryOptions": "aiorch.planning",
    "build_messages": "aiorch.answers",
    "Settings": "aiorch.config",
    "load_settings": "aiorch.config",
    "KimiClient": "aiorch.clients",
    "KimiConfig": "aiorch.clients",
    "QwenClient": "aiorch.clients",
    "QwenConfig": "aiorch.clients",
    "Backend": "aiorch.backends",
    "Readiness": "aiorch.backends",
    "Cache": "aiorch.cache",
    "MemoryCache": "aiorch.cache",
    "Metrics": "aiorch.monitoring.prometheus_metrics",
    "metrics_endpoint": "aiorch.monitoring.prometheus_metrics",
    "AiorchError": "aiorch.errors",
    "RequestError": "aiorch.errors",
    "BackendError": "aiorch.errors",
    "AllBackendsFailed": "aiorch.errors",
    "FlowError": "aiorch.errors",
    "ConfigError": "aiorch.errors",
    "AgentType": "aiorch.types",
    "QueryType": "aiorch.types",
    "Service": "aiorch.types",
    "Message": "aiorch.types",
    "CompletionRequest": "aiorch.types",
    "Completion": "aiorch.types",
    "QueryResult": "aiorch.types",
    "StreamChunk": "aiorch.types",
    "StreamStart": "aiorch.types",
    "Usage": "aiorch.types",
}

__all__ = [
    "AIOrchestrator",
    "AgentType",
    "AiorchError",
    "AllBackendsFailed",
    "Backend",
    "BackendError",
    "Cache",
    "Completion",
    "CompletionRequest",
    "ConfigError",
    "FlowError",
    "KimiClient",
    "KimiConfig",
    "MemoryCache",
    "Message",
    "Metrics",
    "QueryOptions",
    "QueryResult",
    "QueryType",
    "QwenClient",
    "QwenConfig",
    "Readiness",
    "RequestError",
    "Service",
    "Settings",
    "StreamChunk",
    "StreamStart",
    "Usage",
    "build_messages",
    "load_settings",
    "metrics_endpoint",
]

if TYPE_CHECKING:
    from aiorch.answers import build_messages
    from aiorch.backends import Backend, Readiness
    from aiorch.cache import Cache, MemoryCache
    from aiorch.clients import KimiClient, KimiConfig, QwenClient, QwenConfig
    from aiorch.config import Settings, load_settings
    from aiorch.errors import (
        AiorchError,
        AllBackendsFailed,
        BackendError,
        ConfigError,
        FlowError,
        RequestError,
    )
    from aiorch.monitoring.prometheus_metrics import Metrics, metrics_endpoint
    from aiorch.orchestrator import AIOrchestrator
    from aiorch.planning import QueryOptions
    from aiorch.types import (
        AgentType,
        Completion,
        CompletionRequest,
        Message,
        QueryResult,
        QueryType,
        Service,
        StreamChunk,
        StreamStart,
        Usage,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aiorch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return __all__
