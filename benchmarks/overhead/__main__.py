from __future__ import annotations

from benchmarks.overhead.run import main

main()
