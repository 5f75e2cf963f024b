"""The event loop's side of the journal writer: write-ahead waits without a Future per event.

Owns: handing a session's events to the writer (`record`), and calling a session back, on the
event loop, once the events it must wait for are durable or have failed. The writer thread
tells this link after every commit which ticket range it covered; the link wakes the loop
at most once per commit, however many sessions were waiting, and releases them in order.

`WriteAheadGate`: one per client connection (PostgreSQL and MySQL alike), the driver's side of
the write-ahead rule: it takes a session's new events, and while statement events are not yet
durable it holds every byte meant for the upstream, pausing the client's reading when too much
piles up; once they are durable it releases the bytes, or, when the store failed, has the
connection refuse the statement (`journal.on_store_failure: refuse`) or lets it through loudly.

Must not: decide what a failure means for a statement (the connection's settings do, per
`journal.on_store_failure`), know a wire protocol, or block the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from dbguard.journal import JournalUnavailable, JournalWriter
from dbguard.session.journal import SessionEvent, SessionJournal

log = logging.getLogger("dbguard.journal")
_runtime_log = logging.getLogger("dbguard.runtime")

__all__ = [
    "JOURNAL_REFUSAL", "MAX_HELD_FOR_JOURNAL", "DurableCallback", "EventSink", "GatedConnection", "JournalLink",
    "WriteAheadGate",
]

# Upstream bytes held while the journal makes a statement durable; beyond this the client's
# reading pauses until they have gone out (a client may pipeline COPY data behind its query).
MAX_HELD_FOR_JOURNAL: Final = 1024 * 1024
# What a client sees when its statement cannot be journaled (journal.on_store_failure: refuse).
JOURNAL_REFUSAL: Final = ("dbguard: the statement was not run: the journal cannot record it. "
                          "The session is closed; try again once the journal store is back")

# Called on the event loop: None once the events are durable, else why they are not.
DurableCallback = Callable[[str | None], None]


class EventSink(Protocol):
    """Where the sessions' events go: `JournalLink` (the writer thread) or
    `loop_journal.LoopJournal` (write-ahead segments on the event loop, appended by a child process)."""

    def record(self, events: Sequence[SessionEvent], on_durable: DurableCallback | None) -> bool:
        """Queue or write `events`. True: they are durable already and `on_durable` is not
        called; False: `on_durable`, when given, is called on the loop once they are durable
        (None) or could not be (the reason)."""

    async def settle(self) -> None:
        """Return once every event recorded so far is in the store (writes that go to the
        store directly, such as approvals, then follow them in the chain)."""

    def close(self) -> None: ...

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

    async def settle(self) -> None:
        """Nothing to wait for: a session's statement waits for its own commit before it goes on."""

    def record(self, events: Sequence[SessionEvent], on_durable: DurableCallback | None) -> bool:
        """Queue `events`; with `on_durable`, call it on the loop once they are all durable
        (None) or could not be written (the reason). Never durable at once: False."""
        try:
            first, last = self.writer.enqueue(events)
        except (JournalUnavailable, ValueError) as exc:
            # Closed, or an event that cannot be encoded: the caller hears it at once.
            if on_durable is None:
                log.error("journal.event_lost", extra={"error": str(exc), "events": len(events)})
            else:
                self._loop.call_soon(on_durable, str(exc))
            return False
        if on_durable is not None:
            self._waiters.append((first, last, on_durable))
        return False

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


class JournaledSession(Protocol):
    """What the gate reads of a session (PgSession, MysqlSession)."""

    @property
    def session_id(self) -> str: ...

    @property
    def journal(self) -> SessionJournal | None: ...


class GatedConnection(Protocol):
    """The connection a WriteAheadGate serves (runtime.pg_listener, runtime.mysql_listener)."""

    @property
    def closed(self) -> bool: ...

    @property
    def session(self) -> JournaledSession: ...

    @property
    def refuses_unjournaled(self) -> bool:
        """journal.on_store_failure is `refuse` (read when a failure happens: reloads apply)."""

    def release_upstream(self, data: bytes) -> None:
        """Write bytes the gate held to the upstream (if it is still open)."""

    def pause_client_for_journal(self) -> None: ...

    def resume_client_after_journal(self) -> None:
        """Resume reading from the client, unless something else still has it paused."""

    def refuse_unjournaled(self) -> None:
        """The statement cannot be journaled: tell the client in its protocol, close the session."""


class WriteAheadGate:
    """One connection's write-ahead: upstream bytes wait while journal events they depend on
    are made durable (`waits` of them outstanding). The hot paths test `waits` directly."""

    __slots__ = ("_conn", "_held", "_held_bytes", "_link", "_paused", "waits")

    def __init__(self, conn: GatedConnection, link: EventSink | None) -> None:
        self._conn = conn
        self._link = link
        self.waits = 0
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._paused = False

    def submit(self) -> None:
        """Hand the session's new journal events to the writer. When one of them is a
        statement, upstream writes are held until they are durable."""
        conn = self._conn
        journal = conn.session.journal
        link = self._link
        if journal is None or link is None:
            return
        events, ahead = journal.take()
        if not events:
            return
        if ahead and not conn.closed:
            self.waits += 1
            if link.record(events, self._durable):  # durable already (a local segment)
                self.waits -= 1
        else:
            link.record(events, None)

    def hold(self, data: bytes) -> None:
        self._held.append(data)
        self._held_bytes += len(data)
        if self._held_bytes > MAX_HELD_FOR_JOURNAL and not self._paused:
            self._paused = True
            self._conn.pause_client_for_journal()

    def _durable(self, failure: str | None) -> None:
        self.waits -= 1
        conn = self._conn
        if conn.closed:
            return
        if failure is not None:
            if conn.refuses_unjournaled:
                _runtime_log.error("journal.statement_refused",
                                   extra={"session": conn.session.session_id, "error": failure})
                self._held.clear()
                self._held_bytes = 0
                conn.refuse_unjournaled()
                return
            _runtime_log.error("journal.statement_unjournaled", extra={
                "session": conn.session.session_id, "error": failure,
                "effect": "forwarded without its journal event (journal.on_store_failure: allow)"})
        if self.waits == 0 and self._held:
            data = b"".join(self._held)
            self._held.clear()
            self._held_bytes = 0
            conn.release_upstream(data)
            if self._paused:
                self._paused = False
                conn.resume_client_after_journal()
