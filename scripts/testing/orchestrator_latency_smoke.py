"""AIOrchestrator latency with external clients disabled (the guide's section 4).

    python scripts/testing/orchestrator_latency_smoke.py --requests 10

Backends are forced offline whatever the environment says. Prints each request's time, then the
mean, p50 and p95; no asserts. The engine is `aiorch bench` (src/aiorch/bench/guide.py).
"""

from __future__ import annotations

from aiorch.bench.guide import latency_smoke

if __name__ == "__main__":
    latency_smoke(prog_name="orchestrator_latency_smoke.py")
