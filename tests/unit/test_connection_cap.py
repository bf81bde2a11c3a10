"""The connection cap's log line: said when the limit is first reached, then at most every
`LOG_EVERY` seconds with the count refused meanwhile (a flood must not flood the log too)."""

from __future__ import annotations

import logging

import pytest

from aiorch.server.protocol import LOG_EVERY, ConnectionCap


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_cap_warns_once_per_interval_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    cap = ConnectionCap(1000, clock=clock)
    with caplog.at_level(logging.WARNING, logger="aiorch.server.protocol"):
        for _ in range(50):
            cap.refused()
        clock.now += LOG_EVERY
        cap.refused()

    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert all("connection limit reached" in line and "1000" in line for line in lines)
    assert "refused 1 new" in lines[0]
    assert "refused 50 new" in lines[1]  # the 49 left unsaid, and this one
