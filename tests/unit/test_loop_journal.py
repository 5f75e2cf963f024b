"""LoopJournal: write-ahead to a segment at once (one copy into its memory map, or one write,
per record() call), appended to the store in batches by the
appender process; a locked store waits in the segment; a dead appender is started again; a
killed proxy's segment is recovered, once."""

from __future__ import annotations

import asyncio
import errno
import logging
import mmap
import os
import shutil
import signal
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguard.journal import ChainHasher, StatementEvent, now_us, open_store, segments
from dbguard.journal.events import EncodingError, JournalEvent
from dbguard.journal.segments import (
    SEGMENT_SUFFIX,
    Segment,
    UnreadableRecord,
    append_segment,
    event_of_record,
    filesystem_type,
    frame,
    frame_event,
    maps_safely,
    read_segment,
    recover_segments,
    segment_directory,
)
from dbguard.journal.store import EncodedEvent, MarkMoved, encode_event, encoded_from_payload
from dbguard.model import Action, Decision
from dbguard.runtime import loop_journal
from dbguard.runtime.journal_link import WriteAheadGate
from dbguard.runtime.loop_journal import LoopJournal
from dbguard.session.journal import SessionJournal
from tests.unit.journal_helpers import every_kind


def _event(seq: int) -> StatementEvent:
    return StatementEvent("s-1", now_us(), seq, f"SELECT {seq}", "allow")


def _texts(path: Path) -> list[str]:
    with open_store("sqlite:///" + str(path), create=False) as store:
        assert store.verify(ChainHasher(None)).ok
        return [e.text for s in store.iter_events() if isinstance(e := s.event(), StatementEvent)]


def _segment_of(path: Path, *seqs: int) -> tuple[Path, list[bytes]]:
    """A segment of the store at `path`, as a killed proxy would leave it: the records of
    these statements (the caller writes them, whole or cut)."""
    directory = segment_directory(path)
    directory.mkdir()
    return directory / f"00000000000000000001-1{SEGMENT_SUFFIX}", [frame(encode_event(_event(s)).payload) for s in seqs]


async def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for the appender (a process: it takes a moment to start) to make `check` true."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the appender did not get there in time"
        await asyncio.sleep(0.05)


def test_events_are_durable_in_the_segment_then_appended_to_the_store(tmp_path: Path) -> None:
    path = tmp_path / "j.db"

    async def run() -> tuple[list[bool], int, list[str], list[str]]:
        journal = LoopJournal(path, ChainHasher(None), asyncio.get_running_loop())
        told: list[str | None] = []
        # Durable on return: in the segment file before record() returns, nothing to wait for.
        durable = [journal.record([_event(seq)], told.append) for seq in (1, 2, 3)]
        segments = list(segment_directory(path).glob("*" + SEGMENT_SUFFIX))
        in_segment = len(list(read_segment(segments[0])))
        before = _texts(path)  # the sessions went on before the store has them
        await _eventually(lambda: len(_texts(path)) == 3)
        after = _texts(path)
        journal.close()
        assert told == [], "a durable record calls nobody back"
        return durable, in_segment, before, after

    durable, in_segment, before, after = asyncio.run(run())
    assert durable == [True, True, True]
    assert in_segment == 3
    assert before == []
    assert after == ["SELECT 1", "SELECT 2", "SELECT 3"]
    assert not list(segment_directory(path).glob("*" + SEGMENT_SUFFIX)), "a clean close deletes the segment"


def test_a_locked_store_keeps_events_in_the_segment_until_it_is_free(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "j.db"

    async def run() -> tuple[str | None, list[str]]:
        journal = LoopJournal(path, ChainHasher(None), asyncio.get_running_loop())
        other = sqlite3.connect(str(path), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        reason = None if journal.record([_event(1)], None) else "not recorded"  # in the segment: not refused
        await _eventually(lambda: journal.failing)  # the appender tried, and said why it could not
        assert journal.waiting == 1
        other.execute("COMMIT")
        other.close()
        await _eventually(lambda: journal.waiting == 0)
        texts = _texts(path)
        journal.close()
        return reason, texts

    with caplog.at_level(logging.WARNING, logger="dbguard.journal"):
        reason, texts = asyncio.run(run())
    assert reason is None
    assert texts == ["SELECT 1"]
    # The appender's own log records reach the proxy's log, saying why it waited.
    failed = [r for r in caplog.records if r.getMessage() == "journal.append_failed"]
    assert failed
    assert getattr(failed[0], "appender", False)
    assert "locked" in str(getattr(failed[0], "error", ""))


def test_a_store_locked_too_long_refuses_new_statements(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "j.db"
    monkeypatch.setattr(loop_journal, "INGEST_GIVE_UP_SECONDS", 0.2)

    async def run() -> str | None:
        journal = LoopJournal(path, ChainHasher(None), asyncio.get_running_loop())
        other = sqlite3.connect(str(path), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        journal.record([_event(1)], None)
        await _eventually(lambda: journal.failure is not None)
        second: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        assert not journal.record([_event(2)], second.set_result)
        reason = await asyncio.wait_for(second, 5)  # refused: told soon, never inside record()
        other.execute("ROLLBACK")
        other.close()
        journal.close()
        return reason

    reason = asyncio.run(run())
    assert reason is not None
    assert "locked" in reason


def test_a_killed_proxys_segment_is_recovered_once(tmp_path: Path) -> None:
    """What kill -9 leaves: a segment nobody holds, some of it already in the store (its mark
    says how far), a torn record at its end. Recovery appends the rest exactly once."""
    path = tmp_path / "j.db"
    hasher = ChainHasher(None)
    segment, records = _segment_of(path, 1, 2, 3)
    segment.write_bytes(b"".join(records) + records[0][:7])  # the last write was cut
    with open_store("sqlite:///" + str(path)) as store:
        first = encode_event(_event(1))
        store.append_batch([first], hasher, mark=("segment:" + segment.name, len(records[0])))
    with open_store("sqlite:///" + str(path), create=False) as store:
        assert recover_segments(store, hasher, segment.parent) == 2
        assert recover_segments(store, hasher, segment.parent) == 0
        assert store.mark("segment:" + segment.name) == 0  # forgotten with the file
    assert not segment.exists()
    assert _texts(path) == ["SELECT 1", "SELECT 2", "SELECT 3"]


def test_a_live_segment_is_not_recovered_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "j.db"

    async def run() -> int:
        journal = LoopJournal(path, ChainHasher(None), asyncio.get_running_loop())
        assert journal.record([_event(1)], None)
        with open_store("sqlite:///" + str(path), create=False) as store:
            recovered = recover_segments(store, ChainHasher(None), segment_directory(path))
        journal.close()
        return recovered

    assert asyncio.run(run()) == 0  # the running journal holds its segment's lock
    assert _texts(path) == ["SELECT 1"]


def test_settle_appends_everything_recorded_so_far(tmp_path: Path) -> None:
    path = tmp_path / "j.db"

    async def run() -> list[str]:
        journal = LoopJournal(path, ChainHasher(None), asyncio.get_running_loop())
        journal.record([_event(1), _event(2)], None)
        await journal.settle()
        texts = _texts(path)
        journal.close()
        return texts

    assert asyncio.run(run()) == ["SELECT 1", "SELECT 2"]


def test_a_dead_appender_is_started_again_and_nothing_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "j.db"

    async def run() -> list[str]:
        journal = LoopJournal(path, ChainHasher(None), asyncio.get_running_loop())
        journal.record([_event(1)], None)
        await _eventually(lambda: journal.waiting == 0)
        first = journal.appender_pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        journal.record([_event(2)], None)
        journal.record([_event(3)], None)
        await _eventually(lambda: len(_texts(path)) == 3)
        assert journal.appender_pid not in (None, first)
        await _eventually(lambda: journal.waiting == 0)  # its "appended" may come just after the commit
        journal.close()
        return _texts(path)

    assert asyncio.run(run()) == ["SELECT 1", "SELECT 2", "SELECT 3"]
    assert not list(segment_directory(path).glob("*" + SEGMENT_SUFFIX))


def test_a_keyed_chain_is_appended_with_its_key(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    key = b"k" * 32

    async def run() -> None:
        journal = LoopJournal(path, ChainHasher(key), asyncio.get_running_loop(), key)
        journal.record([_event(1)], None)
        await journal.settle()
        journal.close()

    asyncio.run(run())
    with open_store("sqlite:///" + str(path), create=False) as store:
        assert store.verify(ChainHasher(key)).ok
        assert not store.verify(ChainHasher(None)).ok


def test_the_appender_and_a_recovery_of_the_same_segment_never_append_an_event_twice(tmp_path: Path) -> None:
    """Both read the segment's mark in their write transaction: whoever comes second goes on
    from where the first one stopped."""
    path = tmp_path / "j.db"
    hasher = ChainHasher(None)
    segment, records = _segment_of(path, 1, 2, 3)
    segment.write_bytes(b"".join(records))
    with open_store("sqlite:///" + str(path)) as store:
        # A first appender got as far as the first record...
        assert append_segment(store, hasher, segment, 0, len(records[0])) == (1, len(records[0]))
        # ...a second one that read the mark before that goes on from the mark, not from 0.
        assert append_segment(store, hasher, segment, 0) == (2, len(b"".join(records)))
        with pytest.raises(MarkMoved):
            store.append_batch([encode_event(_event(4))], hasher, mark=("segment:" + segment.name, 99), mark_from=0)
    assert _texts(path) == ["SELECT 1", "SELECT 2", "SELECT 3"]


def test_a_record_that_cannot_be_read_stops_the_appender_loudly(tmp_path: Path) -> None:
    """A CRC that holds over bytes that are no event (an edited segment): what precedes it is
    appended, then an error names the segment and offset; nothing after it is skipped silently."""
    path = tmp_path / "j.db"
    directory = segment_directory(path)
    directory.mkdir()
    segment = directory / f"00000000000000000001-1{SEGMENT_SUFFIX}"
    good = frame(encode_event(_event(1)).payload)
    segment.write_bytes(good + frame(b'{"kind":"nonsense"}') + frame(encode_event(_event(3)).payload))
    with open_store("sqlite:///" + str(path)) as store:
        with pytest.raises(UnreadableRecord, match=f"offset {len(good)}"):
            append_segment(store, ChainHasher(None), segment, 0)
        assert store.mark("segment:" + segment.name) == len(good)
    assert _texts(path) == ["SELECT 1"]


@pytest.mark.parametrize("event", every_kind(), ids=lambda e: type(e).__name__)
def test_a_record_read_back_fills_the_stores_columns_as_the_event_did(event: JournalEvent) -> None:
    """The appender reads the events of every statement only as far as the store's columns
    need; what it reads must be what encoding the event gave."""
    written = encode_event(event)
    read = encoded_from_payload(written.payload)
    assert (read.kind, read.session_id, read.time_us, read.payload, read.stmt_seq, read.action) == (
        written.kind, written.session_id, written.time_us, written.payload, written.stmt_seq, written.action)
    assert read.event in (None, event)


@pytest.mark.parametrize("payload", [b"", b"{", b"\xff\xfe", b"[1]", b'{"v":1,"kind":"statement"}',
                                     b'{"v":99,"kind":"outcome"}'])
def test_a_record_that_is_no_event_is_refused(payload: bytes) -> None:
    with pytest.raises(EncodingError):
        encoded_from_payload(payload)


# Records of the events a session encodes itself carry the store's columns before the
# canonical bytes (segments.frame_event): what the appender reads from them must be what
# reading the JSON gives, and columns that lie are caught by `journal verify`.

def _session_events(session_id: str, seq: int, action: Action, rows: int | None) -> list[EncodedEvent]:
    journal = SessionJournal(session_id)
    journal.seq = seq - 1
    journal.statement(b"SELECT 'x'", Decision(action), absorbs=True)
    journal.client_cycle_end()
    journal.result(rows)
    journal.server_cycle_end()
    events, _ = journal.take()
    assert all(isinstance(e, EncodedEvent) for e in events)
    return [e for e in events if isinstance(e, EncodedEvent)]


@settings(max_examples=200, deadline=None)
@given(session_id=st.text(alphabet=st.characters(max_codepoint=127), max_size=60),
       seq=st.integers(1, 2**62), action=st.sampled_from(list(Action)),
       rows=st.one_of(st.none(), st.integers(0, 2**62)))
def test_a_record_with_columns_reads_back_as_its_json_does(session_id: str, seq: int, action: Action,
                                                          rows: int | None) -> None:
    for event in _session_events(session_id, seq, action, rows):
        [record] = list(_records(frame_event(event)))
        read, from_json = event_of_record(record), encoded_from_payload(event.payload)
        assert (read.kind, read.session_id, read.time_us, read.payload, read.stmt_seq, read.action) == (
            from_json.kind, from_json.session_id, from_json.time_us, from_json.payload, from_json.stmt_seq,
            from_json.action)
        assert record.endswith(event.payload)


def _records(data: bytes) -> list[bytes]:
    path = Path(tempfile.mkdtemp()) / "r.seg"
    path.write_bytes(data)
    return [r.payload for r in read_segment(path)]


@pytest.mark.parametrize("payload", [
    b"\x01", b"\x01\x09\x00\x00" + bytes(16) + b"{}", b"\x01\x01\x05\x00ab" + bytes(16) + b"{}",
    b"\x01\x01\x00\x00" + bytes(16), b"\x01\x01\x00\x00" + bytes(16) + b"[1]",
    b"\x01\x01\x00\x00" + bytes(10) + b"{}"])
def test_a_record_whose_columns_describe_no_event_is_refused(payload: bytes) -> None:
    with pytest.raises(EncodingError):
        event_of_record(payload)


def test_columns_that_disagree_with_the_event_are_caught_by_verify(tmp_path: Path) -> None:
    """Someone who can write the segment directory could put columns before an event that
    are not its own (another session, another time): the chain covers the event's bytes, and
    verification compares the stored columns with them."""
    path = tmp_path / "j.db"
    statement, outcome = _session_events("s-honest", 1, Action.ALLOW, 1)
    forged = EncodedEvent(statement.kind, "s-someone-else", statement.time_us, statement.payload,
                          statement.stmt_seq, statement.action, None)
    garbage = EncodedEvent(outcome.kind, outcome.session_id, outcome.time_us, b'{"not":"an event"}',
                           outcome.stmt_seq, outcome.action, None)
    directory = segment_directory(path)
    directory.mkdir()
    segment = directory / f"00000000000000000001-1{SEGMENT_SUFFIX}"
    segment.write_bytes(frame_event(forged) + frame_event(outcome) + frame_event(garbage))
    with open_store("sqlite:///" + str(path)) as store:
        assert recover_segments(store, ChainHasher(None), directory) == 3
        report = store.verify(ChainHasher(None))
    assert not report.ok
    assert [(problem.seq, problem.problem) for problem in report.problems] == [(1, "edited"), (3, "malformed")]


class _Connection:
    """The connection side a WriteAheadGate serves, recording what the gate asks of it."""

    def __init__(self, journal: SessionJournal) -> None:
        self.closed = False
        self.refuses_unjournaled = True
        self.released: list[bytes] = []
        self.refused = False
        self._journal = journal

    @property
    def session(self) -> _Connection:
        return self

    @property
    def session_id(self) -> str:
        return self._journal.session_id

    @property
    def journal(self) -> SessionJournal:
        return self._journal

    def release_upstream(self, data: bytes) -> None:
        self.released.append(data)

    def pause_client_for_journal(self) -> None: ...

    def resume_client_after_journal(self) -> None: ...

    def refuse_unjournaled(self) -> None:
        self.refused = True
        self.closed = True


def _map_segments(monkeypatch: pytest.MonkeyPatch, mapped: bool, chunk: int = segments.MAP_CHUNK) -> None:
    """Segments mapped (or written) wherever the test's directory is, in chunks of `chunk`."""
    monkeypatch.setattr(segments, "maps_safely", lambda _directory: mapped)
    monkeypatch.setattr(segments, "MAP_CHUNK", chunk)


def test_the_file_system_of_a_path_is_read_from_the_mount_table(tmp_path: Path) -> None:
    assert filesystem_type(Path("/proc/self")) == "proc"
    assert not maps_safely(Path("/proc/self")), "only file systems known to allocate up front are mapped"
    assert filesystem_type(tmp_path) != ""


def test_a_mapped_segment_holds_every_record_across_its_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """Records copied into the map, across chunk boundaries and larger than a chunk, read back
    whole; while it is open the file has allocated, empty space after them, which readers (the
    appender, a recovery after kill -9) take as the end; closing cuts it off."""
    chunk = mmap.ALLOCATIONGRANULARITY
    _map_segments(monkeypatch, True, chunk)
    records = [frame(bytes([65 + n % 26]) * size) for n, size in enumerate((10, 500, 3000, 3 * chunk, 1, 900, 4000))]
    segment = Segment(tmp_path / "segments", "a" + SEGMENT_SUFFIX)
    ends = [segment.append(record) for record in records]
    assert segment.mapped
    assert ends == [sum(len(r) for r in records[: n + 1]) for n in range(len(records))]
    assert os.path.getsize(segment.path) > segment.size, "space is allocated ahead"
    with caplog.at_level(logging.WARNING, logger="dbguard.journal"):
        assert [r.payload for r in read_segment(segment.path)] == [r[8:] for r in records]
        assert [r.end for r in read_segment(segment.path, ends[1], ends[4])] == ends[2:5]
    assert not caplog.records, "the allocated tail is not a torn record"
    segment.close()
    assert os.path.getsize(segment.path) == ends[-1]
    assert [r.payload for r in read_segment(segment.path)] == [r[8:] for r in records]


def test_segment_writes_write_never_maps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`journal.segment_writes: write`: write() even where mapping is safe; `auto` maps there."""
    _map_segments(monkeypatch, True)

    async def run(mapped: bool) -> tuple[bool, list[str]]:
        path = tmp_path / f"{mapped}.db"
        journal = LoopJournal(path, ChainHasher(None), asyncio.get_running_loop(), mapped=mapped)
        assert journal.record([_event(1)], None)
        was = journal._segment.mapped
        await _eventually(lambda: len(_texts(path)) == 1)
        journal.close()
        return was, _texts(path)

    assert asyncio.run(run(False)) == (False, ["SELECT 1"])
    assert asyncio.run(run(True)) == (True, ["SELECT 1"])


def test_a_mapped_segment_a_killed_proxy_left_is_recovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 never closes the segment: its file keeps the allocated tail, and recovery
    appends exactly the records before it."""
    _map_segments(monkeypatch, True)
    path = tmp_path / "j.db"
    live = Segment(tmp_path / "live", "x" + SEGMENT_SUFFIX)
    for seq in (1, 2, 3):
        live.append(frame(encode_event(_event(seq)).payload))
    directory = segment_directory(path)
    directory.mkdir()
    left = directory / f"00000000000000000001-1{SEGMENT_SUFFIX}"
    shutil.copyfile(live.path, left)  # the file as the page cache holds it, the process gone
    live.close()
    assert os.path.getsize(left) == segments.MAP_CHUNK
    with open_store("sqlite:///" + str(path)) as store:
        assert recover_segments(store, ChainHasher(None), directory) == 3
    assert _texts(path) == ["SELECT 1", "SELECT 2", "SELECT 3"]


@pytest.mark.parametrize("mapped", [False, True], ids=["written", "mapped"])
def test_a_statement_whose_segment_write_fails_is_refused_and_leaves_no_partial_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mapped: bool) -> None:
    """The disk is full: the statement's bytes never reach the upstream, the connection is
    refused (journal.on_store_failure: refuse), and the segment holds only whole records. A
    mapped segment finds out when its next chunk cannot be allocated: it stops mapping, cuts
    the allocated space off and writes, which fails with an error (never a SIGBUS later)."""
    path = tmp_path / "j.db"
    _map_segments(monkeypatch, mapped, mmap.ALLOCATIONGRANULARITY)

    async def run() -> tuple[_Connection, int, int, bool]:
        journal = LoopJournal(path, ChainHasher(None), asyncio.get_running_loop())
        session = SessionJournal("s-full")
        conn = _Connection(session)
        gate = WriteAheadGate(conn, journal)
        session.statement(b"SELECT 1", Decision(Action.ALLOW))
        gate.submit()
        assert gate.waits == 0, "durable at once"
        was_mapped = journal._segment.mapped
        size_before = journal._segment.size
        real_pwrite = os.pwrite

        def half_then_full(fd: int, data: bytes | memoryview, offset: int) -> int:
            if fd == journal._segment._fd:
                if len(data) > 8:
                    return real_pwrite(fd, bytes(data)[:8], offset)  # a short write, then no space
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_pwrite(fd, data, offset)

        def no_space(fd: int, offset: int, length: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "pwrite", half_then_full)  # segments calls os.pwrite
        monkeypatch.setattr(os, "posix_fallocate", no_space)
        session.statement(b"DELETE FROM t WHERE note = '" + b"x" * mmap.ALLOCATIONGRANULARITY + b"'",
                          Decision(Action.ALLOW))
        gate.submit()
        assert gate.waits == 1, "not durable: upstream bytes wait"
        gate.hold(b"the DELETE's bytes")
        await asyncio.sleep(0.05)
        monkeypatch.undo()
        size_after = os.path.getsize(journal._segment.path)
        journal.close()
        return conn, size_before, size_after, was_mapped

    conn, size_before, size_after, was_mapped = asyncio.run(run())
    assert was_mapped == mapped
    assert conn.refused
    assert conn.released == []
    assert size_after == size_before, "the cut record (and any allocated space) was taken back out"
    assert _texts(path) == ["SELECT 1"]
