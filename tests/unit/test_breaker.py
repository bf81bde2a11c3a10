"""The circuit breaker as a state machine, on an injected clock: no loop, no sleeping."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiorch.breaker import BreakerState, CircuitBreaker
from aiorch.config import BreakerSettings, load_settings
from aiorch.errors import ConfigError

OPEN, HALF_OPEN, CLOSED = BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(**settings: object) -> tuple[CircuitBreaker, Clock, list[BreakerState]]:
    clock = Clock()
    changes: list[BreakerState] = []
    b = CircuitBreaker(BreakerSettings(**settings), clock=clock, on_change=changes.append)  # type: ignore[arg-type]
    clock.now += 3600.0  # so that calls of any length may have started since
    return b, clock, changes


def calls(b: CircuitBreaker, clock: Clock, *outcomes: str, seconds: float = 0.1) -> None:
    """One call per letter, each `seconds` long, each ending 10 ms after the one before (they
    overlap): S succeeds, F fails."""
    for outcome in outcomes:
        assert b.acquire()
        clock.now += 0.01
        if outcome == "S":
            b.on_success(seconds)
        else:
            b.on_failure(seconds)


def opened(**settings: object) -> tuple[CircuitBreaker, Clock, list[BreakerState]]:
    """A breaker opened by 20 failed calls, its clock at the moment it opened."""
    b, clock, changes = breaker(**settings)
    calls(b, clock, *"F" * 20)
    assert b.state is OPEN
    return b, clock, changes


# ---------------------------------------------------------------------------- closed: the trip


def test_a_failure_rate_opens_it_only_with_enough_calls_in_the_window() -> None:
    b, clock, changes = breaker(minimum_calls=20, failure_rate=0.5, window_seconds=10.0)
    calls(b, clock, *"F" * 19)
    assert b.state is CLOSED  # every call failed, but 19 calls are no evidence yet
    assert b.acquire()
    calls(b, clock, "F")
    assert b.state is OPEN
    assert changes == [OPEN]
    assert not b.acquire()


def test_half_the_calls_failing_opens_it_and_fewer_do_not() -> None:
    b, clock, _ = breaker(minimum_calls=20, failure_rate=0.5)
    calls(b, clock, *"SSF" * 30)  # a third failing, over and over
    assert b.state is CLOSED
    b, clock, _ = breaker(minimum_calls=20, failure_rate=0.5)
    calls(b, clock, *"SF" * 10)
    assert b.state is OPEN


def test_failures_that_end_together_do_not_open_it_when_most_calls_succeed() -> None:
    # Hung calls reaching one deadline at the same instant: ten failures in a row.
    b, clock, _ = breaker()
    calls(b, clock, *"S" * 30, *"F" * 10, *"S" * 10)
    assert b.state is CLOSED


def test_the_window_slides_old_outcomes_out() -> None:
    b, clock, _ = breaker(minimum_calls=20, failure_rate=0.5, window_seconds=10.0)
    calls(b, clock, *"F" * 15)
    clock.now += 11.0  # those fifteen are out of the window now
    calls(b, clock, *"S" * 14, *"F" * 5)
    assert b.state is CLOSED  # 5 of 19 calls in the window: neither enough nor half
    calls(b, clock, *"F" * 6)
    assert b.state is CLOSED  # 11 of 25 failed
    calls(b, clock, *"F" * 3)
    assert b.state is OPEN  # 14 of 28


def test_slow_calls_open_it_on_their_own_rate() -> None:
    b, clock, _ = breaker(slow_call_seconds=5.0, slow_call_rate=0.8, minimum_calls=20)
    calls(b, clock, *"S" * 5, seconds=0.1)
    calls(b, clock, *"S" * 15, seconds=6.0)
    assert b.state is CLOSED  # 15 of 20 slow: 75 %, every one of them a success
    calls(b, clock, *"S" * 4, seconds=5.0)
    assert b.state is CLOSED  # 19 of 24
    calls(b, clock, "S", seconds=5.0)
    assert b.state is OPEN  # 20 of 25 took at least 5 s: 80 %


def test_slow_calls_count_for_nothing_unless_configured() -> None:
    b, clock, _ = breaker()
    calls(b, clock, *"S" * 40, seconds=300.0)
    assert b.state is CLOSED


def test_the_consecutive_count_is_an_option_reset_by_a_success() -> None:
    b, clock, changes = breaker(consecutive_failures=3)
    calls(b, clock, "F", "F", "S", "F", "F")
    assert b.state is CLOSED
    calls(b, clock, "F")
    assert b.state is OPEN
    assert changes == [OPEN]


def test_a_disabled_breaker_admits_everything_and_never_changes() -> None:
    b, clock, changes = breaker(enabled=False)
    calls(b, clock, *"F" * 100)
    b.on_probe(False)
    assert b.state is CLOSED
    assert b.acquire()
    assert changes == []


# ---------------------------------------------------------------------------- open, by time


def test_reading_changes_nothing_and_the_timer_turns_it_half_open() -> None:
    b, clock, changes = opened(reset_seconds=30.0)
    assert b.retry_after() == pytest.approx(30.0)
    assert b.next_deadline() == pytest.approx(clock.now + 30.0)
    clock.now += 120.0  # long past reset_seconds, and nobody called
    assert b.state is OPEN  # a read is not a transition
    assert b.retry_after() == 0.0
    assert changes == [OPEN]
    b.advance()  # what the supervisor's timer does at the deadline
    assert b.state is HALF_OPEN
    assert changes == [OPEN, HALF_OPEN]  # the gauge hears of it then, not at the next read


def test_advance_before_the_deadline_does_nothing() -> None:
    b, clock, changes = opened(reset_seconds=30.0)
    clock.now += 29.9
    b.advance()
    assert b.state is OPEN
    assert changes == [OPEN]


def test_a_failed_probe_does_not_lengthen_the_open_period() -> None:
    b, clock, changes = opened(reset_seconds=30.0)
    deadline = b.next_deadline()
    for _ in range(14):  # a probe every two seconds, all inside the outage
        clock.now += 2.0
        b.on_probe(False)
        assert b.state is OPEN
    assert b.next_deadline() == deadline
    clock.now += 2.0
    b.advance()
    assert b.state is HALF_OPEN
    assert changes == [OPEN, HALF_OPEN]


def test_late_failures_of_calls_admitted_before_it_opened_do_not_lengthen_it() -> None:
    b, clock, _ = breaker(reset_seconds=30.0)
    assert b.acquire()  # a call that will hang
    start = clock.now
    calls(b, clock, *"F" * 20)
    deadline = b.next_deadline()
    clock.now += 10.0
    b.on_failure(clock.now - start)  # the hang reaches its deadline
    assert b.next_deadline() == deadline


# ---------------------------------------------------------------------------- half-open


def test_half_open_admits_a_few_trial_calls_and_their_successes_close_it() -> None:
    b, clock, changes = opened(reset_seconds=30.0, half_open_calls=3)
    clock.now += 30.0
    assert [b.acquire() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.5
    for _ in range(2):
        b.on_success(0.5)
    assert b.state is HALF_OPEN
    b.on_success(0.5)
    assert b.state is CLOSED
    assert changes == [OPEN, HALF_OPEN, CLOSED]
    assert all(b.acquire() for _ in range(10))


def test_a_trial_failure_opens_it_again_for_a_full_pause() -> None:
    b, clock, changes = opened(reset_seconds=30.0)
    clock.now += 30.0
    assert b.acquire()
    clock.now += 1.0
    b.on_failure(1.0)
    assert b.state is OPEN
    assert b.retry_after() == pytest.approx(30.0)
    assert changes == [OPEN, HALF_OPEN, OPEN]


def test_a_released_trial_gives_its_permit_back() -> None:
    b, clock, _ = opened(reset_seconds=30.0, half_open_calls=1)
    clock.now += 30.0
    assert b.acquire()
    assert not b.acquire()
    clock.now += 0.2
    b.on_release(0.2)  # cancelled, or refused for its own content: no verdict
    assert b.state is HALF_OPEN
    assert b.acquire()


def test_trials_that_never_report_back_do_not_wedge_it() -> None:
    b, clock, _ = opened(reset_seconds=30.0, half_open_calls=1)
    clock.now += 30.0
    assert b.acquire()  # its caller vanishes without a word
    assert not b.acquire()
    clock.now += 30.0
    b.advance()
    assert b.acquire()


def test_a_hang_from_before_the_outage_cannot_reopen_a_half_open_breaker() -> None:
    b, clock, _ = breaker(reset_seconds=30.0)
    assert b.acquire()
    start = clock.now
    calls(b, clock, *"F" * 20)
    clock.now += 30.0
    b.advance()
    assert b.state is HALF_OPEN
    b.on_failure(clock.now - start)  # it started while closed: not a trial
    assert b.state is HALF_OPEN


# ---------------------------------------------------------------------------- active probes


def test_probe_successes_turn_it_half_open_then_close_it_without_any_call() -> None:
    b, clock, changes = opened(reset_seconds=30.0, half_open_calls=3)
    clock.now += 2.0
    b.on_probe(True)
    assert b.state is HALF_OPEN
    for _ in range(2):
        clock.now += 2.0
        b.on_probe(True)
    assert b.state is HALF_OPEN
    clock.now += 2.0
    b.on_probe(True)
    assert b.state is CLOSED
    assert changes == [OPEN, HALF_OPEN, CLOSED]


def test_a_probe_success_lets_user_calls_try_at_once() -> None:
    b, clock, _ = opened(reset_seconds=30.0, half_open_calls=3)
    clock.now += 2.0
    b.on_probe(True)
    assert b.acquire()  # 28 s before the timer would have allowed it
    clock.now += 0.1
    b.on_success(0.1)
    b.on_probe(True)
    assert b.acquire()
    clock.now += 0.1
    b.on_success(0.1)
    assert b.state is CLOSED


def test_a_failed_probe_reopens_a_half_open_breaker() -> None:
    b, clock, changes = opened(reset_seconds=30.0)
    clock.now += 2.0
    b.on_probe(True)
    clock.now += 2.0
    b.on_probe(False)
    assert b.state is OPEN
    assert changes == [OPEN, HALF_OPEN, OPEN]


def test_a_probe_verdict_means_nothing_to_a_closed_breaker() -> None:
    b, _, changes = breaker()
    b.on_probe(False)
    b.on_probe(True)
    assert b.state is CLOSED
    assert changes == []


# ---------------------------------------------------------------------------- sharing


def test_adopting_another_replicas_verdicts() -> None:
    b, clock, changes = breaker(reset_seconds=30.0)
    heard: list[tuple[BreakerState, bool]] = []
    b.listen(lambda state, adopted: heard.append((state, adopted)))
    b.adopt(HALF_OPEN, 30.0)
    assert b.state is CLOSED  # half-open means something only to an open breaker
    b.adopt(OPEN, 12.0)
    assert b.state is OPEN
    assert b.retry_after() == pytest.approx(12.0)
    b.adopt(OPEN, 5.0)
    assert b.retry_after() == pytest.approx(12.0)  # never shortened by an older verdict
    b.adopt(HALF_OPEN, 30.0)  # the other replica's probe succeeded
    assert b.state is HALF_OPEN
    b.adopt(CLOSED, 30.0)
    assert b.state is CLOSED
    assert changes == [OPEN, HALF_OPEN, CLOSED]
    assert heard == [(OPEN, True), (HALF_OPEN, True), (CLOSED, True)]
    clock.now += 1.0
    calls(b, clock, *"F" * 20)
    assert heard[-1] == (OPEN, False)  # its own


# ---------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("failure_rate", "0"),
        ("failure_rate", "1.5"),
        ("minimum_calls", "0"),
        ("half_open_calls", "0"),
        ("probe_jitter", "1"),
        ("window_seconds", "0"),
    ],
)
def test_bad_breaker_settings_stop_start_up_naming_the_key(
    tmp_path: Path, key: str, value: str
) -> None:
    config = tmp_path / "aiorch.toml"
    config.write_text(f"[breaker]\n{key} = {value}\n")
    with pytest.raises(ConfigError, match=f"breaker.{key}"):
        load_settings({}, config)


def test_breaker_settings_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "aiorch.toml"
    config.write_text("[breaker]\nminimum_calls = 5\nslow_call_seconds = 20\nprobe_interval = 0\n")
    breaker = load_settings({}, config).breaker
    assert (breaker.minimum_calls, breaker.slow_call_seconds) == (5, 20.0)
    assert breaker.probe_interval == 0.0
    assert breaker.failure_rate == 0.5  # the rest keep their defaults


def test_a_disabled_breaker_adopts_nothing_either() -> None:
    b, _, changes = breaker(enabled=False)
    b.adopt(OPEN, 30.0)
    assert b.state is CLOSED
    assert changes == []
