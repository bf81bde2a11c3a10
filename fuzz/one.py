"""One fuzz target under atheris: `python -m fuzz.one TARGET [libFuzzer options] [corpus dirs]`.

`make fuzz` (fuzz/__main__.py) starts this once per target; run it by hand to fuzz one target
for longer, e.g. `python -m fuzz.one sse -max_total_time=600 /tmp/work fuzz/corpus/sse`.
"""

from __future__ import annotations

import sys


def main() -> None:
    import atheris  # type: ignore[import-untyped]

    # Our modules report the branches they take, which is what guides the fuzzer (msgspec is C:
    # its own branches are not seen, its inputs and outputs are). Instrumenting everything
    # loaded instead took a minute per start.
    with atheris.instrument_imports(include=["aiorch", "fuzz"]):
        from fuzz.targets import TARGETS

    name = sys.argv.pop(1)
    atheris.Setup(sys.argv, TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
