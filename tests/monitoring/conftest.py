"""Fixtures for the monitoring tests: the Prometheus and Alertmanager command-line tools.

A missing binary fails the test (CI installs them; see docs/observability.md): a monitoring
configuration that was never checked must not pass as checked.
"""

from __future__ import annotations

import shutil

import pytest

INSTALL_HINT = "apt-get install prometheus prometheus-alertmanager"


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` is not on PATH; install it ({INSTALL_HINT})", pytrace=False)
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_binary("promtool")


@pytest.fixture(scope="session")
def amtool() -> str:
    return require_binary("amtool")
