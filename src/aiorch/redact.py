"""Secrets out of URLs before a URL is shown: in `/readyz`, the start-up banner, configuration
errors, logs, traces and reprs.

A URL may carry a secret in two places: its user information (`http://user:password@host`,
`https://TOKEN@host`) and its query (`?api_key=...`). Both are masked whole: a user name alone can
be the secret, and a query parameter's name does not tell whether its value is one. What is left
(scheme, host, port, path) is what an operator needs to tell which upstream is meant.

Never raises: it runs on configuration errors, where the URL is by definition malformed, so it
works on the text rather than through a URL parser (which rejects some of those inputs).
"""

from __future__ import annotations

import re

MASK = "***"
# In free text (an exception's message), anything that looks like a URL.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


def redact_url(url: str) -> str:
    """`url` with its user information and query values replaced by `***`.

    >>> redact_url("http://user:pw@ollama:11434/v1?key=abc&x=1#frag")
    'http://***@ollama:11434/v1?key=***&x=***'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:  # no scheme: what follows is authority (and perhaps path), as in "user:pw@host"
        scheme, rest = "", url
    rest, _, _ = rest.partition("#")  # a fragment never reaches the server; nothing to show
    before_query, question, query = rest.partition("?")
    # The last '@' before the query ends the user information, even where a password holds a
    # '/' or '@' it should have escaped: better to hide part of a path than part of a password.
    if "@" in before_query:
        before_query = MASK + "@" + before_query.rpartition("@")[2]
    if question:
        names = (part.partition("=")[0] for part in query.split("&"))
        query = "&".join(f"{name}={MASK}" for name in names if name)
    return (scheme + sep if sep else "") + before_query + (question + query if question else "")


def redact_text(text: str) -> str:
    """`text` with every URL in it redacted (for exception messages, which may quote one)."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group()), text)


__all__ = ["redact_text", "redact_url"]
