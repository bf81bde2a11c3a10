"""The load-test scenarios: a short headless Locust run against the service, and the k6 script.

Locust runs in a subprocess (it monkey-patches the standard library with gevent on import).
k6 itself is not installed here: its script is checked by Node, which also runs each scenario
once against stand-ins for k6's modules, so a typo or a broken check cannot ship unnoticed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.service_support import Mock, Service, service_env
from tests.support.procs import REPO

LOCUSTFILE = REPO / "loadtest" / "locustfile.py"
K6_SCRIPT = REPO / "loadtest" / "k6" / "orchestrator.js"


def locust(host: str, tmp_path: Path, seconds: int) -> tuple[int, list[dict[str, Any]], str]:
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless"]
    argv += ["-u", "10", "-r", "10", "-t", f"{seconds}s", "--host", host]
    argv += ["--only-summary", "--json", "--stop-timeout", "5"]
    env = {
        **os.environ,
        **service_env(),
        "AIORCH_LOADTEST_WAIT": "0.05,0.2",  # seconds: enough requests in a short run
    }
    result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90)
    print(result.stderr[-3000:])  # Locust's own summary table, shown on failure or with -s
    stats: list[dict[str, Any]] = json.loads(result.stdout) if result.stdout.strip() else []
    return result.returncode, stats, result.stderr


def test_headless_locust_run_against_the_service_has_no_failures(
    kimi_api_service: Service, tmp_path: Path
) -> None:
    code, stats, log = locust(kimi_api_service.url, tmp_path, seconds=5)
    requests = sum(s["num_requests"] for s in stats)
    failures = sum(s["num_failures"] for s in stats)
    assert code == 0, log[-2000:]
    assert requests > 0
    assert failures == 0, [s["name"] for s in stats if s["num_failures"]]
    names = {f"{s['method']} {s['name']}" for s in stats if s["num_requests"]}
    assert "POST /api/ai/query [code]" in names
    assert any(name.startswith("SSE /v1/chat/completions [stream") for name in names)


def test_locust_marks_non_2xx_answers_as_failures(mock_upstream: Mock, tmp_path: Path) -> None:
    # The mock has no /api/ai/query (404) and wants its own key on /v1 (401).
    code, stats, _ = locust(mock_upstream.url, tmp_path, seconds=2)
    assert code != 0
    requests = sum(s["num_requests"] for s in stats)
    failures = sum(s["num_failures"] for s in stats)
    assert requests > 0
    assert failures == requests


# k6: the script must parse, and every scenario must run against stand-ins for k6's modules.

HARNESS = """
import fs from 'node:fs';
import path from 'node:path';

const scriptDir = process.env.K6_SCRIPT_DIR;
const posts = [];
function fakeResponse(url, body) {
  const streaming = JSON.parse(body).stream === true;
  const text = streaming
    ? 'data: {"choices":[{"delta":{"content":"hi"}}]}\\n\\ndata: [DONE]\\n\\n'
    : JSON.stringify({ answer: 'hi', choices: [{ message: { content: 'hi' } }] });
  return {
    status: 200,
    body: text,
    json(selector) {
      let value = JSON.parse(text);
      for (const key of (selector || '').split('.').filter(Boolean)) value = value[key];
      return value;
    },
  };
}
const http = {
  post(url, body, params) {
    posts.push({ url, body, params });
    return fakeResponse(url, body);
  },
};
const failed = [];
function check(response, checks) {
  for (const [name, fn] of Object.entries(checks)) if (!fn(response)) failed.push(name);
  return true;
}
globalThis.__ENV = { BASE_URL: 'http://aiorch.test:8000', RATE: '30', DURATION: '1m' };
globalThis.open = (file) => fs.readFileSync(path.resolve(scriptDir, file), 'utf8');
"""


def k6_module(tmp_path: Path) -> Path:
    """The k6 script with its two imports replaced by the stand-ins above."""
    source = K6_SCRIPT.read_text(encoding="utf-8")
    imports = ("import http from 'k6/http';", "import { check } from 'k6';")
    for line in imports:
        assert line in source
        source = source.replace(line, "")
    runner = """
const results = {};
for (const name of Object.keys(options.scenarios)) {
  const before = posts.length;
  eval(name)();
  results[name] = posts
    .slice(before)
    .map((p) => ({ url: p.url, tags: p.params.tags, body: JSON.parse(p.body) }));
}
console.log(JSON.stringify({ options, results, failed }));
"""
    module = tmp_path / "orchestrator.mjs"
    module.write_text(HARNESS + source + runner, encoding="utf-8")
    return module


@pytest.fixture
def node() -> str:
    binary = shutil.which("node")
    # A missing node must fail, not skip: `make test` installs it (scripts/ci/test-deps.sh).
    assert binary is not None, "node is not installed: run `make test-deps` as root"
    return binary


def test_k6_script_parses(node: str, tmp_path: Path) -> None:
    copy = tmp_path / "orchestrator.mjs"  # .mjs: Node parses it as the ES module k6 loads
    copy.write_text(K6_SCRIPT.read_text(encoding="utf-8"), encoding="utf-8")
    result = subprocess.run([node, "--check", str(copy)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_k6_scenarios_run_with_slo_thresholds(node: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [node, str(k6_module(tmp_path))],
        capture_output=True,
        text=True,
        env={**os.environ, "K6_SCRIPT_DIR": str(K6_SCRIPT.parent)},
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["failed"] == []
    options = data["options"]
    thresholds = options["thresholds"]
    assert thresholds["http_req_duration{service:kimi}"] == ["p(95)<60000"]
    assert thresholds["http_req_duration{service:qwen}"] == ["p(95)<15000"]
    assert thresholds["http_req_failed"] == ["rate<0.01"]
    scenarios = options["scenarios"]
    assert {s["executor"] for s in scenarios.values()} == {"constant-arrival-rate"}
    kinds = {"code", "reasoning", "requirements", "testing", "general", "unknown"}
    assert kinds <= set(scenarios)
    for name, posts in data["results"].items():
        assert len(posts) == 1, name
        post = posts[0]
        assert post["url"].startswith("http://aiorch.test:8000/")
        if name in kinds:
            assert post["url"].endswith("/api/ai/query")
            assert post["body"]["query_type"] == name
    assert data["results"]["reasoning"][0]["tags"]["service"] == "kimi"
    assert data["results"]["code"][0]["tags"]["service"] == "qwen"
    assert data["results"]["chat_stream"][0]["body"]["stream"] is True
