"""A request the transport refuses to send (credentials beside a key, a header it cannot encode)
is a `BackendError` (a 502 with the backend named), never an exception that becomes a 500; the
readiness probe reports it instead of raising (issue 17, finding 6).

Start-up refuses the configurations it can recognise (tests/unit/test_security_config.py); these
settings are built directly so that the transport's own guard is what is tested.
"""

from __future__ import annotations

from typing import Any

import pytest

from aiorch.backends import Backend, build_backend
from aiorch.errors import BackendError
from tests.unit.backend_support import (
    ask,
    collect,
    complete,
    ollama_settings,
    openai_settings,
    running_mock,
)

PASSWORD = "pw-transport-91c"

OPENAI_CASES: list[dict[str, Any]] = [
    {"base_url": f"http://user:{PASSWORD}@HOST/v1"},  # with the api key: two Authorizations
    {"api_key": "sk-line\nbreak"},
    {"api_key": "sk-\u043a\u043b\u044e\u0447"},  # not latin-1: aiohttp cannot encode it
]


async def _outcomes(backend: Backend) -> list[BaseException | None]:
    outcomes: list[BaseException | None] = []
    try:
        await complete(backend, ask("hi"))
        outcomes.append(None)
    except Exception as error:
        outcomes.append(error)
    try:
        await collect(backend, "hi")
        outcomes.append(None)
    except Exception as error:
        outcomes.append(error)
    return outcomes


@pytest.mark.parametrize("fields", OPENAI_CASES, ids=["url-credentials", "newline", "non-latin1"])
async def test_an_unsendable_openai_request_is_a_backend_error(fields: dict[str, Any]) -> None:
    async with running_mock() as url:
        host = url.removeprefix("http://")
        values = {k: v.replace("HOST", host) for k, v in fields.items()}
        backend = build_backend(openai_settings(url, **values))
        try:
            outcomes = await _outcomes(backend)
            readiness = await backend.probe()
        finally:
            await backend.close()
    for outcome in outcomes:
        assert isinstance(outcome, BackendError), repr(outcome)
        assert outcome.service == "kimi"
        assert PASSWORD not in outcome.message
    assert readiness.ready is False
    assert PASSWORD not in readiness.detail


async def test_an_ollama_url_with_an_unusable_port_is_a_backend_error() -> None:
    async with running_mock() as url:
        backend = build_backend(ollama_settings(f"http://user:{PASSWORD}@127.0.0.1:99999"))
        try:
            outcomes = await _outcomes(backend)
            readiness = await backend.probe()
        finally:
            await backend.close()
    assert url
    for outcome in outcomes:
        assert isinstance(outcome, BackendError), repr(outcome)
        assert PASSWORD not in outcome.message
    assert readiness.ready is False
    assert PASSWORD not in readiness.detail
