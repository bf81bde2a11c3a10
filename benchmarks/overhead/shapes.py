"""The requests measured: one query, its body straight to the upstream, and through aiorch."""

from __future__ import annotations

from benchmarks.overhead.generators import Shape

UPSTREAM_KEY = "sk-overhead-bench"
QWEN_MODEL = "qwen3-coder:30b"  # a model the mock serves; code queries route to Qwen

QUERY = "Write a Python function that reverses a linked list"
UPSTREAM_PATH = "/v1/chat/completions"
AIORCH_PATH = "/api/ai/query"
CHAT_PATH = "/v1/chat/completions"
# What aiorch sends Qwen for QUERY (src/aiorch/backends/openai_compat.py), with a unique tag.
DIRECT: Shape = (
    f'{{"model":"{QWEN_MODEL}","messages":[{{"role":"user","content":"{QUERY} (request ',
    ')"}],"max_tokens":4096,"temperature":0.7,"stream":false}',
)
MISS: Shape = (f'{{"query":"{QUERY} (request ', ')"}')
HIT: Shape = (f'{{"query":"{QUERY} (cached)', '"}')
# The same miss with its query type given: the request path without classification, so that
# builds whose routers differ can be compared on everything else.
TYPED_MISS: Shape = (f'{{"query":"{QUERY} (request ', ')","query_type":"code"}')
# /v1 names the service and asks for temperature 0, so that the answer is cacheable (the cache on
# /v1 serves deterministic requests only): a miss looks the cache up and stores the answer, as a
# miss on /api/ai/query does.
CHAT_MISS: Shape = (
    f'{{"model":"qwen","messages":[{{"role":"user","content":"{QUERY} (request ',
    ')"}],"temperature":0}',
)
CHAT_HIT: Shape = (
    f'{{"model":"qwen","messages":[{{"role":"user","content":"{QUERY} (cached)',
    '"}],"temperature":0}',
)
DIRECT_HEADERS = {"Content-Type": "application/json", "Authorization": f"Bearer {UPSTREAM_KEY}"}
AIORCH_HEADERS = {"Content-Type": "application/json"}
