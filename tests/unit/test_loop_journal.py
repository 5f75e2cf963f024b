"""LoopJournal: commits on the event loop, group commit per loop turn, a locked store retried."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from dbguard.journal import ChainHasher, StatementEvent, now_us, open_store
from dbguard.runtime import loop_journal
from dbguard.runtime.loop_journal import LoopJournal


def _event(seq: int) -> StatementEvent:
    return StatementEvent("s-1", now_us(), seq, f"SELECT {seq}", "allow")


def test_events_of_one_turn_share_one_commit_and_verify(tmp_path: Path) -> None:
    path = tmp_path / "j.db"

    async def run() -> list[str | None]:
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
        journal.close()
        return results

    assert asyncio.run(run()) == [None, None, None]
    with open_store("sqlite:///" + str(path), create=False) as store:
        events = [stored.event() for stored in store.iter_events()]
        texts = [event.text for event in events if isinstance(event, StatementEvent)]
        assert len(events) == 3
        assert texts == ["SELECT 1", "SELECT 2", "SELECT 3"]
        assert store.verify(ChainHasher(None)).ok


def test_a_store_locked_by_another_process_is_retried_then_given_up(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "j.db"
    monkeypatch.setattr(loop_journal, "BUSY_GIVE_UP_SECONDS", 0.3)

    async def run() -> tuple[str | None, str | None]:
        journal = LoopJournal(path, ChainHasher(None), asyncio.get_running_loop())
        other = sqlite3.connect(str(path), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        first: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        journal.record([_event(1)], first.set_result)
        await asyncio.sleep(0.05)
        assert not first.done()  # waiting, not failed, while the lock is briefly held
        other.execute("COMMIT")
        told_first = await asyncio.wait_for(first, 5)
        other.execute("BEGIN IMMEDIATE")  # now held for longer than the journal waits
        second: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        journal.record([_event(2)], second.set_result)
        told_second = await asyncio.wait_for(second, 5)
        other.execute("ROLLBACK")
        other.close()
        journal.close()
        return told_first, told_second

    first, second = asyncio.run(run())
    assert first is None
    assert second is not None
    assert "locked" in second
