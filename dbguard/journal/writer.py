# dbguard/journal/writer.py — owns group commit: one writer thread owns the store connection;
# `submit(event)` encodes the event in the caller's thread, queues it and returns a Future that
# resolves to its sequence number once the transaction holding it has COMMITTED (durably);
# `await writer.append(event)` is the asyncio form. Everything submitted while a commit runs
# goes into the next one (one transaction, one fsync for all of them). The queue is bounded:
# a full queue makes submitters wait (backpressure), never grows memory. When the store fails,
# every event of that batch fails with JournalUnavailable and nothing of it is in the chain;
# the next batch tries again (the store reconnects). The event loop's form is `enqueue(events)`:
# no Future per event, a ticket number instead, and commit listeners told after every commit
# which tickets are now durable (or failed): one wake-up per commit, not one per event. It must
# not decide what to do about a failure (the sessions refuse the statement, or allow it
# loudly, per configuration). asyncio is imported by `append` only: the journal appender
# process (journal.appender) imports this package and has no event loop (asyncio and ssl are
# ~9 MiB resident).
from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Final, cast

from dbguard.journal.chain import ChainHasher
from dbguard.journal.events import JournalEvent
from dbguard.journal.store import EncodedEvent, JournalStore, StoreError, encode_event

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_QUEUE_SIZE",
    "CommitListener",
    "JournalClosed",
    "JournalUnavailable",
    "JournalWriter",
    "WriterStats",
]

# Events waiting for a commit, at most. About 1 KiB each: a few MiB at worst. Beyond it,
# submitters wait for room: the proxy slows down rather than queueing unjournaled work.
DEFAULT_QUEUE_SIZE: Final = 10_000
# Events per transaction, at most: bounds one commit's size and latency under a burst.
DEFAULT_MAX_BATCH: Final = 1_000

_log = logging.getLogger("dbguard.journal")


class JournalUnavailable(Exception):
    """The journal could not durably record an event (the store failed): callers must not
    proceed as if it were recorded."""


class JournalClosed(JournalUnavailable):
    """The writer is closed (or closing) and accepts no more events."""


@dataclass(slots=True)
class WriterStats:
    transactions: int = 0
    events: int = 0
    failed_transactions: int = 0
    failed_events: int = 0
    largest_batch: int = 0


@dataclass(slots=True)
class _Pending:
    encoded: EncodedEvent
    future: Future[int] | None  # None: enqueued by ticket; commit listeners hear about it
    ticket: int


# Told after every commit, in the writer thread: (first ticket, last ticket, None) when that
# range is durable, or (first, last, reason) when it failed. It must be quick and thread-safe.
CommitListener = Callable[[int, int, str | None], None]


class JournalWriter:
    """The group-commit writer. Thread-safe: call `submit` from any thread, `append` from any
    event loop. `store_factory` is called in the writer thread, which then owns the store."""

    def __init__(
        self,
        store_factory: Callable[[], JournalStore],
        hasher: ChainHasher,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        max_batch: int = DEFAULT_MAX_BATCH,
        name: str = "dbguard-journal-writer",
    ) -> None:
        if queue_size < 1 or max_batch < 1:
            raise ValueError("queue_size and max_batch must be at least 1")
        self._factory = store_factory
        self._hasher = hasher
        self._queue_size = queue_size
        self._max_batch = max_batch
        self._queue: collections.deque[_Pending] = collections.deque()
        self._lock = threading.Lock()
        self._has_items = threading.Condition(self._lock)
        self._has_room = threading.Condition(self._lock)
        self._closing = False
        self._started = threading.Event()
        self._open_error: list[BaseException] = []
        self._tickets = 0  # the ticket of the newest queued event (every event has one)
        self._listeners: list[CommitListener] = []
        self.stats = WriterStats()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._started.wait()
        if self._open_error:
            self._thread.join()
            raise JournalUnavailable(str(self._open_error[0])) from self._open_error[0]

    # -- submitting ---------------------------------------------------------------------------

    def submit(self, event: JournalEvent, *, timeout: float | None = None) -> Future[int]:
        """Queue `event`; the Future gives its sequence number once durably committed.

        Blocks while the queue is full (up to `timeout` seconds, then JournalUnavailable).
        Raises EncodingError for an event that cannot be encoded, JournalClosed after close().
        """
        encoded = encode_event(event)
        with self._lock:
            if self._closing:
                raise JournalClosed("the journal is closed")
            if len(self._queue) >= self._queue_size and not self._has_room.wait_for(
                lambda: self._closing or len(self._queue) < self._queue_size, timeout
            ):
                raise JournalUnavailable(f"the journal queue is full ({self._queue_size} events waiting)")
            if self._closing:
                raise JournalClosed("the journal is closed")
            self._tickets += 1
            pending = _Pending(encoded, Future(), self._tickets)
            self._queue.append(pending)
            self._has_items.notify()
        assert pending.future is not None
        return pending.future

    def try_submit(self, event: JournalEvent) -> Future[int] | None:
        """Like submit, but None instead of waiting when the queue is full."""
        encoded = encode_event(event)
        with self._lock:
            if self._closing:
                raise JournalClosed("the journal is closed")
            if len(self._queue) >= self._queue_size:
                return None
            self._tickets += 1
            pending = _Pending(encoded, Future(), self._tickets)
            self._queue.append(pending)
            self._has_items.notify()
        assert pending.future is not None
        return pending.future

    def enqueue(self, events: Sequence[JournalEvent | EncodedEvent]) -> tuple[int, int]:
        """Queue `events` without waiting and without a Future: returns their (first, last)
        tickets; commit listeners hear when that range is durable or failed.

        For the event loop, which must never block: the queue bound is not applied here. The
        callers bound themselves: a session waits for its statement's event before it
        forwards the statement, so it has at most a few events queued at any time.
        Raises EncodingError for an event that cannot be encoded, JournalClosed after close()."""
        encoded = [event if type(event) is EncodedEvent else encode_event(cast(JournalEvent, event))
                   for event in events]
        with self._lock:
            if self._closing:
                raise JournalClosed("the journal is closed")
            first = self._tickets + 1
            for item in encoded:
                self._tickets += 1
                self._queue.append(_Pending(item, None, self._tickets))
            self._has_items.notify()
            return first, self._tickets

    def add_commit_listener(self, listener: CommitListener) -> None:
        """Call `listener` after every commit (or failed commit), in the writer thread."""
        with self._lock:
            self._listeners.append(listener)

    def remove_commit_listener(self, listener: CommitListener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    async def append(self, event: JournalEvent) -> int:
        """Record `event` and return its sequence number once it is durable (asyncio form).

        Never blocks the event loop: with a full queue it waits for room in a worker thread."""
        import asyncio

        future = self.try_submit(event)
        if future is None:
            future = await asyncio.to_thread(self.submit, event)
        return await asyncio.wrap_future(future)

    @property
    def closing(self) -> bool:
        """True once close() has been called (no event is accepted any more)."""
        return self._closing

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    # -- closing ------------------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> None:
        """Refuse new events, commit everything already queued, then stop the thread."""
        with self._lock:
            self._closing = True
            self._has_items.notify_all()
            self._has_room.notify_all()
        self._thread.join(timeout)

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            store = self._factory()
            store.check_hasher(self._hasher)
        except BaseException as e:  # reported to the constructor's caller
            self._open_error.append(e)
            self._closing = True
            self._started.set()
            return
        self._started.set()
        batch: list[_Pending] = []
        try:
            while True:
                with self._lock:
                    self._has_items.wait_for(lambda: self._closing or bool(self._queue))
                    if not self._queue:
                        return  # closing and drained
                    count = min(len(self._queue), self._max_batch)
                    batch = [self._queue.popleft() for _ in range(count)]
                    self._has_room.notify_all()
                self._commit(store, batch)
                batch = []
        except BaseException as e:
            # The thread is dying (a bug, or the interpreter going down): nobody may wait forever.
            _log.critical("journal.writer_died", exc_info=True)
            with self._lock:
                self._closing = True
                stranded = batch + list(self._queue)
                self._queue.clear()
                self._has_room.notify_all()
            for p in stranded:
                if p.future is not None and not p.future.done():
                    p.future.set_exception(JournalUnavailable(f"the journal writer stopped: {e!r}"))
            if stranded:
                self._tell(stranded[0].ticket, stranded[-1].ticket, f"the journal writer stopped: {e!r}")
        finally:
            store.close()

    def _tell(self, first: int, last: int, failure: str | None) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(first, last, failure)
            except Exception:  # a listener's bug must not stop the journal
                _log.exception("journal.listener_failed")

    def _commit(self, store: JournalStore, batch: list[_Pending]) -> None:
        live = [p for p in batch if p.future is None or p.future.set_running_or_notify_cancel()]
        if not live:
            return
        first, last = batch[0].ticket, batch[-1].ticket
        try:
            seqs = store.append_batch([p.encoded for p in live], self._hasher)
        except Exception as e:
            self.stats.failed_transactions += 1
            self.stats.failed_events += len(live)
            reason = str(e) if isinstance(e, StoreError) else f"{type(e).__name__}: {e}"
            _log.error("journal.write_failed", extra={"events": len(live), "error": reason})
            message = f"the journal store could not record the event: {reason}"
            for p in live:
                if p.future is not None:
                    p.future.set_exception(JournalUnavailable(message))
            self._tell(first, last, message)
            return
        self.stats.transactions += 1
        self.stats.events += len(live)
        self.stats.largest_batch = max(self.stats.largest_batch, len(live))
        for p, seq in zip(live, seqs, strict=True):
            if p.future is not None:
                p.future.set_result(seq)
        self._tell(first, last, None)
