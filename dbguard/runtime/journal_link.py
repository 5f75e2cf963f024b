"""The event loop's side of the journal writer: write-ahead waits without a Future per event.

Owns: handing a session's events to the writer (`record`), and calling a session back, on the
event loop, once the events it must wait for are durable or have failed. The writer thread
tells this link after every commit which ticket range it covered; the link wakes the loop
at most once per commit, however many sessions were waiting, and releases them in order.

Must not: decide what a failure means for a statement (the connection does, per
`journal.on_store_failure`), or block the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

from dbguard.journal import JournalEvent, JournalUnavailable, JournalWriter

log = logging.getLogger("dbguard.journal")

__all__ = ["DurableCallback", "JournalLink"]

# Called on the event loop: None once the events are durable, else why they are not.
DurableCallback = Callable[[str | None], None]
# Failed ticket ranges remembered for waiters not yet released; older ones are forgotten.
_MAX_FAILURES: Final = 1000


class JournalLink:
    """One per process and event loop, shared by every listener's sessions."""

    def __init__(self, writer: JournalWriter, loop: asyncio.AbstractEventLoop) -> None:
        self.writer = writer
        self._loop = loop
        self._waiters: deque[tuple[int, int, DurableCallback]] = deque()  # (first, last, callback)
        self._lock = threading.Lock()
        self._durable_through = 0  # every ticket up to here has been committed or has failed
        self._failures: deque[tuple[int, int, str]] = deque()
        self._wake_pending = False
        writer.add_commit_listener(self._on_commit)

    def close(self) -> None:
        self.writer.remove_commit_listener(self._on_commit)

    def record(self, events: Sequence[JournalEvent], on_durable: DurableCallback | None) -> None:
        """Queue `events`; with `on_durable`, call it on the loop once they are all durable
        (None) or could not be written (the reason)."""
        try:
            first, last = self.writer.enqueue(events)
        except (JournalUnavailable, ValueError) as exc:
            # Closed, or an event that cannot be encoded: the caller hears it at once.
            if on_durable is None:
                log.error("journal.event_lost", extra={"error": str(exc), "events": len(events)})
            else:
                self._loop.call_soon(on_durable, str(exc))
            return
        if on_durable is not None:
            self._waiters.append((first, last, on_durable))

    # -- the writer thread -------------------------------------------------------------------

    def _on_commit(self, first: int, last: int, failure: str | None) -> None:
        with self._lock:
            if failure is not None:
                self._failures.append((first, last, failure))
                if len(self._failures) > _MAX_FAILURES:
                    self._failures.popleft()
            self._durable_through = max(self._durable_through, last)
            if self._wake_pending:
                return
            self._wake_pending = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(self._release)

    # -- the event loop ----------------------------------------------------------------------

    def _release(self) -> None:
        with self._lock:
            self._wake_pending = False
            through = self._durable_through
            failures = list(self._failures) if self._failures else None
            if failures is not None and (not self._waiters or self._waiters[0][0] > failures[-1][1]):
                self._failures.clear()
        waiters = self._waiters
        while waiters and waiters[0][1] <= through:
            first, last, callback = waiters.popleft()
            reason = None
            if failures is not None:
                for failed_first, failed_last, why in failures:
                    if failed_first <= last and first <= failed_last:
                        reason = why
                        break
            try:
                callback(reason)
            except Exception:  # one session's bug must not strand the others
                log.exception("journal.callback_failed")
