"""`aiorch serve` refuses, at start-up and saying why, the configurations that would silently
weaken it or fail every call: a key list that holds no key, credentials in an upstream URL that
cannot be sent beside its API key (issue 17, findings 4 and 6)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.integration.service_support import service_env
from tests.support.procs import AIORCH, REPO, free_port

RUN_TIMEOUT = 60  # seconds; only so that a hang (a server that started) fails the test


def serve(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AIORCH, "serve", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        cwd=REPO,
        env={**os.environ, **service_env(**env)},
        check=False,
    )


@pytest.mark.parametrize("keys", [",", " , "])
def test_a_key_list_with_no_key_stops_start_up(keys: str) -> None:
    result = serve(AIORCH_API_KEYS=keys)

    assert result.returncode != 0
    assert "AIORCH_API_KEYS" in result.stderr
    assert "serving on" not in result.stderr


def test_credentials_in_the_kimi_url_beside_its_key_stop_start_up() -> None:
    result = serve(
        KIMI_BASE_URL="https://user:pw-startup-3f1@api.example/v1", KIMI_API_KEY="sk-startup"
    )

    assert result.returncode != 0
    assert "kimi.base_url" in result.stderr
    assert "KIMI_API_KEY" in result.stderr
    assert "pw-startup-3f1" not in result.stderr + result.stdout
    assert "sk-startup" not in result.stderr + result.stdout
