"""Every command and example in README.md, run as a new reader would run it.

`readme.examples()` reads the README afresh at collection: each shell line, Python block, other
block and commands-table row is one test case. Each case goes to the first handler below whose
pattern matches it; a case that no handler knows fails, so a command added to the README cannot
go untested. The README's "No models at hand?" block is run as written (its mock upstream and its
`make run`, on free ports) and serves the examples that talk to a running aiorch; the README's
ports (8000 for aiorch, 9100 for the mock) are rewritten to those free ports, and `.venv/bin/` to
the virtualenv running the tests. `make run` is run for real, without its set-up step (this
virtualenv is the set-up). Commands that cannot run inside the suite say why in their handler and
are still checked: their make targets exist and the entry points they start answer `--help`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.service_support import sse_events
from tests.support.procs import free_port, wait_http
from tests.system.readme import REPO, Example, examples

BIN = str(Path(sys.executable).parent)
README_PORTS = {"aiorch": 8000, "mock": 9100}  # the ports the README's examples use
# Variables that would change what a README command does; the reader's shell has none of them.
OURS = re.compile(r"^(KIMI_|QWEN_|AIORCH_|OTEL_|PROMETHEUS_MULTIPROC_DIR$|MAKE|MFLAGS$)")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not OURS.match(k)}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # `python` is the virtualenv's
    return {**env, **extra}


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def start(argv: list[str], env: dict[str, str], url: str, log: Path) -> Iterator[Running]:
    """A command in its own process group (make, its shell and the server), stopped as a whole."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    running = Running(process, url, log)
    try:
        wait_http(f"{url}/healthz", timeout=30, process=process)
        yield running
    except BaseException:
        print(f"--- {' '.join(argv)} ---\n{running.output()}")  # shown by pytest on failure
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def make_run(env: dict[str, str], log: Path) -> contextlib.AbstractContextManager[Running]:
    """`make run` as written, minus its set-up step: the running virtualenv is the set-up."""
    port = free_port()
    argv = ["make", "--no-print-directory", "-o", "setup-run", "-o", "setup", "run", f"BIN={BIN}"]
    dry = subprocess.run([*argv[:-1], "-n", argv[-1]], cwd=REPO, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert "pip install" not in dry.stdout, f"make run would install, not serve: {dry.stdout}"
    full = clean_env(**env, AIORCH_HOST="127.0.0.1", AIORCH_PORT=str(port))
    return start(argv, full, f"http://127.0.0.1:{port}", log)


@dataclass
class Stack:
    """The README's mock upstream and the `make run` pointed at it, both from its own lines."""

    mock: Running
    aiorch: Running
    env: dict[str, str]  # the variables the README's `make run` line sets

    def localize(self, text: str) -> str:
        text = re.sub(r"\blocalhost\b", "127.0.0.1", text)
        for name, port in README_PORTS.items():
            here = getattr(self, name).url.rsplit(":", 1)[1]
            text = re.sub(rf"(?<![\d.]){port}(?!\d)", here, text)
        return text.replace(".venv/bin/", f"{BIN}/")


EXAMPLES = examples()


def mock_lines() -> tuple[Example, Example]:
    starts = [e for e in EXAMPLES if e.kind == "shell" and "aiorch mock-upstream" in e.text]
    serves = [e for e in EXAMPLES if e.kind == "shell" and is_make(e, "run") and e.assignments()[0]]
    assert starts, "README.md no longer starts the mock upstream"
    assert serves, "README.md no longer points `make run` at the mock upstream"
    return starts[0], serves[0]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("readme")
    start_mock, serve = mock_lines()
    mock_port = free_port()
    words = start_mock.text.replace(".venv/bin/", f"{BIN}/")
    words = re.sub(rf"(?<!\d){README_PORTS['mock']}(?!\d)", str(mock_port), words)
    mock_url = f"http://127.0.0.1:{mock_port}"
    with start(["bash", "-c", f"exec {words}"], clean_env(), mock_url, tmp / "mock.log") as mock:
        env = {
            k: v.replace(str(README_PORTS["mock"]), str(mock_port))
            for k, v in serve.assignments()[0].items()
        }
        with make_run(env, tmp / "aiorch.log") as aiorch:
            yield Stack(mock, aiorch, env)


def run(
    argv: list[str] | str, env: dict[str, str], timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    shell = isinstance(argv, str)
    return subprocess.run(
        argv, shell=shell, executable="/bin/bash" if shell else None, cwd=REPO, env=env,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def is_make(example: Example, target: str) -> bool:
    return example.kind in ("shell", "table") and example.assignments()[1] == ["make", target]


# --- the handlers --------------------------------------------------------------------------


def offline_make_run(example: Example, request: pytest.FixtureRequest) -> None:
    """With no configuration the service answers offline, and says so in every answer."""
    with make_run({}, request.getfixturevalue("tmp_path") / "run.log") as aiorch:
        answer = httpx.post(f"{aiorch.url}/api/ai/query", json={"query": "hi"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["offline"] is True


def configured_make_run(example: Example, request: pytest.FixtureRequest) -> None:
    """Real models are out of reach here (and no test may call out): the service must start
    with exactly these variables and name, at start-up, the defaults the comments promise.
    Nothing here asks a backend anything, so nothing leaves the machine."""
    env = dict(example.env) | example.assignments()[0]
    with make_run(env, request.getfixturevalue("tmp_path") / "run.log") as aiorch:
        assert httpx.get(f"{aiorch.url}/healthz", timeout=10).status_code == 200
        started = aiorch.output()
    for variable, value in re.findall(r"([A-Z_]+) defaults to ([^\s;]+)", example.comment):
        assert value in started, f"{variable}: the README says it defaults to {value}"


def the_stack_itself(example: Example, request: pytest.FixtureRequest) -> None:
    """Started by the `stack` fixture from this very line; here: it answers."""
    stack: Stack = request.getfixturevalue("stack")
    if "mock-upstream" in example.text:
        assert httpx.get(f"{stack.mock.url}/v1/models", timeout=10).status_code == 200
    else:
        ready = httpx.get(f"{stack.aiorch.url}/readyz", timeout=10).json()
        assert ready["status"] == "ready", ready
        assert not ready["offline"]


def curl(example: Example, request: pytest.FixtureRequest) -> None:
    stack: Stack = request.getfixturevalue("stack")
    done = run(stack.localize(example.text), clean_env(), timeout=120)
    assert done.returncode == 0, done.stderr
    if '"stream": true' in example.text:
        events = list(sse_events(done.stdout.splitlines()))
        assert events, done.stdout[-500:]
        assert events[-1].event == "done", done.stdout[-500:]
        return
    body = json.loads(done.stdout)
    if "/api/ai/flows/" in example.text:
        assert body.get("status") == "completed", done.stdout[:1000]
        assert [s["status"] for s in body["stages"]] == ["completed"] * 3
    else:
        assert body.get("answer"), done.stdout[:1000]
        assert body["offline"] is False


def openai_sdk(example: Example, request: pytest.FixtureRequest) -> None:
    stack: Stack = request.getfixturevalue("stack")
    done = run([sys.executable, "-c", stack.localize(example.text)], clean_env())
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()


def file_tree(example: Example, request: pytest.FixtureRequest) -> None:
    """The architecture tree: every file and folder it names exists."""
    base = REPO
    missing = []
    for line in example.text.splitlines():
        indented = line.startswith(" ")
        paths = re.findall(r"(?:^|[\s,])((?:[\w.]+/)*[\w.]+(?:\.py|/))(?=[\s,]|$)", line)
        for path in paths:
            where = (base if indented else REPO) / path
            missing += [] if where.exists() else [str(where.relative_to(REPO))]
        if not indented and paths:
            base = REPO / paths[0]
    assert not missing, f"the README names files that do not exist: {missing}"


def cli_command(example: Example, request: pytest.FixtureRequest) -> None:
    """`--help` answers and lists the options the table names; then one real run."""
    name = example.text.split()[1]
    helped = run([BIN + "/aiorch", name, "--help"], clean_env())
    assert helped.returncode == 0, helped.stderr
    for option in example.options:
        assert option in helped.stdout, f"aiorch {name} --help does not mention {option}"
    REAL_RUNS[name](request)


def python_script(example: Example, request: pytest.FixtureRequest) -> None:
    """Run as written. The Kimi benchmark measures the README's mock (with no model configured
    it would only say that it skipped)."""
    env = clean_env()
    if "kimi_benchmark" in example.text:
        env |= request.getfixturevalue("stack").env
    done = run(example.text, env, timeout=110)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "skipped" not in done.stdout


# Why each make target that the README names is not run inside the suite.
NOT_RUN_HERE = {
    "test": "`make test` is what runs this suite: it would run itself",
    "overhead": "the overhead benchmark takes minutes (the README says so)",
    "soak": "the soak runs for ten minutes (the README says so)",
    "lock": "it rewrites the committed requirements/ from PyPI; `make lint` checks them",
    "test-lowest": "it builds a second virtualenv; CI runs it after `make test`",
}


def make_target_only(example: Example, request: pytest.FixtureRequest) -> None:
    """Not run, for the reason in NOT_RUN_HERE. Checked instead: the target exists, and every
    Python entry point its recipe starts (`python -m ...`, `python script.py`) answers `--help`."""
    target = example.assignments()[1][1]
    assert NOT_RUN_HERE[target]
    dry = run(["make", "--no-print-directory", "-n", target], clean_env())
    assert dry.returncode == 0, dry.stderr
    entries = [["-m", m] for m in re.findall(r"python -m ([\w.]+)", dry.stdout)]
    entries += [[s] for s in re.findall(r"python (\S+\.py)", dry.stdout)]
    assert entries, f"make {target} starts no Python entry point: {dry.stdout}"
    for entry in entries:
        helped = run([sys.executable, *entry, "--help"], clean_env())
        assert helped.returncode == 0, helped.stderr


def _query(request: pytest.FixtureRequest) -> None:
    done = run([BIN + "/aiorch", "query", "Write a Python function that reverses a list"],
               clean_env(**request.getfixturevalue("stack").env))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def _flow(request: pytest.FixtureRequest) -> None:
    done = run([BIN + "/aiorch", "flow", "Users can reset their password by email"], clean_env())
    assert done.returncode == 0, done.stderr  # offline: no model is configured
    assert done.stdout.strip()


def _bench(request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("stack").aiorch.url
    done = run([BIN + "/aiorch", "bench", "--url", url, "-n", "5"], clean_env())
    assert done.returncode == 0, done.stderr


def _doctor(request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("stack").aiorch.url
    done = run([BIN + "/aiorch", "doctor", "--url", url, "--json"], clean_env())
    assert done.returncode in (0, 1), done.stdout + done.stderr  # 2: down or an SLO breached
    assert json.loads(done.stdout)["findings"] is not None


REAL_RUNS: dict[str, Callable[[pytest.FixtureRequest], None]] = {
    "serve": lambda request: None,  # served for real by every `make run` example
    "mock-upstream": lambda request: request.getfixturevalue("stack"),  # the README's mock line
    "query": _query,
    "flow": _flow,
    "bench": _bench,
    "doctor": _doctor,
}


def config_snippet(example: Example, request: pytest.FixtureRequest) -> None:
    """A configuration example loads as it stands, and the services it names are there."""
    import re

    from aiorch.config import load_settings

    tmp = request.getfixturevalue("tmp_path")
    path = tmp / "aiorch.toml"
    path.write_text(example.text + "\n")
    settings = load_settings({}, config_path=path)
    for name in re.findall(r"^\[services\.([\w-]+)\]", example.text, re.M):
        assert name in settings.services, name


@dataclass(frozen=True)
class Handler:
    name: str
    matches: Callable[[Example], bool]
    run: Callable[[Example, pytest.FixtureRequest], None]


HANDLERS = [
    Handler("mock stack", lambda e: e in mock_lines(), the_stack_itself),
    Handler("make run, offline", lambda e: is_make(e, "run") and not e.env, offline_make_run),
    Handler("make run, configured", lambda e: is_make(e, "run"), configured_make_run),
    Handler(
        "make target that cannot run here",
        lambda e: any(is_make(e, t) for t in NOT_RUN_HERE),
        make_target_only,
    ),
    Handler("curl", lambda e: e.kind == "shell" and e.text.startswith("curl "), curl),
    Handler("OpenAI SDK", lambda e: e.kind == "python" and "OpenAI(" in e.text, openai_sdk),
    Handler(
        "file tree", lambda e: e.kind == "block" and e.text.startswith("src/aiorch/"), file_tree
    ),
    Handler("configuration", lambda e: e.kind == "block" and e.lang == "toml", config_snippet),
    Handler(
        "aiorch command",
        lambda e: (
            e.kind == "table" and e.text.split()[0] == "aiorch" and e.text.split()[1] in REAL_RUNS
        ),
        cli_command,
    ),
    Handler(
        "Python command",
        lambda e: e.kind == "table" and e.text.startswith(("python scripts/", "python -m pytest ")),
        python_script,
    ),
]


@pytest.mark.parametrize("example", [pytest.param(e, id=e.id) for e in EXAMPLES])
def test_readme_example(example: Example, request: pytest.FixtureRequest) -> None:
    handler = next((h for h in HANDLERS if h.matches(example)), None)
    assert handler is not None, (
        f"README.md, {example.where}: no test knows how to run {example.text!r}; "
        "add a handler to tests/system/test_readme.py"
    )
    handler.run(example, request)


def test_the_readme_has_examples_to_run() -> None:
    kinds = {e.kind for e in EXAMPLES}
    assert {"shell", "python", "table"} <= kinds, kinds


@pytest.mark.parametrize(
    "readme",
    [
        "## Try it\n\n```bash\nfrobnicate --now  # a new command\n```\n",
        "## Commands\n\n| command | what |\n|---|---|\n| `aiorch frobnicate` | new |\n",
        "## Try it\n\n```python\nimport frobnicate\n```\n",
        "## Try it\n\n```\nsome diagram\n```\n",
    ],
)
def test_a_readme_example_nobody_handles_is_caught(readme: str) -> None:
    found = examples(readme)
    assert found
    assert all(next((h for h in HANDLERS if h.matches(e)), None) is None for e in found)
