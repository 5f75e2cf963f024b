"""LoginThrottle: failures from one address earn a doubling delay; success or time resets it."""

from __future__ import annotations

from dbguard.session.throttle import BASE_DELAY, FAILURE_WINDOW, MAX_DELAY, MAX_TRACKED_ADDRESSES, LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_delay_doubles_per_failure_up_to_the_cap() -> None:
    throttle = LoginThrottle(Clock())
    delays = [throttle.failure("10.0.0.1:5000") for _ in range(10)]
    assert delays[:4] == [BASE_DELAY, BASE_DELAY * 2, BASE_DELAY * 4, BASE_DELAY * 8]
    assert delays[-1] == MAX_DELAY
    assert delays == sorted(delays)


def test_addresses_are_independent_and_success_resets() -> None:
    throttle = LoginThrottle(Clock())
    for _ in range(5):
        throttle.failure("a")
    assert throttle.failure("b") == BASE_DELAY
    throttle.success("a")
    assert throttle.failures("a") == 0
    assert throttle.failure("a") == BASE_DELAY


def test_quiet_window_forgets_failures() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock)
    for _ in range(5):
        throttle.failure("a")
    clock.now += FAILURE_WINDOW + 1
    assert throttle.failure("a") == BASE_DELAY


def test_table_is_bounded() -> None:
    throttle = LoginThrottle(Clock())
    for i in range(MAX_TRACKED_ADDRESSES + 500):
        throttle.failure(f"addr-{i}")
    assert throttle.failures("addr-0") == 0  # the oldest entries were dropped
    assert throttle.failures(f"addr-{MAX_TRACKED_ADDRESSES + 499}") == 1
