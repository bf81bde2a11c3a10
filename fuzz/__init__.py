"""Coverage-guided fuzzing (atheris) of what parses untrusted bytes: request bodies, and the SSE
and NDJSON streams the backends read. `make fuzz` runs each target for a bounded time."""
