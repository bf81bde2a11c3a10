"""`python -m fuzz` (`make fuzz`): each target under atheris for a bounded time, then a summary.

Every target starts from its seed corpus (fuzz/corpus/<target>/, read only: what the fuzzer
finds goes to a scratch directory) and runs for `--seconds`. A crash (an exception the target
does not allow, see fuzz/targets.py) stops that target and is saved under results/fuzz/; copy it
into fuzz/corpus/<target>/ and add a test for it, so that the ordinary test run replays it
(tests/unit/test_fuzz_corpus.py). Exits non-zero if any target crashed.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
ARTIFACTS = REPO / "results" / "fuzz"
STATUS = re.compile(r"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/")


@click.command()
@click.option("--seconds", default=60, show_default=True, help="Per target.")
@click.option(
    "--target", "targets", multiple=True, type=click.Choice(sorted(TARGETS)), help="Default: all."
)
def main(seconds: int, targets: tuple[str, ...]) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    rows, crashed = [], False
    for name in targets or tuple(TARGETS):
        seeds = ROOT / "corpus" / name
        with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as scratch:
            started = time.monotonic()
            click.echo(f"fuzzing {name} for {seconds} s ({len(list(seeds.iterdir()))} seeds)")
            run = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "fuzz.one",
                    name,
                    f"-max_total_time={seconds}",
                    f"-artifact_prefix={ARTIFACTS}/{name}-",
                    "-print_final_stats=1",
                    "-rss_limit_mb=2048",
                    scratch,
                    str(seeds),
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
                errors="replace",
                check=False,
            )
            elapsed = time.monotonic() - started
            found = len(list(Path(scratch).iterdir()))
        log = run.stderr
        (ARTIFACTS / f"{name}.log").write_text(log)
        status = STATUS.findall(log)
        runs, cov, ft, _ = status[-1] if status else ("0", "?", "?", "?")
        ok = run.returncode == 0
        crashed |= not ok
        rows.append((name, elapsed, int(runs), cov, ft, found, "clean" if ok else "CRASH"))
        if not ok:
            click.echo(log[-4000:], err=True)
    click.echo(
        f"\n{'target':8} {'seconds':>7} {'runs':>10} {'cov':>6} {'ft':>6} {'new':>5}  result"
    )
    for name, elapsed, runs, cov, ft, found, result in rows:
        click.echo(f"{name:8} {elapsed:7.0f} {runs:10d} {cov:>6} {ft:>6} {found:5d}  {result}")
    click.echo(f"(cov: code edges reached; ft: features; new: inputs found; logs in {ARTIFACTS})")
    if crashed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
