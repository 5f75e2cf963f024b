# tests/unit/test_journal_store.py — THE store test suite, shared by every journal store.
# Here it runs against sqlite (`backend` fixture below); tests/integration/
# test_journal_postgres_store.py imports these same tests and runs them against a throwaway
# PostgreSQL by overriding `backend`. Covers appending and reading, verification and every
# tamper case (edit, delete, insert, reorder, tail truncation, a rebuilt chain with and
# without the key), exports of the store and tampered exports, prune, migrations from v1 and
# v2 stores, group commit counted by the store's commit hook, and two concurrent writers.
from __future__ import annotations

import io
import itertools
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from dbguard.journal import ChainHasher, JournalStore, JournalWriter, StoreError, decode_event, open_store
from dbguard.journal.chain import GENESIS_HASH
from dbguard.journal.events import SessionStartEvent, StatementEvent, canonical_bytes
from dbguard.journal.export import ExportFormat, export_range, verify_export
from dbguard.journal.store import CURRENT_SCHEMA_VERSION
from dbguard.journal.store_sqlite import SqliteJournalStore
from tests.unit.journal_helpers import KEY, T0, StoreBackend, fill, session_events


class SqliteBackend:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = "sqlite:///" + path.as_posix()

    def open(self, *, key: bytes | None = None, commit_hook: Callable[[int], None] | None = None,
             migrate: bool = True) -> JournalStore:
        return SqliteJournalStore(self.path, commit_hook=commit_hook, migrate=migrate)

    def raw(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path)
        try:
            rows = conn.execute(sql, tuple(params)).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()


@pytest.fixture
def backend(tmp_path: Path) -> StoreBackend:
    return SqliteBackend(tmp_path / "journal.db")


@pytest.fixture
def store(backend: StoreBackend) -> Iterator[JournalStore]:
    s = backend.open()
    try:
        yield s
    finally:
        s.close()


H = ChainHasher()
HK = ChainHasher(KEY)


def _two_sessions(store: JournalStore, hasher: ChainHasher = H) -> None:
    fill(store, hasher, session_events("s-0001", "copilot", T0))
    fill(store, hasher, session_events("s-0002", "alice", T0 + 60_000_000))


def _problems(store: JournalStore, hasher: ChainHasher = H) -> list[tuple[int, str]]:
    return [(p.seq, p.problem) for p in store.verify(hasher).problems]


# -- appending and reading ---------------------------------------------------------------------


def test_append_assigns_consecutive_seqs_and_reads_back(store: JournalStore) -> None:
    events = session_events()
    seqs = fill(store, H, events)
    assert seqs == list(range(1, len(events) + 1))
    stored = store.session_events("s-0001")
    assert [decode_event(e.payload) for e in stored] == events
    assert stored[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(stored))
    assert store.head().seq == len(events)
    assert store.schema_version() == CURRENT_SCHEMA_VERSION


def test_sessions_summary_filters_and_prefix(store: JournalStore) -> None:
    _two_sessions(store)
    found = store.sessions()
    assert [s.session_id for s in found] == ["s-0002", "s-0001"]  # newest first
    first = found[1]
    assert (first.identity, first.statements, first.blocked, first.held) == ("copilot", 4, 1, 0)
    assert first.end_reason == "client closed"
    assert [s.session_id for s in store.sessions(identity="alice")] == ["s-0002"]
    assert [s.session_id for s in store.sessions(since_us=T0 + 1)] == ["s-0002"]
    assert store.resolve_session("s-0002") == "s-0002"
    with pytest.raises(StoreError, match="ambiguous"):
        store.resolve_session("s-")
    with pytest.raises(StoreError, match="no session"):
        store.resolve_session("nope")


def test_tail_reads(store: JournalStore) -> None:
    _two_sessions(store)
    head = store.head().seq
    assert [e.seq for e in store.last_events(3)] == [head - 2, head - 1, head]
    assert [e.seq for e in store.events_after(head - 2)] == [head - 1, head]
    assert store.events_after(head) == []


def test_reopen_keeps_the_chain(backend: StoreBackend) -> None:
    with backend.open() as s:
        fill(s, H, session_events("s-0001"))
    with backend.open() as s:
        fill(s, H, session_events("s-0002", t0=T0 + 10**9))
        assert s.verify(H).ok
        assert s.verify(H).checked == 2 * len(session_events())


# -- verification and tampering in the store ----------------------------------------------------


def test_verify_clean_store(store: JournalStore) -> None:
    _two_sessions(store)
    report = store.verify(H)
    assert report.ok
    assert (report.first_seq, report.last_seq) == (1, 20)


def test_edit_is_named(store: JournalStore, backend: StoreBackend) -> None:
    _two_sessions(store)
    forged = canonical_bytes(StatementEvent("s-0001", T0 + 1000, 1, "SELECT 1 FROM payroll", "allow"))
    backend.raw("UPDATE journal_events SET payload = ? WHERE seq = 2", (forged,))
    assert _problems(store) == [(2, "edited")]


def test_edit_of_indexed_column_is_named(store: JournalStore, backend: StoreBackend) -> None:
    _two_sessions(store)
    backend.raw("UPDATE journal_events SET session_id = 's-9999' WHERE seq = 4")
    assert _problems(store) == [(4, "edited")]


def test_delete_is_named(store: JournalStore, backend: StoreBackend) -> None:
    _two_sessions(store)
    backend.raw("DELETE FROM journal_events WHERE seq = 7")
    assert _problems(store) == [(7, "deleted")]


def test_delete_of_the_last_events_is_named(store: JournalStore, backend: StoreBackend) -> None:
    _two_sessions(store)
    backend.raw("DELETE FROM journal_events WHERE seq >= 19")
    assert _problems(store) == [(19, "deleted")]


def test_delete_with_renumbering_is_named(store: JournalStore, backend: StoreBackend) -> None:
    _two_sessions(store)
    backend.raw("DELETE FROM journal_events WHERE seq = 5")
    for seq in range(6, 21):
        backend.raw("UPDATE journal_events SET seq = ? WHERE seq = ?", (seq - 1, seq))
    backend.raw("UPDATE journal_head SET last_seq = 19")
    problems = _problems(store)
    assert problems[0] == (5, "deleted")


def _insert_at(backend: StoreBackend, seq: int, forger: ChainHasher, last: int) -> None:
    """Renumber events >= seq up by one and put a forged event at `seq`, linked to seq-1."""
    for n in range(last, seq - 1, -1):
        backend.raw("UPDATE journal_events SET seq = ? WHERE seq = ?", (n + 1, n))
    prev_hash = str(backend.raw("SELECT hash FROM journal_events WHERE seq = ?", (seq - 1,))[0][0])
    forged = StatementEvent("s-0001", T0 + 1100, 99, "DELETE FROM audit_log", "allow")
    payload = canonical_bytes(forged)
    digest = forger.link(prev_hash, seq, payload)
    backend.raw(
        "INSERT INTO journal_events (seq, time_us, kind, session_id, payload, prev_hash, hash, identity, action,"
        " stmt_seq) VALUES (?, ?, 'statement', 's-0001', ?, ?, ?, 'copilot', 'allow', 99)",
        (seq, forged.time_us, payload, prev_hash, digest),
    )
    head = backend.raw("SELECT last_seq FROM journal_head")[0][0]
    backend.raw("UPDATE journal_head SET last_seq = ?", (int(head) + 1,))


def test_insert_is_named(store: JournalStore, backend: StoreBackend) -> None:
    _two_sessions(store)
    _insert_at(backend, 4, H, 20)
    assert _problems(store)[0] == (4, "inserted")


def test_reorder_is_named(store: JournalStore, backend: StoreBackend) -> None:
    _two_sessions(store)
    backend.raw("UPDATE journal_events SET seq = -1 WHERE seq = 8")
    backend.raw("UPDATE journal_events SET seq = 8 WHERE seq = 9")
    backend.raw("UPDATE journal_events SET seq = 9 WHERE seq = -1")
    problems = _problems(store)
    assert problems[0] == (8, "reordered")
    assert {p for _, p in problems} == {"reordered"}


def _rebuild_from(backend: StoreBackend, seq: int, forger: ChainHasher) -> None:
    """What someone with write access does after an edit: recompute every hash from `seq` on."""
    rows = backend.raw("SELECT seq, payload FROM journal_events WHERE seq >= ? ORDER BY seq", (seq,))
    prev = str(backend.raw("SELECT hash FROM journal_events WHERE seq = ?", (seq - 1,))[0][0])
    for n, payload in rows:
        digest = forger.link(prev, int(n), bytes(payload))
        backend.raw("UPDATE journal_events SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, n))
        prev = digest
    backend.raw("UPDATE journal_head SET last_hash = ?", (prev,))


def test_unkeyed_chain_can_be_rebuilt_keyed_cannot(backend: StoreBackend, tmp_path: Path) -> None:
    forged = canonical_bytes(StatementEvent("s-0001", T0 + 1000, 1, "SELECT 1 FROM payroll", "allow"))
    with backend.open() as s:
        _two_sessions(s, HK)
        backend.raw("UPDATE journal_events SET payload = ? WHERE seq = 2", (forged,))
        # Without the key the tamperer rebuilds with plain SHA-256, or guesses a key: both fail.
        _rebuild_from(backend, 2, ChainHasher(b"guessed-key-guessed-key"))
        assert _problems(s, HK)[0] == (2, "edited")
        _rebuild_from(backend, 2, H)
        assert _problems(s, HK)[0] == (2, "edited")
        # The same rebuild is what an unkeyed chain cannot detect: the reason keys exist.
        _rebuild_from(backend, 2, HK)
        assert s.verify(HK).ok


def test_wrong_or_missing_key_is_refused(store: JournalStore) -> None:
    fill(store, HK, session_events())
    with pytest.raises(StoreError, match="keyed"):
        store.check_hasher(H)
    with pytest.raises(StoreError, match="another key"):
        store.check_hasher(ChainHasher(b"another-key-another-key"))
    with pytest.raises(StoreError, match="another key"):
        fill(store, ChainHasher(b"another-key-another-key"), session_events("s-0002"))
    assert store.verify(HK).ok


# -- exports -----------------------------------------------------------------------------------


def _export(store: JournalStore, fmt: ExportFormat = "jsonl", hasher: ChainHasher = H, **filters: Any) -> str:
    out = io.StringIO()
    export_range(store, out, fmt=fmt, hasher=hasher, **filters)
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_verifies_on_its_own(store: JournalStore, fmt: ExportFormat) -> None:
    _two_sessions(store)
    fill(store, H, [StatementEvent("s-0002", T0 + 61_000_000, 9, "SELECT 'a,\"b\"'\r\n\t, 'é ✓'\nFROM t", "allow")])
    text = _export(store, fmt)
    report = verify_export(text)
    assert report.ok, report.first_problem()
    assert report.checked == 21
    assert verify_export(io.StringIO(text, newline="")).ok  # read from a file as the CLI does


def test_export_time_range_has_its_anchor(store: JournalStore) -> None:
    _two_sessions(store)
    text = _export(store, since_us=T0 + 60_000_000)
    report = verify_export(text)
    assert report.ok
    assert report.header["range"]["first_seq"] == 11
    assert report.header["anchor"]["seq"] == 10
    assert report.header["anchor"]["hash"] == store.session_events("s-0001")[-1].hash


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_filtered_export_keeps_the_chain(store: JournalStore, fmt: ExportFormat) -> None:
    _two_sessions(store)
    by_identity = verify_export(_export(store, fmt, identity="alice"))
    assert by_identity.ok, by_identity.first_problem()
    assert (by_identity.checked, by_identity.omitted) == (10, 10)
    blocked = verify_export(_export(store, fmt, decision="block"))
    assert blocked.ok, blocked.first_problem()
    assert blocked.checked == 4  # two blocked statements and their outcomes


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_tampered_export_is_named(store: JournalStore, fmt: ExportFormat) -> None:
    _two_sessions(store)
    lines = _lines(_export(store, fmt))
    body = 1 if fmt == "jsonl" else 2  # index of the line of event 1

    edited = list(lines)
    edited[body + 5] = edited[body + 5].replace("SELECT 3", "SELECT 7")  # event 6
    assert "SELECT 7" in edited[body + 5]
    report = verify_export("".join(edited))
    assert [(p.seq, p.problem) for p in report.problems] == [(6, "edited")]

    deleted = lines[: body + 5] + lines[body + 6:]
    report = verify_export("".join(deleted))
    assert (report.problems[0].seq, report.problems[0].problem) == (6, "deleted")

    reordered = list(lines)
    reordered[body + 6], reordered[body + 7] = reordered[body + 7], reordered[body + 6]
    report = verify_export("".join(reordered))
    assert report.problems[0].seq in (7, 8)
    assert report.problems[0].problem == "reordered"

    inserted = list(lines)
    inserted.insert(body + 3, lines[body + 3])  # a duplicated (replayed) line
    report = verify_export("".join(inserted))
    assert report.problems[0].seq == 4
    assert not report.ok

    truncated = lines[:-2]
    report = verify_export("".join(truncated))
    assert not report.ok
    assert report.problems[0].seq == 19


def test_keyed_export_needs_the_key_and_protects_its_header(store: JournalStore) -> None:
    fill(store, HK, session_events())
    text = _export(store, hasher=HK)
    assert verify_export(text, KEY).ok
    from dbguard.journal.export import KeyRequired

    with pytest.raises(KeyRequired):
        verify_export(text)
    with pytest.raises(KeyRequired):
        _export(store, hasher=H)
    altered = text.replace('"events": 10', '"events": 9', 1)
    assert not verify_export(altered, KEY).ok


# -- prune ---------------------------------------------------------------------------------------


def test_prune_keeps_the_rest_verifiable(store: JournalStore, backend: StoreBackend) -> None:
    _two_sessions(store)
    result = store.prune(T0 + 60_000_000, H)
    assert result.deleted == 10
    assert result.anchor.seq == 10
    assert store.anchor() == result.anchor
    assert store.verify(H).ok
    assert [s.session_id for s in store.sessions()] == ["s-0002"]
    prune_event = store.last_events(1)[0]
    assert prune_event.kind == "prune"
    assert prune_event.seq == result.prune_seq == 21
    assert verify_export(_export(store)).ok
    assert store.prune(T0 + 60_000_000, H).deleted == 0
    backend.raw("UPDATE journal_anchor SET hash = ?", ("ab" * 32,))
    assert not store.verify(H).ok


# -- migrations ------------------------------------------------------------------------------------


def test_migrates_a_version_1_store(backend: StoreBackend) -> None:
    with backend.open(migrate=False) as old:
        assert old.migrate(target=1) == [1]
        assert old.schema_version() == 1
    # Fill it the way version 1 did: the chained columns only, no sessions table.
    prev = GENESIS_HASH
    events = session_events("s-0001", "copilot") + session_events("s-0002", "alice", T0 + 10**7)
    for seq, event in enumerate(events, 1):
        payload = canonical_bytes(event)
        digest = H.link(prev, seq, payload)
        backend.raw("INSERT INTO journal_events (seq, time_us, kind, session_id, payload, prev_hash, hash)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)", (seq, event.time_us, event.kind.value, event.session_id,
                                                      payload, prev, digest))
        prev = digest
    backend.raw("UPDATE journal_head SET last_seq = ?, last_hash = ?", (len(events), prev))
    backend.raw("INSERT INTO journal_meta (name, value) VALUES ('chain_algorithm', 'sha256'), ('chain_key_id', '')")

    with backend.open() as s:
        assert s.schema_version() == CURRENT_SCHEMA_VERSION
        assert s.verify(H).ok
        assert {x.session_id: x.identity for x in s.sessions()} == {"s-0001": "copilot", "s-0002": "alice"}
        assert s.sessions(identity="alice")[0].blocked == 1
        assert verify_export(_export(s, identity="alice")).checked == 10
        fill(s, H, session_events("s-0003", t0=T0 + 10**8))
        assert s.verify(H).ok
    versions = [int(r[0]) for r in backend.raw("SELECT version FROM journal_migrations ORDER BY version")]
    assert versions == list(range(1, CURRENT_SCHEMA_VERSION + 1))


def _event_indexes(backend: StoreBackend) -> set[str]:
    if backend.name == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'journal_events'"
    else:
        sql = "SELECT indexname FROM pg_indexes WHERE tablename = 'journal_events' AND schemaname = current_schema()"
    return {str(row[0]) for row in backend.raw(sql)}


def test_migrates_a_version_2_store(backend: StoreBackend) -> None:
    """Version 3 drops the identity index and, in sqlite, makes seq the rowid: every event,
    hash and session survives it, and the chain goes on."""
    with backend.open(migrate=False) as old:
        assert old.migrate(target=2) == [1, 2]
        _two_sessions(old)
        before = [(e.seq, e.time_us, e.session_id, e.payload, e.prev_hash, e.hash) for e in old.iter_events()]
    assert "journal_events_identity" in _event_indexes(backend)
    with backend.open() as s:
        assert s.schema_version() == CURRENT_SCHEMA_VERSION
        assert [(e.seq, e.time_us, e.session_id, e.payload, e.prev_hash, e.hash) for e in s.iter_events()] == before
        assert s.verify(H).ok
        assert [x.session_id for x in s.sessions(identity="alice")] == ["s-0002"]
        assert verify_export(_export(s, identity="alice")).checked == 10
        fill(s, H, session_events("s-0003", t0=T0 + 10**8))
        assert s.verify(H).ok
        assert s.head().seq == len(before) + 10
    assert _event_indexes(backend) >= {"journal_events_time", "journal_events_session"}
    assert "journal_events_identity" not in _event_indexes(backend)
    if backend.name == "sqlite":
        columns = {str(r[1]): (str(r[2]), int(r[5])) for r in backend.raw("PRAGMA table_info(journal_events)")}
        assert columns["seq"] == ("INTEGER", 1)  # the rowid itself: no second B-tree for seq
        assert [int(r[0]) for r in backend.raw("SELECT rowid FROM journal_events ORDER BY seq")] == list(
            range(1, len(before) + 11))


def test_newer_schema_is_refused(backend: StoreBackend) -> None:
    backend.open().close()
    backend.raw("INSERT INTO journal_migrations (version, description, applied_us) VALUES (99, 'future', 0)")
    with pytest.raises(StoreError, match="newer than this dbguard"):
        backend.open()


def test_open_store_by_url(backend: StoreBackend) -> None:
    with open_store(backend.url) as s:
        fill(s, H, session_events())
    with open_store(backend.url, create=False) as s:
        assert s.verify(H).checked == 10


# -- group commit and concurrent writers --------------------------------------------------------


def test_group_commit_batches_events_submitted_during_a_commit(backend: StoreBackend) -> None:
    commits: list[int] = []
    in_first_commit = threading.Event()
    release = threading.Event()

    def hook(count: int) -> None:
        commits.append(count)
        if len(commits) == 1:
            in_first_commit.set()
            release.wait()

    writer = JournalWriter(lambda: backend.open(commit_hook=hook), H)
    try:
        first = writer.submit(session_events()[0])
        assert in_first_commit.wait(30)
        # The writer thread is inside the first commit: all of these go into the next one.
        futures = [writer.submit(e) for e in session_events()[1:]]
        futures += [writer.submit(e) for e in session_events("s-0002", t0=T0 + 10**7)]
        release.set()
        seqs = [f.result(30) for f in futures]
    finally:
        release.set()
        writer.close()
    assert first.result() == 1
    assert seqs == list(range(2, 21))
    assert commits == [1, 19]
    assert writer.stats.transactions == 2
    with backend.open() as s:
        assert s.verify(H).ok


def test_two_writers_share_one_chain(backend: StoreBackend) -> None:
    per_writer = 150
    writers = [JournalWriter(backend.open, H, max_batch=16) for _ in range(2)]
    results: list[list[int]] = [[], []]

    def run(i: int) -> None:
        futures = []
        for n in range(per_writer):
            sid = f"w{i}-{n // 10}"
            event = (SessionStartEvent(sid, T0 + n, f"id{i}", "agent", (), "x", False, "l", "postgres", "db")
                     if n % 10 == 0 else StatementEvent(sid, T0 + n, n % 10, f"SELECT {n}", "allow"))
            futures.append(writers[i].submit(event))
        results[i] = [f.result(60) for f in futures]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for w in writers:
        w.close()
    everything = sorted(results[0] + results[1])
    assert everything == list(range(1, 2 * per_writer + 1))
    assert results[0] == sorted(results[0])
    assert results[1] == sorted(results[1])
    with backend.open() as s:
        report = s.verify(H)
        assert report.ok, [str(p) for p in report.problems]
        assert report.checked == 2 * per_writer


_KILLED_WRITER = """
import sys
from dbguard.journal import ChainHasher, JournalWriter, StatementEvent, open_store
writer = JournalWriter(lambda: open_store(sys.argv[1]), ChainHasher())
n = 0
while True:
    futures = [writer.submit(StatementEvent("k", 1, n + i, "SELECT 1", "allow")) for i in range(8)]
    n += 8
    for f in futures:
        print(f.result(), flush=True)  # acknowledged: what a session would forward after
"""


def test_kill_9_loses_no_acknowledged_event(backend: StoreBackend) -> None:
    import os
    import signal
    import subprocess
    import sys

    backend.open().close()  # create and migrate first, so the child only appends
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, backend.url], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None
    acknowledged = []
    try:
        for line in child.stdout:
            acknowledged.append(int(line))
            if len(acknowledged) >= 300:
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    with backend.open() as s:
        report = s.verify(H)
        assert report.ok, [str(p) for p in report.problems]
        assert s.head().seq >= max(acknowledged)
        stored = {e.seq for e in s.iter_events(0)}
        assert set(acknowledged) <= stored


def test_a_repeated_session_start_is_kept_and_does_not_fail(store: JournalStore) -> None:
    start = session_events()[0]
    fill(store, H, [start])
    assert fill(store, H, [start, *session_events()[1:]]) == list(range(2, 12))
    assert len(store.sessions()) == 1
    assert store.verify(H).ok


def test_a_missing_chain_head_is_a_problem(store: JournalStore, backend: StoreBackend) -> None:
    _two_sessions(store)
    backend.raw("DELETE FROM journal_head")
    report = store.verify(H)
    assert [p.problem for p in report.problems] == ["deleted"]
    assert "chain head row is missing" in report.problems[0].message
