"""Keys, the metrics token, per-key rate limits, per-key cache partitions, and what never leaks.

The service runs at debug log level with the access log on, so that "never in the logs" is
tested where it is hardest to keep.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from aiorch.config import load_settings
from tests.integration.reliability_support import (
    UPSTREAM_KEY,
    aiorch_service,
    directive,
    mock_upstream,
)
from tests.integration.service_support import Mock, metric_value, unique
from tests.integration.service_support import Service as Running

KEYS = {
    "auth": "sk-client-auth-0f3a9c",
    "alpha": "sk-client-alpha-71be02",
    "beta": "sk-client-beta-c4d817",
    "limited": "sk-client-limited-9e5d33",
    "other": "sk-client-other-2a6b40",
    "unicode": "sk-cl\u00e9-\u043a\u043b\u044e\u0447-7d3e",  # configured and sent as UTF-8
}
METRICS_TOKEN = "metrics-token-5c1f0e"
PER_MINUTE = 30  # one token every two seconds: the tests never wait for a refill
BURST = 6
SECRETS = [*KEYS.values(), METRICS_TOKEN, UPSTREAM_KEY]


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mock]:
    with mock_upstream(tmp_path_factory.mktemp("security-mock")) as running:
        yield running


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, mock: Mock) -> Iterator[Running]:
    # The 401 tests below send many wrong keys from one address: failures are limited per
    # address (tested in test_security_clients.py), here set out of their reach.
    toml = f"[server]\nrate_limit_burst = {BURST}\nauth_failure_burst = 10000\n"
    with aiorch_service(
        tmp_path_factory.mktemp("security"),
        mock,
        toml=toml,
        name="security",
        args=("--log-level", "debug", "--access-log"),
        AIORCH_API_KEYS=",".join(KEYS.values()),
        AIORCH_METRICS_TOKEN=METRICS_TOKEN,
        AIORCH_RATE_LIMIT_PER_MINUTE=str(PER_MINUTE),
    ) as running:
        yield running


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


def ask(service: Running, text: str, key: str, **extra: object) -> httpx.Response:
    body = {"query": text, "query_type": "code", **extra}
    return service.query(body, headers=bearer(key))


# ---------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer sk-not-a-key"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {KEYS['auth']}"},
        {"Authorization": f"Bearer {KEYS['auth'].upper()}"},
        {"Authorization": f"Bearer {KEYS['auth'][:-1]}"},
        {"Authorization": f"Bearer {KEYS['auth']}x"},
        {"X-API-Key": "sk-not-a-key"},
        {"Authorization": f"Bearer {METRICS_TOKEN}"},  # the metrics token is not an API key
    ],
    ids=[
        "none",
        "unknown",
        "empty",
        "basic-scheme",
        "wrong-case",
        "prefix",
        "longer",
        "x-api-key-unknown",
        "metrics-token",
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/ai/query"), ("POST", "/v1/chat/completions"), ("GET", "/v1/models")],
)
def test_without_a_valid_key_the_api_answers_401(
    service: Running, headers: dict[str, str], method: str, path: str
) -> None:
    with service.client() as client:
        response = client.request(method, path, headers=headers, json={"query": "hi"})
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "authentication"
    assert "key" in error["message"]


def test_a_valid_key_is_accepted_in_either_header(service: Running) -> None:
    with service.client() as client:
        assert client.get("/v1/models", headers=bearer("auth")).status_code == 200
        assert client.get("/v1/models", headers={"X-API-Key": KEYS["auth"]}).status_code == 200
        # Liveness and readiness stay open: load balancers do not carry keys.
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200


def test_a_non_ascii_key_is_compared_as_utf8(service: Running) -> None:
    key = KEYS["unicode"].encode()
    with service.client() as client:
        bearer_ok = client.get("/v1/models", headers={"Authorization": b"Bearer " + key})
        header_ok = client.get("/v1/models", headers={"X-API-Key": key})
        # The same characters as latin-1 bytes are another key; bytes that are not UTF-8 at all
        # are no key either: a 401, never a 500.
        latin1 = client.get(
            "/v1/models",
            headers={"Authorization": b"Bearer " + KEYS["unicode"][:6].encode("latin-1")},
        )
        garbage = client.get("/v1/models", headers={"Authorization": b"Bearer sk-\xff\xfe"})
    assert bearer_ok.status_code == 200
    assert header_ok.status_code == 200
    assert latin1.status_code == 401
    assert garbage.status_code == 401
    assert garbage.json()["error"]["code"] == "authentication"


def test_metrics_need_the_metrics_token(service: Running) -> None:
    with service.client() as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=bearer("auth")).status_code == 401
        wrong = {"Authorization": f"Bearer {METRICS_TOKEN}x"}
        assert client.get("/metrics", headers=wrong).status_code == 401
        token = {"Authorization": f"Bearer {METRICS_TOKEN}"}
        response = client.get("/metrics", headers=token)
    assert response.status_code == 200
    assert "orchestrator_queries_total" in response.text


def test_keys_are_kept_hashed_and_no_secret_shows_in_a_repr() -> None:
    settings = load_settings(
        {
            "AIORCH_API_KEYS": "sk-plain-1, sk-plain-2",
            "AIORCH_METRICS_TOKEN": "tok-plain",
            "AIORCH_REDIS_URL": "redis://user:pw-plain@redis:6379/0",
            "KIMI_API_KEY": "sk-kimi-plain",
        }
    )
    assert all(len(h) == 64 for h in settings.server.api_key_hashes)
    text = repr(settings)
    for secret in ("sk-plain-1", "sk-plain-2", "tok-plain", "pw-plain", "sk-kimi-plain"):
        assert secret not in text


# ---------------------------------------------------------------------------- rate limits


def test_a_key_over_its_rate_is_refused_with_retry_after(service: Running) -> None:
    metrics = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    before = _metric(service, "aiorch_rate_limited_total", metrics)
    statuses = []
    for _ in range(BURST + 2):
        statuses.append(ask(service, unique("rate"), "limited").status_code)
    assert statuses == [200] * BURST + [429, 429]
    refused = ask(service, unique("rate"), "limited")
    assert refused.status_code == 429
    retry_after = int(refused.headers["Retry-After"])
    assert 1 <= retry_after <= 60 / PER_MINUTE + 1
    error = refused.json()["error"]
    assert error["code"] == "rate_limited"
    assert "rate limit" in error["message"]
    assert _metric(service, "aiorch_rate_limited_total", metrics) == before + 3
    # Another key has its own bucket; the limited key's 401-free neighbours are unaffected.
    assert ask(service, unique("rate"), "other").status_code == 200
    # Refused requests never reached the orchestrator, and /healthz is never limited.
    with service.client() as client:
        assert all(client.get("/healthz").status_code == 200 for _ in range(BURST + 2))


def test_requests_without_a_valid_key_do_not_spend_anyones_tokens(service: Running) -> None:
    with service.client() as client:
        for _ in range(BURST * 3):
            client.post("/api/ai/query", json={"query": "x"}, headers={"X-API-Key": "nope"})
    assert ask(service, unique("fresh"), "other").status_code == 200


def _metric(service: Running, name: str, headers: dict[str, str]) -> float:
    with service.client() as client:
        return metric_value(client.get("/metrics", headers=headers).text, name)


# ---------------------------------------------------------------------------- cache partitions


def test_two_keys_never_share_cache_entries(service: Running, mock: Mock) -> None:
    marker = unique("Explain partitions")
    first = ask(service, marker, "alpha")
    again = ask(service, marker, "alpha")
    other = ask(service, marker, "beta")
    assert [r.status_code for r in (first, again, other)] == [200, 200, 200]
    assert first.json()["cached"] is False
    assert again.json()["cached"] is True  # the same key hits its own entry
    assert other.json()["cached"] is False  # another key does not see it
    assert len(mock.requests_mentioning(marker)) == 2


def test_two_keys_asking_at_once_are_not_coalesced(service: Running, mock: Mock) -> None:
    marker = unique("Explain tenants")
    text = f"{marker} {directive(latency_ms=800)}"

    async def both() -> list[int]:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        "/api/ai/query",
                        json={"query": text, "query_type": "code"},
                        headers=bearer(name),
                    )
                    for name in ("alpha", "beta")
                )
            )
        return [r.status_code for r in responses]

    assert asyncio.run(both()) == [200, 200]
    assert len(mock.requests_mentioning(marker)) == 2


# ---------------------------------------------------------------------------- nothing leaks


def test_no_secret_or_prompt_in_logs_labels_or_errors(service: Running) -> None:
    prompt = unique("PROMPT-TEXT-never-log-me")
    failing = f"{prompt} {directive('http_500')}"
    ok = ask(service, prompt, "auth")
    failed = ask(service, failing, "auth", use_cache=False)
    assert ok.status_code == 200
    assert failed.status_code == 502
    for body in (ok.text, failed.text):
        assert not any(secret in body for secret in SECRETS)
    with service.client() as client:
        exposition = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        readyz = client.get("/readyz").text
    log = service.server.output()
    assert "request" in log  # the log is there, and it is verbose: debug level, access log
    for place, text in (("log", log), ("/metrics", exposition.text), ("/readyz", readyz)):
        for secret in SECRETS:
            assert secret not in text, f"a secret is in {place}"
        assert "PROMPT-TEXT" not in text, f"prompt text is in {place}"


def test_prompt_logging_is_opt_in(tmp_path_factory: pytest.TempPathFactory, mock: Mock) -> None:
    prompt = unique("PROMPT-TEXT-log-me-please")
    with aiorch_service(
        tmp_path_factory.mktemp("prompts"), mock, name="prompts", AIORCH_LOG_PROMPTS="true"
    ) as running:
        assert running.query({"query": prompt, "query_type": "code"}).status_code == 200
        log = running.server.output()
    assert prompt in log
    assert UPSTREAM_KEY not in log


# ---------------------------------------------------------------------------- the cache key


def _snippets(marker: str) -> tuple[str, str]:
    """Two Python programs that differ only in indentation, and do different things."""
    nested = f"# {marker}\nfor x in xs:\n    if x:\n        f(x)\n    g(x)\n"
    flat = f"# {marker}\nfor x in xs:\n    if x:\n        f(x)\ng(x)\n"
    return f"Review this code:\n{nested}", f"Review this code:\n{flat}"


def test_code_differing_only_in_indentation_is_not_served_from_one_entry(
    service: Running, mock: Mock
) -> None:
    marker = unique("indentation-cache")
    nested, flat = _snippets(marker)

    first = ask(service, nested, "alpha")
    second = ask(service, flat, "alpha")
    # What cannot change meaning is still one entry: line endings, surrounding whitespace.
    again = ask(service, "\r\n  " + nested.replace("\n", "\r\n") + "  \n", "alpha")

    assert [r.status_code for r in (first, second, again)] == [200, 200, 200]
    assert second.json()["cached"] is False
    assert again.json()["cached"] is True
    assert len(mock.requests_mentioning(marker)) == 2


def test_code_differing_only_in_indentation_is_not_coalesced(service: Running, mock: Mock) -> None:
    marker = unique("indentation-coalesce")
    texts = [f"{text} {directive(latency_ms=800)}" for text in _snippets(marker)]

    async def both() -> list[int]:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        "/api/ai/query",
                        json={"query": text, "query_type": "code"},
                        headers=bearer("beta"),
                    )
                    for text in texts
                )
            )
        return [r.status_code for r in responses]

    assert asyncio.run(both()) == [200, 200]
    assert len(mock.requests_mentioning(marker)) == 2


# ---------------------------------------------------------------------------- redirects


@pytest.mark.parametrize("path", ["/metrics/", "/healthz/", "/v1/models/", "/api/ai/query/"])
def test_no_redirect_is_built_from_the_host_header(service: Running, path: str) -> None:
    with service.client(follow_redirects=False) as client:
        response = client.get(path, headers={"Host": "evil.example", **bearer("auth")})
    assert "location" not in response.headers
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


# ---------------------------------------------------------------------------- readiness

PUBLIC_FIELDS = {"service", "kind", "ready"}


def test_readyz_details_only_for_a_key_or_the_metrics_token(service: Running) -> None:
    with service.client() as client:
        anonymous = client.get("/readyz")
        with_key = client.get("/readyz", headers=bearer("auth"))
        with_token = client.get("/readyz", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        wrong = client.get("/readyz", headers={"Authorization": "Bearer sk-not-a-key"})

    assert anonymous.status_code == 200
    body = anonymous.json()
    assert body["status"] == "ready"
    assert {b["service"]: b["ready"] for b in body["backends"]} == {"kimi": True, "qwen": True}
    assert all(set(b) == PUBLIC_FIELDS for b in body["backends"])
    assert "127.0.0.1" not in anonymous.text
    for detailed in (with_key, with_token):
        assert detailed.status_code == 200
        backends = detailed.json()["backends"]
        assert all(b["url"].startswith("http://127.0.0.1:") for b in backends)
        assert all(b["detail"] == "ok" and b["model"] for b in backends)
    assert wrong.status_code == 401  # a wrong credential is a failed authentication here too
    assert wrong.json()["error"]["code"] == "authentication"


def _probes(mock: Mock) -> int:
    """Readiness probes the mock has seen: Qwen (Ollama) asks /api/tags once per probe."""
    return sum(1 for r in mock.requests() if r["endpoint"] == "/api/tags")


def test_readyz_is_cached_and_probes_once_for_many_callers(service: Running, mock: Mock) -> None:
    before = _probes(mock)

    async def many() -> list[int]:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            burst = await asyncio.gather(*(client.get("/readyz") for _ in range(20)))
            sequential = [await client.get("/readyz") for _ in range(20)]
        return [r.status_code for r in (*burst, *sequential)]

    assert asyncio.run(many()) == [200] * 40
    probes = _probes(mock) - before
    print(f"40 /readyz calls made {probes} upstream probe round(s)")
    # One round, or two if the cache (5 s) expired in between: never one per call.
    assert probes <= 2
