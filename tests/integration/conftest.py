"""Real servers on free ports: one mock upstream, and `aiorch serve` in each configuration.

Servers are session-scoped: starting them is most of the cost, and the tests never change their
configuration (per-request behaviour goes through `[[mock: ...]]` directives in the prompt, and
every test uses its own prompts, so cache entries and fault counters never cross tests). The one
state that would cross tests is the circuit breaker, which the tests' injected failures would
open for the tests after them; the services' config file turns it off.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.service_support import UPSTREAM_KEY, Mock, Service, service_env
from tests.support.procs import AIORCH, free_port, run_server

SERVICE_CONFIG = """\
[breaker]
enabled = false
"""


@pytest.fixture(scope="session")
def service_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "aiorch.toml"
    path.write_text(SERVICE_CONFIG)
    return path


@pytest.fixture(scope="session")
def mock_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mock]:
    port = free_port()
    with run_server(
        [*AIORCH, "mock-upstream", "--port", str(port), "--api-key", UPSTREAM_KEY, "--seed", "1"],
        port=port,
        ready_path="/healthz",
        tmp_path=tmp_path_factory.mktemp("mock"),
        name="mock-upstream",
    ) as server:
        yield Mock(server)


def _serve(
    tmp_path: Path, name: str, env: dict[str, str], mock: Mock | None, config: Path
) -> Iterator[Service]:
    port = free_port()
    with run_server(
        [*AIORCH, "serve", "--port", str(port), "--config", str(config)],
        port=port,
        ready_path="/healthz",
        tmp_path=tmp_path,
        env=env,
        name=name,
    ) as server:
        yield Service(server, mock, name)


@pytest.fixture(scope="session")
def offline_service(
    tmp_path_factory: pytest.TempPathFactory, service_config: Path
) -> Iterator[Service]:
    """No keys and no URLs: the built-in offline backend answers."""
    yield from _serve(
        tmp_path_factory.mktemp("offline"), "offline", service_env(), None, service_config
    )


@pytest.fixture(scope="session")
def kimi_api_service(
    tmp_path_factory: pytest.TempPathFactory, mock_upstream: Mock, service_config: Path
) -> Iterator[Service]:
    """Kimi through the Moonshot-style API (KIMI_BASE_URL + KIMI_API_KEY), Qwen through Ollama."""
    env = service_env(
        KIMI_BASE_URL=f"{mock_upstream.url}/v1",
        KIMI_API_KEY=UPSTREAM_KEY,
        QWEN_OLLAMA_URL=mock_upstream.url,
    )
    yield from _serve(
        tmp_path_factory.mktemp("kimi-api"), "kimi-api", env, mock_upstream, service_config
    )


@pytest.fixture(scope="session")
def kimi_ollama_service(
    tmp_path_factory: pytest.TempPathFactory, mock_upstream: Mock, service_config: Path
) -> Iterator[Service]:
    """Both models through Ollama's native API (KIMI_OLLAMA_URL, QWEN_OLLAMA_URL)."""
    env = service_env(KIMI_OLLAMA_URL=mock_upstream.url, QWEN_OLLAMA_URL=mock_upstream.url)
    yield from _serve(
        tmp_path_factory.mktemp("kimi-ollama"), "kimi-ollama", env, mock_upstream, service_config
    )


@pytest.fixture(params=["kimi-api", "kimi-ollama"])
def online_service(request: pytest.FixtureRequest) -> Service:
    """Each configuration that reaches a model through the mock upstream."""
    fixture = "kimi_api_service" if request.param == "kimi-api" else "kimi_ollama_service"
    service: Service = request.getfixturevalue(fixture)
    return service


@pytest.fixture(scope="session")
def dead_port() -> int:
    """A port nothing listens on: connecting to it is refused at once."""
    return free_port()


@pytest.fixture(scope="session")
def half_dead_service(
    tmp_path_factory: pytest.TempPathFactory,
    mock_upstream: Mock,
    dead_port: int,
    service_config: Path,
) -> Iterator[Service]:
    """Kimi's upstream refuses connections; Qwen's works."""
    env = service_env(
        KIMI_BASE_URL=f"http://127.0.0.1:{dead_port}/v1",
        KIMI_API_KEY=UPSTREAM_KEY,
        QWEN_OLLAMA_URL=mock_upstream.url,
    )
    yield from _serve(
        tmp_path_factory.mktemp("half-dead"), "half-dead", env, mock_upstream, service_config
    )


@pytest.fixture(scope="session")
def dead_service(
    tmp_path_factory: pytest.TempPathFactory, dead_port: int, service_config: Path
) -> Iterator[Service]:
    """Every upstream refuses connections."""
    env = service_env(
        KIMI_OLLAMA_URL=f"http://127.0.0.1:{dead_port}",
        QWEN_OLLAMA_URL=f"http://127.0.0.1:{dead_port}",
    )
    yield from _serve(tmp_path_factory.mktemp("dead"), "dead", env, None, service_config)


@pytest.fixture(scope="session")
def impatient_service(
    tmp_path_factory: pytest.TempPathFactory, mock_upstream: Mock, service_config: Path
) -> Iterator[Service]:
    """Half-second deadlines, so that a hung upstream becomes a 504 quickly."""
    env = service_env(
        KIMI_BASE_URL=f"{mock_upstream.url}/v1",
        KIMI_API_KEY=UPSTREAM_KEY,
        KIMI_TIMEOUT="0.5",
        QWEN_OLLAMA_URL=mock_upstream.url,
        QWEN_TIMEOUT="0.5",
    )
    yield from _serve(
        tmp_path_factory.mktemp("impatient"), "impatient", env, mock_upstream, service_config
    )


@pytest.fixture(scope="session")
def keyed_service(
    tmp_path_factory: pytest.TempPathFactory, mock_upstream: Mock, service_config: Path
) -> Iterator[Service]:
    """Clients must present one of AIORCH_API_KEYS."""
    env = service_env(
        QWEN_OLLAMA_URL=mock_upstream.url,
        KIMI_OLLAMA_URL=mock_upstream.url,
        AIORCH_API_KEYS="client-key-1,client-key-2",
    )
    yield from _serve(tmp_path_factory.mktemp("keyed"), "keyed", env, mock_upstream, service_config)


@pytest.fixture
def fresh_service(tmp_path: Path, mock_upstream: Mock, service_config: Path) -> Iterator[Service]:
    """Like `kimi_api_service`, but new for one test: breakers closed, retry budget unspent."""
    env = service_env(
        KIMI_BASE_URL=f"{mock_upstream.url}/v1",
        KIMI_API_KEY=UPSTREAM_KEY,
        QWEN_OLLAMA_URL=mock_upstream.url,
    )
    yield from _serve(tmp_path, "fresh", env, mock_upstream, service_config)


@pytest.fixture(scope="session")
def black_hole_url() -> Iterator[str]:
    """A server that accepts connections (the kernel's backlog does) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture(scope="session")
def black_hole_service(
    tmp_path_factory: pytest.TempPathFactory, mock_upstream: Mock, black_hole_url: str
) -> Iterator[Service]:
    """Kimi's upstream takes every request and never answers; Qwen's works."""
    tmp = tmp_path_factory.mktemp("black-hole")
    config = tmp / "aiorch.toml"
    config.write_text(SERVICE_CONFIG + "[kimi]\nconnect_timeout = 0.5\n")
    env = service_env(
        KIMI_BASE_URL=f"{black_hole_url}/v1",
        KIMI_API_KEY=UPSTREAM_KEY,
        KIMI_TIMEOUT="1",
        QWEN_OLLAMA_URL=mock_upstream.url,
    )
    yield from _serve(tmp, "black-hole", env, mock_upstream, config)
