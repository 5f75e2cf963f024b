"""The journal of a local sqlite store with `journal.sync: normal`: write-ahead to a segment file
at the end of every loop turn, appended to the store in large batches.

Owns: collecting every event the sessions record during one turn of the event loop, writing
them to this process's segment file (`journal/segments.py`) with one write() at the end of
that turn, telling the waiting sessions (a statement is forwarded once its event is in the
segment: it survives a crash of the proxy from then on, as a commit to sqlite's WAL without
fsync would), appending the segment's events to the store every INGEST_INTERVAL in one
transaction (with the segment's ingest mark in the same transaction, so nothing is appended
twice), deleting segments whose events are all in the store, and checkpointing sqlite's WAL
from a background thread so that the loop never waits for an fsync. Segments a killed proxy
left are recovered at start (and by every `dbguard journal` command).

Why this shape (docs/performance.md, "The journal's cost"): sqlite costs ~30 µs per event in
the small transactions one loop turn gives, ~8 µs in transactions of hundreds; a writer
thread made the loop and the thread fight over the GIL, which cost more than it saved. The
appends run on the loop, in time slices, and never wait for a lock (busy_timeout 0: retried).

While the store cannot be appended to (locked by another process, broken), events wait in the
segment and in memory; after INGEST_GIVE_UP_SECONDS of failures, or with MAX_BACKLOG events
waiting, new statements are refused (`journal.on_store_failure`) until it recovers.

Used only where that durability is what was asked for: sqlite, `sync: normal`. A PostgreSQL
store and `sync: full` go through the writer thread (`journal_link.JournalLink`). Must not: know
wire protocols or sessions' state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from dbguard.journal import ChainHasher, JournalEvent
from dbguard.journal.segments import SEGMENT_SUFFIX, Segment, frame, mark_name, recover_segments, segment_directory
from dbguard.journal.store import EncodedEvent, StoreError, encode_event
from dbguard.journal.store_sqlite import SqliteJournalStore
from dbguard.runtime.journal_link import DurableCallback

log = logging.getLogger("dbguard.journal")

__all__ = ["LoopJournal"]

# A segment is closed and a new one begun past this size; a closed segment is deleted once
# all its events are in the store.
SEGMENT_BYTES: Final = 64 * 1024 * 1024
# Events wait this long in the segment before they are appended to the store together; one
# transaction appends at most MAX_BATCH of them, the rest go in the next loop turn.
INGEST_INTERVAL: Final = 0.05
MAX_BATCH: Final = 2000
# Store failures (another process holds its write lock, it is broken): retried this often;
# after this long, new statements are refused.
INGEST_RETRY_SECONDS: Final = 0.05
INGEST_GIVE_UP_SECONDS: Final = 10.0
# Events waiting for the store, at most, before new statements are refused.
MAX_BACKLOG: Final = 500_000
# The background thread looks at the WAL this often, and checkpoints it into the database file
# once it has grown past WAL_CHECKPOINT_BYTES or CHECKPOINT_AT_LEAST seconds have passed.
CHECKPOINT_POLL: Final = 1.0
WAL_CHECKPOINT_BYTES: Final = 64 * 1024 * 1024
CHECKPOINT_AT_LEAST: Final = 60.0


class LoopJournal:
    """The event sink of every session of one process (see the module docstring)."""

    def __init__(self, path: Path, hasher: ChainHasher, loop: asyncio.AbstractEventLoop) -> None:
        self._store = SqliteJournalStore(path, fsync=False)  # recovery below may wait for a lock
        self._store.check_hasher(hasher)
        self._hasher = hasher
        self._loop = loop
        self._path = path
        self._directory = segment_directory(path)
        recover_segments(self._store, hasher, self._directory)
        self._store.set_busy_timeout(0)  # from now on, on the loop: a locked store is retried
        self._store.disable_auto_checkpoint()
        self._segment = self._new_segment()
        # This turn's events, framed, and who waits for them.
        self._framed: list[bytes] = []
        self._encoded: list[EncodedEvent] = []
        self._waiters: list[DurableCallback] = []
        self._flush_scheduled = False
        # Events in a segment, not yet in the store: (event, its segment, the segment's size
        # after it); segments closed for size, deleted once their events are in.
        self._backlog: deque[tuple[EncodedEvent, Segment, int]] = deque()
        self._retired: list[Segment] = []
        self._ingest_handle: asyncio.TimerHandle | asyncio.Handle | None = None
        self._failing_since: float | None = None
        self.failure: str | None = None  # why the store cannot be appended to, for a while now
        self._closed = False
        self._stop_checkpoints = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="dbguard-journal-checkpoint",
                                              daemon=True)
        self._checkpointer.start()

    def _new_segment(self) -> Segment:
        return Segment(self._directory, f"{time.time_ns():020d}-{os.getpid()}{SEGMENT_SUFFIX}")

    # -- the sessions' side --------------------------------------------------------------------

    def record(self, events: Sequence[JournalEvent], on_durable: DurableCallback | None) -> None:
        """Queue `events` for this turn's write; with `on_durable`, call it once they are in the
        segment (None) or could not be (the reason)."""
        refusal = self._refusal()
        if refusal is not None:
            if on_durable is not None:
                self._loop.call_soon(on_durable, refusal)
            else:
                log.error("journal.event_lost", extra={"error": refusal, "events": len(events)})
            return
        try:
            encoded = [encode_event(event) for event in events]
        except ValueError as exc:  # EncodingError: an event that cannot be encoded
            log.error("journal.event_lost", extra={"error": str(exc), "events": len(events)})
            if on_durable is not None:
                self._loop.call_soon(on_durable, str(exc))
            return
        self._encoded.extend(encoded)
        self._framed.extend(frame(e.payload) for e in encoded)
        if on_durable is not None:
            self._waiters.append(on_durable)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _refusal(self) -> str | None:
        if self._closed:
            return "the journal is closed"
        if self.failure is not None:
            return f"the journal store could not record the event: {self.failure}"
        if len(self._backlog) >= MAX_BACKLOG:
            return f"the journal store is {len(self._backlog)} events behind"
        return None

    async def settle(self) -> None:
        """Append every event recorded so far to the store now (as far as it can be): for
        writes that go to the store directly and must follow them in the chain (approvals)."""
        self._flush()
        while self._backlog and self._ingest():
            pass

    def close(self) -> None:
        """Write and append what is pending, delete the segment, close the store."""
        if self._closed:
            return
        self._flush()
        self._closed = True
        self._flush_scheduled = True  # no more flushes or appends from the loop
        if self._ingest_handle is not None:
            self._ingest_handle.cancel()
        deadline = time.monotonic() + INGEST_GIVE_UP_SECONDS
        while self._backlog and time.monotonic() < deadline:
            if not self._ingest():
                time.sleep(INGEST_RETRY_SECONDS)
        self._stop_checkpoints.set()
        self._checkpointer.join(5)
        if self._backlog:  # kept for the next start (or a `dbguard journal` command) to recover
            log.error("journal.segment_kept", extra={"events": len(self._backlog), "segment": str(self._segment.path)})
        else:
            with contextlib.suppress(StoreError, OSError):
                self._segment.remove()
                self._store.forget_mark(mark_name(self._segment.name))
            self._remove_retired()
            with contextlib.suppress(StoreError):
                self._store.checkpoint("TRUNCATE")
        self._segment.close()
        self._store.close()

    # -- the loop: segment writes --------------------------------------------------------------

    def _flush(self) -> None:
        """End of a loop turn: this turn's events to the segment in one write, then the waiters."""
        self._flush_scheduled = self._closed
        if not self._framed:
            return
        framed, encoded, waiters = self._framed, self._encoded, self._waiters
        self._framed, self._encoded, self._waiters = [], [], []
        segment = self._segment
        try:
            size = segment.append(b"".join(framed))
        except OSError as exc:
            reason = f"the journal could not write {segment.path}: {exc.strerror or exc}"
            log.error("journal.write_failed", extra={"events": len(encoded), "error": reason})
            for callback in waiters:
                self._call(callback, reason)
            return
        self._backlog.extend((event, segment, size) for event in encoded)
        if size >= SEGMENT_BYTES:
            self._retired.append(segment)
            self._segment = self._new_segment()
        if self._ingest_handle is None and not self._closed:
            self._ingest_handle = self._loop.call_later(INGEST_INTERVAL, self._ingest_turn)
        for callback in waiters:
            self._call(callback, None)

    @staticmethod
    def _call(callback: DurableCallback, reason: str | None) -> None:
        try:
            callback(reason)
        except Exception:  # one session's bug must not strand the others
            log.exception("journal.callback_failed")

    # -- the loop: appends to the store --------------------------------------------------------

    def _ingest_turn(self) -> None:
        """One slice of appending: a batch now; more in the next loop turn, or later."""
        self._ingest_handle = None
        if self._closed:
            return
        appended = self._ingest()
        if self._backlog:
            delay = 0.0 if appended and len(self._backlog) >= MAX_BATCH else (
                INGEST_INTERVAL if appended else INGEST_RETRY_SECONDS)
            self._ingest_handle = self._loop.call_later(delay, self._ingest_turn)
        else:
            self._remove_retired()

    def _ingest(self) -> bool:
        """Append the oldest waiting events of one segment in one transaction; False when the
        store refused (retry later)."""
        backlog = self._backlog
        segment = backlog[0][1]
        batch: list[EncodedEvent] = []
        end = 0
        for event, owner, size in backlog:
            if owner is not segment or len(batch) >= MAX_BATCH:
                break
            batch.append(event)
            end = size
        try:
            self._store.append_batch(batch, self._hasher, mark=(mark_name(segment.name), end))
        except StoreError as exc:
            now = time.monotonic()
            if self._failing_since is None:
                self._failing_since = now
            if now - self._failing_since >= INGEST_GIVE_UP_SECONDS and self.failure is None:
                self.failure = str(exc)
                log.error("journal.store_failed", extra={"error": str(exc), "waiting": len(backlog)})
            return False
        if self._failing_since is not None:
            log.warning("journal.store_recovered",
                        extra={"failed_seconds": round(time.monotonic() - self._failing_since, 1)})
            self._failing_since, self.failure = None, None
        for _ in batch:
            backlog.popleft()
        return True

    def _remove_retired(self) -> None:
        """Closed segments whose events are all in the store: deleted."""
        for segment in self._retired:
            with contextlib.suppress(StoreError, OSError):
                segment.remove()
                self._store.forget_mark(mark_name(segment.name))
        self._retired.clear()

    # -- the checkpoint thread -------------------------------------------------------------------

    def _checkpoint_loop(self) -> None:
        try:
            conn = sqlite3.connect(str(self._path), isolation_level=None, timeout=1.0, check_same_thread=False)
        except sqlite3.Error:
            log.exception("journal.checkpoint_failed")
            return
        wal = self._path.with_name(self._path.name + "-wal")
        last = time.monotonic()
        try:
            while not self._stop_checkpoints.wait(CHECKPOINT_POLL):
                try:
                    size = wal.stat().st_size
                except OSError:
                    size = 0
                if size < WAL_CHECKPOINT_BYTES and time.monotonic() - last < CHECKPOINT_AT_LEAST:
                    continue
                last = time.monotonic()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    log.warning("journal.checkpoint_failed", extra={"error": str(exc)})
        finally:
            conn.close()
