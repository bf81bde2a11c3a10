"""The HTTP service: a thin layer that parses, calls the orchestrator and serialises."""

from aiorch.server.app import create_app

__all__ = ["create_app"]
