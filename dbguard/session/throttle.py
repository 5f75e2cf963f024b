"""Slows down repeated authentication failures from one client address.

Owns: the per-address failure count and the delay it earns. Pure (the clock is injected),
bounded (the table never holds more than MAX_TRACKED_ADDRESSES entries), shared by every
listener of a process.

Each failure within FAILURE_WINDOW doubles the delay before the failure is reported, from
BASE_DELAY up to MAX_DELAY; a success or a quiet window resets the address. The first failure
is already delayed a little so that a guessing script gets no fast "wrong" answers.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

BASE_DELAY = 0.25
MAX_DELAY = 8.0
FAILURE_WINDOW = 300.0
# An attacker rotating source addresses must not grow memory without bound.
MAX_TRACKED_ADDRESSES = 10_000


class LoginThrottle:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def failure(self, address: str) -> float:
        """Record a failure; return how long to wait before answering it."""
        now = self._clock()
        count, last = self._failures.pop(address, (0, now))
        if now - last > FAILURE_WINDOW:
            count = 0
        count += 1
        self._failures[address] = (count, now)
        while len(self._failures) > MAX_TRACKED_ADDRESSES:
            self._failures.popitem(last=False)
        return float(min(MAX_DELAY, BASE_DELAY * (2 ** (count - 1))))

    def success(self, address: str) -> None:
        self._failures.pop(address, None)

    def failures(self, address: str) -> int:
        entry = self._failures.get(address)
        return entry[0] if entry else 0
