"""Made-up log probabilities, the same for the same token at the same place.

OpenAI's entries are `{"token", "logprob", "bytes", "top_logprobs": [...]}`; Ollama's have the
same fields. The chosen token always has the highest probability among its `top_logprobs`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from aiorch.mock.words import VOCABULARY


def _logprob(token: str, position: int) -> float:
    digest = hashlib.blake2b(f"{position}\x1f{token}".encode(), digest_size=2).digest()
    return -round(int.from_bytes(digest, "big") / 65535 * 2.0, 4)  # in [-2, 0]


def entry(token: str, position: int, top: int) -> dict[str, Any]:
    chosen = _logprob(token, position)
    alternatives = []
    for rank in range(1, top):
        other = VOCABULARY[(position * 7 + rank) % len(VOCABULARY)]
        alternatives.append(
            {
                "token": other,
                "logprob": round(chosen - rank - 0.5, 4),
                "bytes": list(other.encode()),
            }
        )
    head = {"token": token, "logprob": chosen, "bytes": list(token.encode())}
    return {**head, "top_logprobs": [head, *alternatives] if top else []}


def openai_logprobs(pieces: tuple[str, ...], top: int, start: int = 0) -> list[dict[str, Any]]:
    return [entry(piece, start + i, top) for i, piece in enumerate(pieces)]
