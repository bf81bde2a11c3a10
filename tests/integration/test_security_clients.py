"""Who the client is: forwarded headers count only from configured proxies, and failed
authentication is rate limited per client address (issue 17, findings 8 and 10).

Every request here comes from 127.0.0.1; the forwarded headers claim other addresses (believed
only where 127.0.0.1 is a configured proxy).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.reliability_support import aiorch_service, mock_upstream
from tests.integration.service_support import Mock, unique
from tests.integration.service_support import Service as Running

BURST = 3
PER_MINUTE = 6  # one token every ten seconds: no refill while a test runs


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mock]:
    with mock_upstream(tmp_path_factory.mktemp("clients-mock")) as running:
        yield running


def _limited_service(
    tmp_path_factory: pytest.TempPathFactory, mock: Mock, name: str, **env: str
) -> Iterator[Running]:
    with aiorch_service(
        tmp_path_factory.mktemp(name),
        mock,
        toml=f"[server]\nrate_limit_burst = {BURST}\n",
        name=name,
        AIORCH_RATE_LIMIT_PER_MINUTE=str(PER_MINUTE),
        **env,
    ) as running:
        yield running


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory, mock: Mock) -> Iterator[Running]:
    """No keys (so the rate limit is per address) and no trusted proxy: the default."""
    yield from _limited_service(tmp_path_factory, mock, "direct")


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory, mock: Mock) -> Iterator[Running]:
    """The same, behind a proxy on 127.0.0.1 that the configuration names."""
    yield from _limited_service(
        tmp_path_factory, mock, "proxied", AIORCH_TRUSTED_PROXIES="127.0.0.1"
    )


def _statuses(service: Running, forwarded: list[dict[str, str]]) -> list[int]:
    with service.client() as client:
        return [
            client.post(
                "/api/ai/query",
                json={"query": unique("who am I"), "query_type": "code"},
                headers=headers,
            ).status_code
            for headers in forwarded
        ]


def _claims(count: int) -> list[dict[str, str]]:
    """Headers claiming `count` different client addresses, in both spellings."""
    return [
        {"X-Forwarded-For": f"203.0.113.{i}"}
        if i % 2
        else {"Forwarded": f"for=203.0.113.{i}", "X-Forwarded-For": f"198.51.100.{i}"}
        for i in range(count)
    ]


def test_forwarded_headers_are_ignored_from_an_untrusted_peer(direct: Running) -> None:
    statuses = _statuses(direct, _claims(BURST + 3))

    # One address, one bucket, whatever the headers claim.
    assert statuses == [200] * BURST + [429] * 3


def test_forwarded_headers_are_used_from_a_configured_proxy(proxied: Running) -> None:
    statuses = _statuses(proxied, [{"X-Forwarded-For": f"203.0.113.{i}"} for i in range(8)])

    assert statuses == [200] * 8  # eight clients, eight buckets


# ---------------------------------------------------------------------------- failed authentication

KEY = "sk-clients-valid-60f2"
TOKEN = "metrics-clients-1b7d"
FAILURES = 10  # the default burst of failed authentications per address


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, mock: Mock) -> Iterator[Running]:
    """API keys and a metrics token with the default failure limits, behind a trusted proxy so
    that each test can play several client addresses."""
    with aiorch_service(
        tmp_path_factory.mktemp("keyed"),
        mock,
        name="keyed",
        AIORCH_API_KEYS=KEY,
        AIORCH_METRICS_TOKEN=TOKEN,
        AIORCH_TRUSTED_PROXIES="127.0.0.1",
    ) as running:
        yield running


def _from(address: str, credential: str | None = None) -> dict[str, str]:
    headers = {"X-Forwarded-For": address}
    if credential is not None:
        headers["Authorization"] = f"Bearer {credential}"
    return headers


def test_wrong_keys_are_limited_per_address_and_then_even_a_right_key_is_refused(
    keyed: Running,
) -> None:
    guesser, neighbour = "203.0.113.77", "203.0.113.78"
    with keyed.client() as client:
        guesses = [
            client.get("/v1/models", headers=_from(guesser, f"sk-guess-{i}")).status_code
            for i in range(FAILURES)
        ]
        refused = client.get("/v1/models", headers=_from(guesser, "sk-guess-last"))
        right_key = client.get("/v1/models", headers=_from(guesser, KEY))
        neighbour_ok = client.get("/v1/models", headers=_from(neighbour, KEY))
        health = client.get("/healthz", headers=_from(guesser))

    assert guesses == [401] * FAILURES
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # Blocked: a right key cannot be told from a wrong one, so guessing gains nothing.
    assert right_key.status_code == 429
    assert neighbour_ok.status_code == 200
    assert health.status_code == 200
    assert "too many failures from 203.0.113.77" in keyed.server.output()


def test_missing_keys_are_not_counted_as_guesses(keyed: Running) -> None:
    address = "203.0.113.90"
    with keyed.client() as client:
        missing = [
            client.get("/v1/models", headers=_from(address)).status_code
            for _ in range(FAILURES + 5)
        ]
        then = client.get("/v1/models", headers=_from(address, KEY))
    assert missing == [401] * (FAILURES + 5)
    assert then.status_code == 200


def test_wrong_metrics_tokens_count_too(keyed: Running) -> None:
    address = "203.0.113.91"
    with keyed.client() as client:
        statuses = [
            client.get("/metrics", headers=_from(address, f"tok-{i}")).status_code
            for i in range(FAILURES + 1)
        ]
        right = client.get("/metrics", headers=_from(address, TOKEN))
    assert statuses == [401] * FAILURES + [429]
    assert right.status_code == 429
