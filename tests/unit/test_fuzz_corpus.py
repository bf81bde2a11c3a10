"""The fuzz corpus replayed through the fuzz targets in the ordinary test run (no atheris
needed): the seeds, and every input a fuzzing run found to crash (fuzz/corpus/<target>/)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz.targets import TARGETS

CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus"
INPUTS = sorted((target, path) for target in TARGETS for path in (CORPUS / target).iterdir())


def test_every_target_has_seeds() -> None:
    assert {target for target, _ in INPUTS} == set(TARGETS)


@pytest.mark.parametrize(("target", "path"), INPUTS, ids=[f"{t}/{p.name}" for t, p in INPUTS])
def test_corpus_input(target: str, path: Path) -> None:
    TARGETS[target](path.read_bytes())
