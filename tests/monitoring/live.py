"""A real Prometheus scraping a real aiorch in front of `aiorch mock-upstream`, for the live tests.

`stack(...)` starts the three on free ports, with our rule files loaded (their groups' own
`interval` dropped, so that every rule is evaluated at the test's pace) and Prometheus scraping
aiorch every `scrape_interval`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from aiorch.config import ENV_KEYS
from tests.monitoring.conftest import require_binary
from tests.monitoring.exprs import rule_files
from tests.support.procs import AIORCH, Server, free_port, run_server

UPSTREAM_KEY = "sk-live-monitoring"


def http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read().decode()
    # /api/ai/query with "stream": true answers server-sent events, not JSON.
    return json.loads(raw) if raw.lstrip().startswith("{") else raw


class Prometheus:
    def __init__(self, server: Server) -> None:
        self.url = server.url

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            answer = http_json(url)
        except urllib.error.HTTPError as error:
            with error:
                detail = error.read().decode()
            raise AssertionError(f"{expr!r}: HTTP {error.code} {detail}") from None
        assert answer["status"] == "success", f"{expr!r}: {answer}"
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def wait_for(self, expr: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.25)
        raise AssertionError(f"{expr!r} still empty after {timeout} s")

    def last_scrape(self, job: str = "aiorch") -> datetime.datetime | None:
        """When Prometheus last scraped the job's (only) target; None before the first."""
        targets = http_json(f"{self.url}/api/v1/targets?state=active")["data"]["activeTargets"]
        found = [t for t in targets if t["labels"].get("job") == job]
        if not found or found[0]["health"] == "unknown":  # not discovered, or not scraped yet
            return None
        [target] = found
        return datetime.datetime.fromisoformat(target["lastScrape"].replace("Z", "+00:00"))

    def next_scrape(self, job: str = "aiorch", timeout: float = 60.0) -> datetime.datetime:
        """Wait for a scrape that starts after now, and return when it happened."""
        before = self.last_scrape(job)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.last_scrape(job)
            if now is not None and now != before:
                return now
            time.sleep(0.05)
        raise AssertionError(f"no scrape of {job} within {timeout} s")


def prometheus_config(tmp: Path, aiorch_port: int, scrape_interval: str) -> Path:
    rules = []
    for path in rule_files():
        content = yaml.safe_load(path.read_text())
        for group in content["groups"]:
            group.pop("interval", None)
        copy = tmp / path.name
        copy.write_text(yaml.safe_dump(content, sort_keys=False))
        rules.append(str(copy))
    config = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": "1s"},
        "rule_files": rules,
        "scrape_configs": [{
            "job_name": "aiorch",
            "metrics_path": "/metrics",
            "static_configs": [{"targets": [f"127.0.0.1:{aiorch_port}"]}],
        }],
    }  # fmt: skip
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def stack(
    tmp: Path, *, config: str, scrape_interval: str = "1s", model_config: str | None = None
) -> Iterator[tuple[Server, Prometheus]]:
    """The mock upstream, `aiorch serve` with `config` as its file, and a Prometheus."""
    prometheus_bin = require_binary("prometheus")
    mock_port, aiorch_port, prom_port = free_port(), free_port(), free_port()
    config_file = tmp / "aiorch.toml"
    config_file.write_text(config)
    env = {
        **dict.fromkeys(ENV_KEYS, ""),  # nothing from the developer's shell leaks in
        "AIORCH_API_KEYS": "",
        "AIORCH_WORKERS": "",
        "AIORCH_CONFIG": str(config_file),
        "KIMI_BASE_URL": f"http://127.0.0.1:{mock_port}/v1",
        "KIMI_API_KEY": UPSTREAM_KEY,
        "QWEN_OLLAMA_URL": f"http://127.0.0.1:{mock_port}",
    }
    mock_argv = [*AIORCH, "mock-upstream", "--port", str(mock_port), "--api-key", UPSTREAM_KEY,
                 "--seed", "1"]  # fmt: skip
    if model_config:
        mock_argv += ["--model-config", model_config]
    prometheus_config_file = prometheus_config(tmp, aiorch_port, scrape_interval)
    with (
        run_server(mock_argv, port=mock_port, ready_path="/healthz", tmp_path=tmp,
                   name="mock-upstream"),
        run_server(
            [*AIORCH, "serve", "--port", str(aiorch_port)],
            port=aiorch_port, ready_path="/healthz", tmp_path=tmp, env=env, name="aiorch",
        ) as aiorch,
        run_server(
            [prometheus_bin, f"--config.file={prometheus_config_file}",
             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}",
             "--log.level=warn"],
            port=prom_port, ready_path="/-/ready", tmp_path=tmp, name="prometheus",
        ) as prometheus,
    ):  # fmt: skip
        yield aiorch, Prometheus(prometheus)
