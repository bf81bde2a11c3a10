"""Kimi-K2-Thinking latency through KimiClient (the guide's section 3).

    python scripts/testing/kimi_benchmark.py --requests 10 --concurrency 2

Prints min/avg/p50/p95/max latency and the errors by type; `--json` for machines. Without
KIMI_API_KEY or KIMI_OLLAMA_URL (or KIMI_BASE_URL) it says the benchmark is skipped, and exits 0.
The engine is `aiorch bench` (src/aiorch/bench/guide.py).
"""

from __future__ import annotations

from aiorch.bench.guide import kimi_benchmark

if __name__ == "__main__":
    kimi_benchmark(prog_name="kimi_benchmark.py")
