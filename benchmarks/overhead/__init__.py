"""What aiorch adds to every call: the same requests straight to the upstream and through aiorch.

    python -m benchmarks.overhead [--duration 5] [--json overhead.json]

See `docs/benchmarks.md` for the method and how to read the table.
"""
