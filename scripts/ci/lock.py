"""The dependency locks in requirements/: make them (`make lock`) and check them (`make lint`).

    python scripts/ci/lock.py compile --uv PATH [--upgrade]   write every lock
    python scripts/ci/lock.py check                            fail when a lock is stale or wrong
    python scripts/ci/lock.py digest                           print pyproject's declarations digest

`pyproject.toml` stays the one place where dependencies are declared, with honest lower bounds
for `pip install aiorch`. The locks pin every package, direct and transitive, with the hashes of
every file PyPI has for it, so that `make run` and `make test` install the same bits on every
machine, today and next year:

    requirements/runtime.txt    what `make run` installs: the dependencies, plus pip and the
                                build backend (the project is installed with --no-build-isolation)
    requirements/dev.txt        what `make test` installs: the above (same versions) plus `[dev]`
    requirements/lowest.txt     every direct runtime/otel/bench dependency at its declared lower
                                bound, the test tools as in dev.txt: `make test-lowest` runs the
                                unit tests on it, which keeps the lower bounds honest
    requirements/lock-tools.txt uv, which `make lock` installs in a throwaway virtualenv

The locks are universal (one file for every platform, markers decide) and resolved for
Python 3.11 against PyPI only, whatever the local pip configuration says. Each lock records
a digest of pyproject's dependency declarations; `check` fails when the digest is stale (the
declarations changed and nobody ran `make lock`) or when a direct requirement is not satisfied
by its pin (a lock edited by hand).

`compile` and `digest` need only the standard library; `check` needs `packaging`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Changing how the locks are made (inputs, Python version, resolution) must make them stale too.
RECIPE = "uv pip compile --universal --python-version 3.11 --generate-hashes; lowest-direct v1"
PYTHON_VERSION = "3.11"
DIGEST_LINE = "# pyproject-digest: "
RUNTIME, DEV, LOWEST, TOOLS = "runtime.txt", "dev.txt", "lowest.txt", "lock-tools.txt"
LOWEST_EXTRAS = ("otel", "bench")  # the optional parts whose lower bounds are tested too
SCRATCH = Path(".cache/lock")  # uv's inputs beside pyproject.toml, under the work tree
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)\s*(?:;\s*([^\\]+))?")


@dataclass(frozen=True)
class Project:
    root: Path
    table: dict[str, Any]

    @classmethod
    def load(cls, root: Path) -> Project:
        return cls(root, tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8")))

    @property
    def name(self) -> str:
        return str(self.table["project"]["name"])

    @property
    def dependencies(self) -> list[str]:
        return list(self.table["project"].get("dependencies", []))

    @property
    def extras(self) -> dict[str, list[str]]:
        return dict(self.table["project"].get("optional-dependencies", {}))

    @property
    def build_requires(self) -> list[str]:
        return list(self.table.get("build-system", {}).get("requires", []))

    def digest(self) -> str:
        declared = {
            "recipe": RECIPE,
            "requires-python": self.table["project"].get("requires-python"),
            "build-system.requires": sorted(self.build_requires),
            "dependencies": sorted(self.dependencies),
            "optional-dependencies": {k: sorted(v) for k, v in sorted(self.extras.items())},
        }
        text = json.dumps(declared, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    def extra_requirements(self, extra: str, seen: frozenset[str] = frozenset()) -> list[str]:
        """An extra's requirements, with the project's own extras (`aiorch[otel]`) expanded."""
        found: list[str] = []
        for requirement in self.extras.get(extra, []):
            own = re.fullmatch(rf"{re.escape(self.name)}\[([^\]]+)\]", requirement.strip())
            if own is None:
                found.append(requirement)
                continue
            for inner in (e.strip() for e in own.group(1).split(",")):
                if inner not in seen and inner != extra:
                    found += self.extra_requirements(inner, seen | {extra})
        return found

    def own_requirements(self, extra: str) -> list[str]:
        """An extra's requirements other than the project's own extras."""
        own = re.compile(rf"{re.escape(self.name)}\[")
        return [r for r in self.extras.get(extra, []) if not own.match(r.strip())]

    def build_tools(self) -> list[str]:
        # pip itself is pinned too: the Makefile upgrades the venv's pip from the lock.
        return ["pip", *self.build_requires]


# --- compile -------------------------------------------------------------------------------


def compile_locks(project: Project, uv: str, upgrade: bool) -> None:
    root = project.root
    (root / "requirements").mkdir(exist_ok=True)
    # Inputs live in the work tree (ignored by git), so that uv's "# via" notes name stable paths.
    scratch = root / SCRATCH
    scratch.mkdir(parents=True, exist_ok=True)
    build = _write(scratch / "build.in", project.build_tools())
    runtime, dev = f"requirements/{RUNTIME}", f"requirements/{DEV}"
    _uv(uv, root, ["pyproject.toml", build], runtime, upgrade)
    _uv(uv, root, ["pyproject.toml", build, "--extra", "dev", "-c", runtime], dev, upgrade)
    # The lowest lock: direct runtime and optional dependencies at their lower bounds; the
    # test tools exactly as in dev.txt, so that only the bounds under test differ.
    pins = parse_pins((root / dev).read_text(encoding="utf-8"))
    fixed = sorted(
        {_name(r) for r in project.own_requirements("dev")}
        | {_name(r) for r in project.build_tools()}
    )
    tools = _write(scratch / "tools.in", [f"{n}=={pins[n][0][0]}" for n in fixed if n in pins])
    extras = [arg for extra in LOWEST_EXTRAS for arg in ("--extra", extra)]
    # The lower bounds are re-read every time (a pin kept from the last run would hide a bound
    # that was lowered); the packages around them keep their pins.
    floors = project.dependencies + [
        r for e in LOWEST_EXTRAS for r in project.extra_requirements(e)
    ]
    fresh = [arg for name in sorted({_name(r) for r in floors}) for arg in ("-P", name)]
    lowest = ["pyproject.toml", tools, *extras, "--resolution", "lowest-direct", *fresh]
    _uv(uv, root, lowest, f"requirements/{LOWEST}", upgrade)
    _uv(uv, root, [_write(scratch / "lock-tools.in", ["uv"])], f"requirements/{TOOLS}", upgrade)
    digest = project.digest()
    for name in (RUNTIME, DEV, LOWEST):
        _stamp(root / "requirements" / name, digest)


def _write(path: Path, lines: Iterable[str]) -> str:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return (SCRATCH / path.name).as_posix()


def _uv(uv: str, root: Path, args: Sequence[str], output: str, upgrade: bool) -> None:
    argv = [
        uv, "pip", "compile", *args,
        "--universal", "--python-version", PYTHON_VERSION, "--generate-hashes",
        "--no-config",  # PyPI and nothing else: a developer's uv.toml must not change the lock
        "--custom-compile-command", "make lock",
        "--quiet", "-o", output,
    ]  # fmt: skip
    if upgrade:
        argv.append("--upgrade")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_INDEX", "UV_EXTRA_INDEX"))}
    subprocess.run(argv, check=True, env=env, cwd=root)


def _stamp(path: Path, digest: str) -> None:
    lines = [
        ln for ln in path.read_text(encoding="utf-8").splitlines() if not ln.startswith(DIGEST_LINE)
    ]
    header = 0
    while header < len(lines) and lines[header].startswith("#"):
        header += 1
    lines.insert(header, f"{DIGEST_LINE}{digest}  (of pyproject.toml's dependencies; `make lock`)")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- check ---------------------------------------------------------------------------------


def parse_pins(text: str) -> dict[str, list[tuple[str, str | None]]]:
    """name -> [(version, marker)]: a universal lock may pin one name twice, under two markers."""
    pins: dict[str, list[tuple[str, str | None]]] = {}
    for line in text.splitlines():
        found = PIN.match(line)
        if found:
            marker = found.group(3).strip() if found.group(3) else None
            pins.setdefault(_canonical(found.group(1)), []).append((found.group(2), marker))
    return pins


def recorded_digest(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith(DIGEST_LINE):
            return line[len(DIGEST_LINE) :].split()[0]
    return None


def check(project: Project) -> list[str]:
    """Every problem found, in words that say what to do; empty when the locks are right."""
    folder = project.root / "requirements"
    runtime = list(project.dependencies) + project.build_tools()
    dev = runtime + project.extra_requirements("dev")
    lowest = runtime + [r for extra in LOWEST_EXTRAS for r in project.extra_requirements(extra)]
    problems: list[str] = []
    texts: dict[str, str] = {}
    for name, direct in ((RUNTIME, runtime), (DEV, dev), (LOWEST, lowest)):
        path = folder / name
        if not path.is_file():
            problems.append(f"requirements/{name} is missing: run `make lock`")
            continue
        texts[name] = text = path.read_text(encoding="utf-8")
        if recorded_digest(text) != project.digest():
            problems.append(
                f"requirements/{name} was made from other dependency declarations than "
                "pyproject.toml's: run `make lock`"
            )
        problems += [f"requirements/{name}: {p}" for p in unsatisfied(direct, parse_pins(text))]
    if LOWEST in texts:
        floors = project.dependencies + [
            r for e in LOWEST_EXTRAS for r in project.extra_requirements(e)
        ]
        problems += [
            f"requirements/{LOWEST}: {p}"
            for p in above_the_floor(floors, parse_pins(texts[LOWEST]))
        ]
    if RUNTIME in texts and DEV in texts:
        problems += differing(parse_pins(texts[RUNTIME]), parse_pins(texts[DEV]))
    if not (folder / TOOLS).is_file():
        problems.append(f"requirements/{TOOLS} is missing: run `make lock`")
    return problems


def unsatisfied(
    requirements: Iterable[str], pins: dict[str, list[tuple[str, str | None]]]
) -> list[str]:
    from packaging.markers import Marker
    from packaging.requirements import Requirement

    problems = []
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue  # not for this platform: nothing to check here
        name = _canonical(requirement.name)
        here = [v for v, m in pins.get(name, []) if m is None or Marker(m).evaluate()]
        if not here:
            problems.append(f"{requirement.name} (declared {text!r}) has no pin: run `make lock`")
        elif not requirement.specifier.contains(here[0], prereleases=True):
            problems.append(
                f"{requirement.name} is pinned at {here[0]}, outside the declared {text!r}: "
                "run `make lock`"
            )
    return problems


def differing(
    runtime: dict[str, list[tuple[str, str | None]]], dev: dict[str, list[tuple[str, str | None]]]
) -> list[str]:
    """The tests must run what `make run` runs: every runtime pin has its version in dev.txt
    (the markers may differ: a dev tool may need unconditionally what the service needs only
    on some Pythons)."""
    problems = []
    for name, pinned in sorted(runtime.items()):
        versions = sorted({v for v, _ in pinned})
        if sorted({v for v, _ in dev.get(name, [])}) != versions:
            problems.append(
                f"{name} is {', '.join(versions)} in requirements/{RUNTIME} but "
                f"{', '.join(v for v, _ in dev.get(name, [])) or 'missing'} in "
                f"requirements/{DEV}: run `make lock`"
            )
    return problems


def above_the_floor(
    requirements: Iterable[str], pins: dict[str, list[tuple[str, str | None]]]
) -> list[str]:
    """In the lowest lock every direct requirement sits at its declared lower bound; if the
    resolver had to go higher (another package needs more), the bound is not what is tested."""
    from packaging.markers import Marker
    from packaging.requirements import Requirement
    from packaging.version import Version

    problems = []
    for text in requirements:
        requirement = Requirement(text)
        floors = [s.version for s in requirement.specifier if s.operator == ">="]
        if not floors or (requirement.marker is not None and not requirement.marker.evaluate()):
            continue
        for version, marker in pins.get(_canonical(requirement.name), []):
            if marker is not None and not Marker(marker).evaluate():
                continue  # a fork for other Pythons or platforms, where the floor may not exist
            if Version(version) != Version(floors[0]):
                problems.append(
                    f"{requirement.name} is declared {text!r} but the lowest resolution is "
                    f"{version} (another package needs it): raise the bound in pyproject.toml"
                )
    return problems


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _name(requirement: str) -> str:
    found = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert found is not None, requirement
    return _canonical(found.group(0))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    sub = parser.add_subparsers(dest="command", required=True)
    compile_ = sub.add_parser("compile", help="write every lock in requirements/")
    compile_.add_argument("--uv", required=True, help="the uv executable")
    compile_.add_argument("--upgrade", action="store_true", help="move every pin to the newest")
    sub.add_parser("check", help="fail when a lock disagrees with pyproject.toml")
    sub.add_parser("digest", help="print the digest of pyproject's dependency declarations")
    args = parser.parse_args(argv)
    project = Project.load(args.root)
    if args.command == "digest":
        print(project.digest())
        return 0
    if args.command == "compile":
        compile_locks(project, args.uv, args.upgrade)
        return 0
    problems = check(project)
    for problem in problems:
        print(f"lock check: {problem}", file=sys.stderr)
    if not problems:
        print("lock check: requirements/ agrees with pyproject.toml")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
