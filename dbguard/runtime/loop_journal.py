"""Journal commits on the event loop itself, for a local sqlite store with `journal.sync: normal`.

Owns: collecting every event the sessions record during one turn of the event loop and
appending them to the sqlite store in one transaction at the end of that turn (group commit
without a thread: no hand-off to a writer thread and back for every statement), telling the
waiting sessions, retrying while another process holds the store's write lock, and
checkpointing the sqlite WAL from a background thread so that the loop never waits for an
fsync (with `synchronous=NORMAL`, commits write to the WAL without one; checkpoints do).

Used only where a commit cannot block the loop for long: sqlite, `sync: normal`. A PostgreSQL
store (a network round trip per commit) and `sync: full` (an fsync per commit) go through the
writer thread (`journal_link.JournalLink`). Must not: know wire protocols or sessions' state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from dbguard.journal import ChainHasher, JournalEvent
from dbguard.journal.store import EncodedEvent, StoreError, encode_event
from dbguard.journal.store_sqlite import SqliteJournalStore
from dbguard.runtime.journal_link import DurableCallback

log = logging.getLogger("dbguard.journal")

__all__ = ["LoopJournal"]

# While another process holds the store's write lock (a `dbguard journal prune`, a second
# proxy on the same file), commits are retried this often, for at most this long; then the
# waiting statements are told the journal is unavailable.
BUSY_RETRY_SECONDS: Final = 0.002
BUSY_GIVE_UP_SECONDS: Final = 10.0
# The background thread looks at the WAL this often, and checkpoints it into the database file
# once it has grown past WAL_CHECKPOINT_BYTES or CHECKPOINT_AT_LEAST seconds have passed: a
# checkpoint competes with the appends (measured: checkpointing every second cost a quarter of
# the throughput under load), and a WAL of some tens of MiB is cheap.
CHECKPOINT_POLL: Final = 1.0
WAL_CHECKPOINT_BYTES: Final = 64 * 1024 * 1024
CHECKPOINT_AT_LEAST: Final = 60.0
# Events appended in one transaction, at most (the rest go in the next turn's).
MAX_BATCH: Final = 5000


class LoopJournal:
    """The event sink of every session of one process, committing on the event loop."""

    def __init__(self, path: Path, hasher: ChainHasher, loop: asyncio.AbstractEventLoop) -> None:
        # busy_timeout=0: a locked store is retried from the loop, never waited for in it.
        self._store = SqliteJournalStore(path, fsync=False, busy_timeout=0)
        self._store.check_hasher(hasher)
        self._store.disable_auto_checkpoint()
        self._path = path
        self._hasher = hasher
        self._loop = loop
        self._pending: list[EncodedEvent] = []
        self._waiters: list[DurableCallback] = []
        self._scheduled = False
        self._busy_since: float | None = None
        self._closed = False
        self._stop_checkpoints = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="dbguard-journal-checkpoint",
                                              daemon=True)
        self._checkpointer.start()

    # -- the sessions' side --------------------------------------------------------------------

    def record(self, events: Sequence[JournalEvent], on_durable: DurableCallback | None) -> None:
        """Queue `events` for this turn's commit; with `on_durable`, call it once they are
        committed (None) or could not be (the reason)."""
        if self._closed:
            if on_durable is not None:
                self._loop.call_soon(on_durable, "the journal is closed")
            return
        try:
            encoded = [encode_event(event) for event in events]
        except ValueError as exc:  # EncodingError: an event that cannot be encoded
            log.error("journal.event_lost", extra={"error": str(exc), "events": len(events)})
            if on_durable is not None:
                self._loop.call_soon(on_durable, str(exc))
            return
        self._pending.extend(encoded)
        if on_durable is not None:
            self._waiters.append(on_durable)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def close(self) -> None:
        """Commit what is pending, checkpoint, and close the store."""
        if self._closed:
            return
        self._scheduled = True  # no more flushes from the loop
        self._busy_since = None
        deadline = time.monotonic() + BUSY_GIVE_UP_SECONDS
        while self._pending and time.monotonic() < deadline:
            if not self._commit():
                time.sleep(BUSY_RETRY_SECONDS)
        self._closed = True
        self._stop_checkpoints.set()
        self._checkpointer.join(5)
        with contextlib.suppress(StoreError):
            self._store.checkpoint("TRUNCATE")
        self._store.close()

    # -- the loop ------------------------------------------------------------------------------

    def _flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        if not self._commit():
            self._scheduled = True
            self._loop.call_later(BUSY_RETRY_SECONDS, self._flush)

    def _commit(self) -> bool:
        """Append everything pending in one transaction; False when the store is locked by
        another process and the commit should be tried again shortly."""
        batch, waiters = self._pending[:MAX_BATCH], self._waiters
        rest = self._pending[MAX_BATCH:]
        try:
            self._store.append_batch(batch, self._hasher)
        except StoreError as exc:
            message = str(exc)
            locked = "locked" in message or "busy" in message
            now = time.monotonic()
            if locked and (self._busy_since is None or now - self._busy_since < BUSY_GIVE_UP_SECONDS):
                if self._busy_since is None:
                    self._busy_since = now
                return False
            self._busy_since = None
            log.error("journal.write_failed", extra={"events": len(self._pending), "error": message})
            self._pending, self._waiters = [], []
            reason = f"the journal store could not record the event: {message}"
            for callback in waiters:
                self._call(callback, reason)
            return True
        self._busy_since = None
        if rest:
            # More than one transaction's worth: the waiters go on waiting for the rest.
            self._pending = rest
            if not self._scheduled:
                self._scheduled = True
                self._loop.call_soon(self._flush)
            return True
        self._pending, self._waiters = [], []
        for callback in waiters:
            self._call(callback, None)
        return True

    @staticmethod
    def _call(callback: DurableCallback, reason: str | None) -> None:
        try:
            callback(reason)
        except Exception:  # one session's bug must not strand the others
            log.exception("journal.callback_failed")

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
