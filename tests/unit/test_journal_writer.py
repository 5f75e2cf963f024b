# tests/unit/test_journal_writer.py — the group-commit writer against a real sqlite store:
# batching counted by the store's commit hook (no timing), failures (every event of the failed
# batch fails with JournalUnavailable, nothing of it is chained, the next batch succeeds),
# backpressure on a bounded queue, close (flush, then refuse), the asyncio helper, and events
# that cannot be encoded failing their own caller only.
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

import pytest

from dbguard.journal import (
    ChainHasher,
    EncodingError,
    JournalClosed,
    JournalStore,
    JournalUnavailable,
    JournalWriter,
    OutcomeEvent,
    StoreError,
)
from dbguard.journal.store import EncodedEvent
from dbguard.journal.store_sqlite import SqliteJournalStore
from tests.unit.journal_helpers import session_events

H = ChainHasher()


class _WriterBug(BaseException):
    pass


class GatedStore(SqliteJournalStore):
    """A sqlite store whose commits can be held at a gate and made to fail on demand."""

    def __init__(self, path: Path) -> None:
        self.batches: list[int] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.fail_next = False
        self.die_next = False
        super().__init__(path)

    def append_batch(self, events: Sequence[EncodedEvent], hasher: ChainHasher, *,
                     mark: tuple[str, int] | None = None, mark_from: int | None = None) -> list[int]:
        self.entered.set()
        assert self.gate.wait(30)
        if self.die_next:
            raise _WriterBug("a bug in the writer thread")
        if self.fail_next:
            self.fail_next = False
            raise StoreError("disk full (simulated)")
        seqs = super().append_batch(events, hasher, mark=mark, mark_from=mark_from)
        self.batches.append(len(events))
        return seqs


@pytest.fixture
def gated(tmp_path: Path) -> GatedStore:
    return GatedStore(tmp_path / "j.db")


def hold(store: GatedStore, writer: JournalWriter) -> Future[int]:
    """Park the writer thread inside a commit of one event."""
    store.gate.clear()
    store.entered.clear()
    future = writer.submit(session_events("held")[0])
    assert store.entered.wait(30)
    return future


def test_events_submitted_during_a_commit_share_the_next(gated: GatedStore) -> None:
    writer = JournalWriter(lambda: gated, H)
    hold(gated, writer)
    futures = [writer.submit(e) for e in session_events("s-1", statements=20)]
    gated.gate.set()
    assert [f.result(30) for f in futures] == list(range(2, 2 + len(futures)))
    writer.close()
    assert gated.batches == [1, len(futures)]
    assert writer.stats.transactions == 2
    assert writer.stats.largest_batch == len(futures)


def test_max_batch_splits_commits(gated: GatedStore) -> None:
    writer = JournalWriter(lambda: gated, H, max_batch=4)
    hold(gated, writer)
    futures = [writer.submit(e) for e in session_events("s-1", statements=5)]  # 12 events
    gated.gate.set()
    for f in futures:
        f.result(30)
    writer.close()
    assert gated.batches == [1, 4, 4, 4]


def test_store_failure_fails_that_batch_only(tmp_path: Path, gated: GatedStore) -> None:
    writer = JournalWriter(lambda: gated, H)
    held = hold(gated, writer)
    gated.fail_next = True
    queued = [writer.submit(e) for e in session_events("s-1")]  # behind the failing commit
    gated.gate.set()
    with pytest.raises(JournalUnavailable, match=r"could not record the event: .*disk full"):
        held.result(30)
    # Nothing of the failed batch is chained: what was queued behind it starts at 1.
    assert [f.result(30) for f in queued] == list(range(1, 11))
    gated.fail_next = True
    with pytest.raises(JournalUnavailable):
        writer.submit(session_events("s-2")[0]).result(30)
    assert writer.submit(session_events("s-3")[0]).result(30) == 11
    writer.close()
    assert writer.stats.failed_transactions == 2
    with SqliteJournalStore(tmp_path / "j.db") as s:
        assert s.verify(H).ok
        assert s.head().seq == 11


def test_backpressure_on_a_full_queue(gated: GatedStore) -> None:
    writer = JournalWriter(lambda: gated, H, queue_size=2)
    hold(gated, writer)
    writer.submit(session_events("a")[0])
    writer.submit(session_events("b")[0])
    assert writer.try_submit(session_events("c")[0]) is None
    with pytest.raises(JournalUnavailable, match="queue is full"):
        writer.submit(session_events("c")[0], timeout=0)
    gated.gate.set()
    assert writer.submit(session_events("d")[0], timeout=30).result(30) == 4
    writer.close()


def test_close_flushes_then_refuses(gated: GatedStore) -> None:
    writer = JournalWriter(lambda: gated, H)
    hold(gated, writer)
    futures = [writer.submit(e) for e in session_events("s-1")]
    closer = threading.Thread(target=writer.close)
    closer.start()
    while not writer.closing:  # close() refuses new events before it waits for the flush
        time.sleep(0.001)
    with pytest.raises(JournalClosed):
        writer.submit(session_events("late")[0])
    gated.gate.set()
    closer.join(30)
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(JournalClosed):
        writer.submit(session_events("later")[0])


def test_unencodable_event_fails_its_caller_only(gated: GatedStore) -> None:
    with JournalWriter(lambda: gated, H) as writer:
        with pytest.raises(EncodingError):
            writer.submit(OutcomeEvent("s", 1, 1, 0.5))  # type: ignore[arg-type]
        assert writer.submit(session_events()[0]).result(30) == 1


def test_asyncio_append(gated: GatedStore) -> None:
    async def main(writer: JournalWriter) -> list[int]:
        return list(await asyncio.gather(*(writer.append(e) for e in session_events(statements=10))))

    with JournalWriter(lambda: gated, H, queue_size=3) as writer:
        seqs = asyncio.run(main(writer))
    assert sorted(seqs) == list(range(1, 23))


def test_a_store_that_cannot_open_is_reported(tmp_path: Path) -> None:
    def broken() -> JournalStore:
        raise StoreError("sqlite:///nowhere: directory does not exist")

    with pytest.raises(JournalUnavailable, match="directory does not exist"):
        JournalWriter(broken, H)


def test_a_store_with_another_key_is_refused_at_start(tmp_path: Path) -> None:
    with SqliteJournalStore(tmp_path / "j.db") as s:
        s.append(session_events()[0], ChainHasher(b"k" * 32))
    with pytest.raises(JournalUnavailable, match="keyed"):
        JournalWriter(lambda: SqliteJournalStore(tmp_path / "j.db"), H)


def test_start_writer_by_url(tmp_path: Path) -> None:
    from dbguard.journal import open_store, start_writer

    url = f"sqlite:///{tmp_path / 'j.db'}"
    with start_writer(url, b"k" * 32, max_batch=10) as writer:
        assert writer.submit(session_events()[0]).result(30) == 1
    with open_store(url, create=False) as s:
        assert s.verify(ChainHasher(b"k" * 32)).ok
    with pytest.raises(JournalUnavailable, match="another key"):
        start_writer(url, b"x" * 32)


def test_readers_never_create_a_journal(tmp_path: Path) -> None:
    import sqlite3

    from dbguard.journal import open_store

    other = tmp_path / "other.db"
    sqlite3.connect(other).close()
    with pytest.raises(StoreError, match="no journal there"):
        open_store(f"sqlite:///{other}", create=False)
    with sqlite3.connect(other) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


def test_a_dying_writer_thread_strands_nobody(gated: GatedStore) -> None:
    writer = JournalWriter(lambda: gated, H)
    held = hold(gated, writer)
    gated.die_next = True
    queued = [writer.submit(e) for e in session_events("s-1")]
    gated.gate.set()
    for future in [held, *queued]:
        with pytest.raises(JournalUnavailable, match="writer stopped"):
            future.result(30)
    with pytest.raises(JournalClosed):
        writer.submit(session_events("s-2")[0])
    writer.close()


def test_a_new_sqlite_journal_is_private(tmp_path: Path) -> None:
    path = tmp_path / "private.db"
    SqliteJournalStore(path).close()
    assert path.stat().st_mode & 0o777 == 0o600
