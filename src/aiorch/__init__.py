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
    "Options": "aiorch.planning",
    "query_request": "aiorch.orchestrator",
    "Settings": "aiorch.config",
    "load_settings": "aiorch.config",
    "ServiceSettings": "aiorch.service_settings",
    "ModelSettings": "aiorch.service_settings",
    "KimiClient": "aiorch.clients",
    "KimiConfig": "aiorch.clients",
    "QwenClient": "aiorch.clients",
    "QwenConfig": "aiorch.clients",
    "Backend": "aiorch.backends",
    "Call": "aiorch.backends",
    "Readiness": "aiorch.backends",
    "Cache": "aiorch.cache",
    "MemoryCache": "aiorch.cache",
    "Metrics": "aiorch.monitoring.prometheus_metrics",
    "metrics_endpoint": "aiorch.monitoring.prometheus_metrics",
    "AiorchError": "aiorch.errors",
    "RequestError": "aiorch.errors",
    "UnsupportedParameter": "aiorch.errors",
    "BackendError": "aiorch.errors",
    "UpstreamRequestError": "aiorch.errors",
    "AllBackendsFailed": "aiorch.errors",
    "FlowError": "aiorch.errors",
    "ConfigError": "aiorch.errors",
    "ChatRequest": "aiorch.request",
    "ChatMessage": "aiorch.request",
    "Answer": "aiorch.answer",
    "Delta": "aiorch.answer",
    "End": "aiorch.answer",
    "AgentType": "aiorch.types",
    "QueryType": "aiorch.types",
    "QueryResult": "aiorch.types",
    "StreamStart": "aiorch.types",
    "Usage": "aiorch.types",
}

__all__ = [
    "AIOrchestrator",
    "AgentType",
    "AiorchError",
    "AllBackendsFailed",
    "Answer",
    "Backend",
    "BackendError",
    "Cache",
    "Call",
    "ChatMessage",
    "ChatRequest",
    "ConfigError",
    "Delta",
    "End",
    "FlowError",
    "KimiClient",
    "KimiConfig",
    "MemoryCache",
    "Metrics",
    "ModelSettings",
    "Options",
    "QueryResult",
    "QueryType",
    "QwenClient",
    "QwenConfig",
    "Readiness",
    "RequestError",
    "ServiceSettings",
    "Settings",
    "StreamStart",
    "UnsupportedParameter",
    "UpstreamRequestError",
    "Usage",
    "load_settings",
    "metrics_endpoint",
    "query_request",
]

if TYPE_CHECKING:
    from aiorch.answer import (
        Answer,
        Delta,
        End,
    )
    from aiorch.backends import (
        Backend,
        Call,
        Readiness,
    )
    from aiorch.cache import (
        Cache,
        MemoryCache,
    )
    from aiorch.clients import (
        KimiClient,
        KimiConfig,
        QwenClient,
        QwenConfig,
    )
    from aiorch.config import (
        Settings,
        load_settings,
    )
    from aiorch.errors import (
        AiorchError,
        AllBackendsFailed,
        BackendError,
        ConfigError,
        FlowError,
        RequestError,
        UnsupportedParameter,
        UpstreamRequestError,
    )
    from aiorch.monitoring.prometheus_metrics import (
        Metrics,
        metrics_endpoint,
    )
    from aiorch.orchestrator import (
        AIOrchestrator,
        query_request,
    )
    from aiorch.planning import Options
    from aiorch.request import (
        ChatMessage,
        ChatRequest,
    )
    from aiorch.service_settings import (
        ModelSettings,
        ServiceSettings,
    )
    from aiorch.types import (
        AgentType,
        QueryResult,
        QueryType,
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
