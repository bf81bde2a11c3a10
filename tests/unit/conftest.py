"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.unit.backend_support import running_mock
from tests.unit.chain_support import MakeRig, rigs


@pytest.fixture
async def mock_url() -> AsyncIterator[str]:
    """The URL of an in-process mock upstream, for backend tests over real HTTP."""
    async with running_mock() as url:
        yield url


@pytest.fixture
async def make_rig() -> AsyncIterator[MakeRig]:
    """Guarded services on fake backends, closed (their breakers' tasks stopped) after the test."""
    async with rigs() as make:
        yield make
