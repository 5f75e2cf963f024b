"""LoopJournal: write-ahead to a segment per loop turn, appended to the store in batches; a
locked store waits in the segment; a killed proxy's segment is recovered, once."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from dbguard.journal import ChainHasher, StatementEvent, now_us, open_store
from dbguard.journal.segments import SEGMENT_SUFFIX, frame, read_segment, recover_segments, segment_directory
from dbguard.journal.store import encode_event
from dbguard.runtime import loop_journal
from dbguard.runtime.loop_journal import LoopJournal


def _event(seq: int) -> StatementEvent:
    return StatementEvent("s-1", now_us(), seq, f"SELECT {seq}", "allow")


def _texts(path: Path) -> list[str]:
    with open_store("sqlite:///" + str(path), create=False) as store:
        assert store.verify(ChainHasher(None)).ok
        return [e.text for s in store.iter_events() if isinstance(e := s.event(), StatementEvent)]


def test_events_are_durable_in_the_segment_then_appended_to_the_store(tmp_path: Path) -> None:
    path = tmp_path / "j.db"

    async def run() -> tuple[list[str | None], list[str], list[str]]:
        journal = LoopJournal(path, ChainHasher(None), asyncio.get_running_loop())
        results: list[str | None] = []
        done = asyncio.Event()

        def told(reason: str | None) -> None:
            results.append(reason)
            if len(results) == 3:
                done.set()

        for seq in (1, 2, 3):
            journal.record([_event(seq)], told)
        await asyncio.wait_for(done.wait(), 5)
        segments = list(segment_directory(path).glob("*" + SEGMENT_SUFFIX))
        in_segment = list(read_segment(segments[0]))
        before = _texts(path)  # the sessions were told before the store has them
        await asyncio.sleep(loop_journal.INGEST_INTERVAL * 4)
        after = _texts(path)
        journal.close()
        assert len(in_segment) == 3
        return results, before, after

    results, before, after = asyncio.run(run())
    assert results == [None, None, None]
    assert before == []
    assert after == ["SELECT 1", "SELECT 2", "SELECT 3"]
    assert not list(segment_directory(path).glob("*" + SEGMENT_SUFFIX)), "a clean close deletes the segment"


def test_a_locked_store_keeps_events_in_the_segment_until_it_is_free(tmp_path: Path) -> None:
    path = tmp_path / "j.db"

    async def run() -> tuple[str | None, list[str]]:
        journal = LoopJournal(path, ChainHasher(None), asyncio.get_running_loop())
        other = sqlite3.connect(str(path), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        told: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        journal.record([_event(1)], told.set_result)
        reason = await asyncio.wait_for(told, 5)  # durable in the segment: not refused
        await asyncio.sleep(loop_journal.INGEST_INTERVAL * 4)
        other.execute("COMMIT")
        other.close()
        await asyncio.sleep(loop_journal.INGEST_RETRY_SECONDS * 4)
        texts = _texts(path)
        journal.close()
        return reason, texts

    reason, texts = asyncio.run(run())
    assert reason is None
    assert texts == ["SELECT 1"]


def test_a_store_locked_too_long_refuses_new_statements(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "j.db"
    monkeypatch.setattr(loop_journal, "INGEST_GIVE_UP_SECONDS", 0.2)

    async def run() -> str | None:
        journal = LoopJournal(path, ChainHasher(None), asyncio.get_running_loop())
        other = sqlite3.connect(str(path), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        journal.record([_event(1)], None)
        await asyncio.sleep(0.6)
        second: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        journal.record([_event(2)], second.set_result)
        reason = await asyncio.wait_for(second, 5)
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
    directory = segment_directory(path)
    directory.mkdir()
    segment = directory / f"00000000000000000001-1{SEGMENT_SUFFIX}"
    records = [frame(encode_event(_event(seq)).payload) for seq in (1, 2, 3)]
    segment.write_bytes(b"".join(records) + records[0][:7])  # the last write was cut
    with open_store("sqlite:///" + str(path)) as store:
        first = encode_event(_event(1))
        store.append_batch([first], hasher, mark=("segment:" + segment.name, len(records[0])))
    with open_store("sqlite:///" + str(path), create=False) as store:
        assert recover_segments(store, hasher, directory) == 2
        assert recover_segments(store, hasher, directory) == 0
        assert store.mark("segment:" + segment.name) == 0  # forgotten with the file
    assert not segment.exists()
    assert _texts(path) == ["SELECT 1", "SELECT 2", "SELECT 3"]


def test_a_live_segment_is_not_recovered_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "j.db"

    async def run() -> int:
        journal = LoopJournal(path, ChainHasher(None), asyncio.get_running_loop())
        told: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        journal.record([_event(1)], told.set_result)
        await told
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
