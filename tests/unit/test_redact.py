"""`redact_url` and `redact_text`: user information and query values never survive; the rest
(scheme, host, port, path) does, so an operator can still tell which upstream is meant."""

from __future__ import annotations

import pytest

from aiorch.redact import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://ollama:11434", "http://ollama:11434"),
        ("https://api.moonshot.ai/v1", "https://api.moonshot.ai/v1"),
        ("http://user:pw-1@ollama:11434", "http://***@ollama:11434"),
        ("http://pw-1@ollama:11434/api", "http://***@ollama:11434/api"),
        ("https://user:pw-1@[::1]:8080/v1", "https://***@[::1]:8080/v1"),
        # A password holding an unescaped '/' or '@' is still hidden whole.
        ("http://user:p/w-1@host/v1", "http://***@host/v1"),
        ("http://user:p@w-1@host/v1", "http://***@host/v1"),
        ("https://host/v1?api_key=pw-1&x=2", "https://host/v1?api_key=***&x=***"),
        ("https://host/v1#pw-1", "https://host/v1"),
        # No scheme (a configuration error): the user information is found all the same.
        ("user:pw-1@host:11434", "***@host:11434"),
        ("ftp://user:pw-1@host", "ftp://***@host"),
        ("", ""),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "pw-1" not in redact_url(url)


def test_redact_text_masks_every_url_in_a_message() -> None:
    text = "InvalidURL('http://u:pw-1@h:99999/v1') while calling https://pw-2@other/x?k=pw-3"

    shown = redact_text(text)

    for secret in ("pw-1", "pw-2", "pw-3"):
        assert secret not in shown
    assert "http://***@h:99999/v1" in shown
    assert shown.startswith("InvalidURL(")
