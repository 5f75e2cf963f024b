# dbguard/journal/store.py — owns what every journal store shares: the schema and its
# migrations (journal_migrations records which have run), appending a batch of events in one
# transaction (sequence numbers, prev_hash and hash assigned under the chain-head lock), the
# read queries (sessions, one session, tail, export ranges with filters), the chain head and
# prune anchor, and prune itself. The SQL is written once with `?` placeholders; a backend
# (store_sqlite.py, store_postgres.py) supplies the connection, transactions, the head lock
# and its placeholder style. It also lends its connection to dbguard.approvals (query,
# execute, write_transaction, append_in_transaction, notify, listen), whose tables live in the
# same database so a decision and its journal event commit together. It must not know about
# sessions, sockets, approvals' tables or the CLI.
from __future__ import annotations

import abc
import contextlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from dbguard.journal.chain import (
    GENESIS,
    GENESIS_HASH,
    Anchor,
    ChainHasher,
    ChainProblem,
    StoredEvent,
    VerifyReport,
    verify_events,
)
from dbguard.journal.events import (
    EVENT_TYPES,
    SCHEMA_VERSION,
    ApprovalEvent,
    CancelEvent,
    EncodingError,
    JournalEvent,
    OutcomeEvent,
    PruneEvent,
    SessionEndEvent,
    SessionStartEvent,
    StatementEvent,
    canonical_bytes,
    decode_event,
    now_us,
)

__all__ = [
    "CURRENT_SCHEMA_VERSION",
    "EncodedEvent",
    "JournalStore",
    "Listener",
    "MarkMoved",
    "PruneResult",
    "SessionSummary",
    "StoreError",
    "encode_event",
    "encoded_from_payload",
]

# Rows fetched per round trip when iterating a long range.
_PAGE: Final = 1000


class StoreError(Exception):
    """The journal store cannot be opened, read or written (the message says why)."""


class MarkMoved(StoreError):
    """A segment's mark is not where the appender expected: someone else appended from it."""

    def __init__(self, name: str, position: int) -> None:
        super().__init__(f"{name} is at {position}: appended by another process")
        self.name = name
        self.position = position


@dataclass(slots=True)  # not frozen: built twice per statement, and a frozen init costs twice as much
class EncodedEvent:
    """An event ready to append: its canonical bytes plus the columns the store indexes.
    Treat it as immutable."""

    kind: str
    session_id: str
    time_us: int
    payload: bytes
    stmt_seq: int | None
    action: str
    event: JournalEvent | None  # None: read back from a segment, and not needed (encoded_from_payload)


# Each event type's kind as the stored text (an enum's `.value` is a slow descriptor).
_KIND_TEXT: Final[Mapping[type[Any], str]] = {cls: kind.value for kind, cls in EVENT_TYPES.items()}


def encode_event(event: JournalEvent) -> EncodedEvent:
    """Encode once, in the caller's thread, so a bad event fails its own caller only."""
    return _encoded(event, canonical_bytes(event))


_JSON: Final = json.JSONDecoder()


def encoded_from_payload(payload: bytes) -> EncodedEvent:
    """An event read back from its canonical bytes (a segment's record), ready to append as
    those very bytes (whatever a later encoder would write). Raises EncodingError.

    The events of every statement (statement, outcome) are read only as far as the store's
    columns need (`event` is None): the appender reads thousands a second, and building each
    event object cost more than appending it. Every other kind is decoded in full."""
    try:
        obj = _JSON.decode(payload.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError too
        raise EncodingError(f"not a JSON event: {exc}") from None
    if isinstance(obj, dict) and obj.get("v") == SCHEMA_VERSION:
        kind = obj.get("kind")
        if kind == "statement" or kind == "outcome":
            session_id, time_us = obj.get("session_id"), obj.get("time_us")
            seq = obj.get("seq") if kind == "statement" else obj.get("statement_seq")
            action = obj.get("action") if kind == "statement" else ""
            if type(session_id) is str and type(time_us) is int and type(seq) is int and type(action) is str:
                return EncodedEvent(kind, session_id, time_us, payload, seq, action, None)
    return _encoded(decode_event(obj), payload)


def _encoded(event: JournalEvent, payload: bytes) -> EncodedEvent:
    cls = type(event)
    if cls is StatementEvent:
        statement = cast(StatementEvent, event)
        return EncodedEvent("statement", statement.session_id, statement.time_us, payload, statement.seq,
                            statement.action, event)
    stmt_seq: int | None = None
    if isinstance(event, OutcomeEvent | CancelEvent | ApprovalEvent):
        stmt_seq = event.statement_seq
    return EncodedEvent(_KIND_TEXT[cls], event.session_id, event.time_us, payload, stmt_seq, "", event)


@dataclass(frozen=True, slots=True)
class SessionSummary:
    session_id: str
    identity: str
    identity_kind: str
    listener: str
    protocol: str
    database: str
    client_address: str
    start_us: int
    end_us: int | None
    end_reason: str
    statements: int
    blocked: int
    held: int


@dataclass(frozen=True, slots=True)
class PruneResult:
    deleted: int
    anchor: Anchor
    prune_seq: int  # the sequence number of the prune event recording it (0 if nothing pruned)


# ---------------------------------------------------------------------------------------------
# Schema and migrations. Version 1 is the first released layout: the chained events only.
# Version 2 adds the indexed columns (identity, action, stmt_seq), the sessions table and the
# prune anchor, backfilled from the events' own bytes. Never edit a released migration: add one.

_SCHEMA_V1: Final = (
    "CREATE TABLE journal_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE journal_head (id INTEGER PRIMARY KEY CHECK (id = 1), last_seq BIGINT NOT NULL,"
    " last_hash TEXT NOT NULL)",
    f"INSERT INTO journal_head (id, last_seq, last_hash) VALUES (1, 0, '{GENESIS_HASH}')",  # noqa: S608 (constants only; values are parameters)
    "CREATE TABLE journal_events (seq BIGINT PRIMARY KEY, time_us BIGINT NOT NULL, kind TEXT NOT NULL,"
    " session_id TEXT NOT NULL, payload {BLOB} NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)",
)

_SCHEMA_V2: Final = (
    "ALTER TABLE journal_events ADD COLUMN identity TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE journal_events ADD COLUMN action TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE journal_events ADD COLUMN stmt_seq BIGINT",
    "CREATE INDEX journal_events_time ON journal_events (time_us)",
    "CREATE INDEX journal_events_session ON journal_events (session_id, stmt_seq)",
    "CREATE INDEX journal_events_identity ON journal_events (identity)",
    "CREATE TABLE journal_sessions (session_id TEXT PRIMARY KEY, identity TEXT NOT NULL,"
    " identity_kind TEXT NOT NULL, listener TEXT NOT NULL, protocol TEXT NOT NULL, database_name TEXT NOT NULL,"
    " client_address TEXT NOT NULL, start_seq BIGINT NOT NULL, start_us BIGINT NOT NULL, end_us BIGINT,"
    " end_reason TEXT NOT NULL DEFAULT '')",
    "CREATE INDEX journal_sessions_start ON journal_sessions (start_us)",
    "CREATE TABLE journal_anchor (id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL,"
    " hash TEXT NOT NULL, pruned_us BIGINT NOT NULL)",
)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]
    backfill: Callable[[JournalStore], None] | None = None


def _backfill_v2(store: JournalStore) -> None:
    """Fill the version 2 columns and the sessions table from the events' canonical bytes."""
    last = 0
    identities: dict[str, str] = {}
    while True:
        rows = store._rows(
            "SELECT seq, payload FROM journal_events WHERE seq > ? ORDER BY seq LIMIT ?", (last, _PAGE)
        )
        if not rows:
            return
        updates: list[tuple[Any, ...]] = []
        for seq, payload in rows:
            enc = encode_event(decode_event(bytes(payload)))
            event = enc.event
            if isinstance(event, SessionStartEvent):
                identities[event.session_id] = event.identity
                store._exec(_INSERT_SESSION, _session_row(event, int(seq)))
            elif isinstance(event, SessionEndEvent):
                store._exec(_END_SESSION, (event.time_us, event.reason, event.session_id))
            identity = identities.get(enc.session_id, "") if enc.session_id else ""
            updates.append((identity, enc.action, enc.stmt_seq, int(seq)))
            last = int(seq)
        store._exec_many("UPDATE journal_events SET identity = ?, action = ?, stmt_seq = ? WHERE seq = ?", updates)


# Version 3 drops the identity index (no query reads it: exports filter a range of sequence
# numbers row by row, sessions by identity go through journal_sessions) and, in sqlite, makes
# `seq` the table's rowid (`INTEGER PRIMARY KEY`; `BIGINT PRIMARY KEY` kept a second B-tree
# beside the rowid's). Each event then costs two index entries fewer to append (about 1.2 µs
# of the appender's ~7 in sqlite: docs/performance.md, "The journal's cost").
_SCHEMA_V3: Final = ("DROP INDEX journal_events_identity",)
_SQLITE_EVENTS_V3: Final = (
    "CREATE TABLE journal_events_v3 (seq INTEGER PRIMARY KEY, time_us BIGINT NOT NULL, kind TEXT NOT NULL,"
    " session_id TEXT NOT NULL, payload BLOB NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,"
    " identity TEXT NOT NULL DEFAULT '', action TEXT NOT NULL DEFAULT '', stmt_seq BIGINT)",
    "INSERT INTO journal_events_v3 (seq, time_us, kind, session_id, payload, prev_hash, hash, identity, action,"
    " stmt_seq) SELECT seq, time_us, kind, session_id, payload, prev_hash, hash, identity, action, stmt_seq"
    " FROM journal_events ORDER BY seq",
    "DROP TABLE journal_events",
    "ALTER TABLE journal_events_v3 RENAME TO journal_events",
    "CREATE INDEX journal_events_time ON journal_events (time_us)",
    "CREATE INDEX journal_events_session ON journal_events (session_id, stmt_seq)",
)


def _rebuild_v3(store: JournalStore) -> None:
    """sqlite: copy the events into a table whose `seq` is the rowid (sqlite cannot change a
    column's primary key in place); in the same transaction as the rest of the migration."""
    if store.dialect == "sqlite":
        for statement in _SQLITE_EVENTS_V3:
            store._exec(statement)


MIGRATIONS: Final = (
    Migration(1, "chained events, chain head, metadata", _SCHEMA_V1),
    Migration(2, "indexed identity/action/statement columns, sessions table, prune anchor", _SCHEMA_V2, _backfill_v2),
    Migration(3, "no identity index; in sqlite, seq is the rowid", _SCHEMA_V3, _rebuild_v3),
)
CURRENT_SCHEMA_VERSION: Final = MIGRATIONS[-1].version

_INSERT_EVENT: Final = (
    "INSERT INTO journal_events (seq, time_us, kind, session_id, payload, prev_hash, hash, identity, action, stmt_seq)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_SESSION: Final = (
    "INSERT INTO journal_sessions (session_id, identity, identity_kind, listener, protocol, database_name,"
    " client_address, start_seq, start_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    # A repeated start (a caller retrying after a failed commit) must not poison the batch:
    # the index keeps the first; both events stay in the chain.
    " ON CONFLICT (session_id) DO NOTHING"
)
_END_SESSION: Final = "UPDATE journal_sessions SET end_us = ?, end_reason = ? WHERE session_id = ?"
_EVENT_COLUMNS: Final = "seq, time_us, kind, session_id, payload, prev_hash, hash"
# Every read of events starts so; what follows it is literal SQL with `?` parameters.
_SELECT_EVENTS: Final = "SELECT seq, time_us, kind, session_id, payload, prev_hash, hash FROM journal_events"
_SESSION_COLUMNS: Final = (
    "s.session_id, s.identity, s.identity_kind, s.listener, s.protocol, s.database_name, s.client_address,"
    " s.start_us, s.end_us, s.end_reason,"
    " (SELECT count(*) FROM journal_events e WHERE e.session_id = s.session_id AND e.kind = 'statement'),"
    " (SELECT count(*) FROM journal_events e WHERE e.session_id = s.session_id AND e.kind = 'statement'"
    "  AND e.action = 'block'),"
    " (SELECT count(*) FROM journal_events e WHERE e.session_id = s.session_id AND e.kind = 'statement'"
    "  AND e.action = 'hold')"
)
# An outcome, cancel or approval belongs to the decision of its statement.
_DECISION_MATCH: Final = (
    "((kind = 'statement' AND action = ?) OR (kind <> 'statement' AND stmt_seq IS NOT NULL AND EXISTS ("
    "SELECT 1 FROM journal_events st WHERE st.session_id = journal_events.session_id AND st.kind = 'statement'"
    " AND st.stmt_seq = journal_events.stmt_seq AND st.action = ?)))"
)


def _filters(identity: str | None, decision: str | None) -> tuple[str, list[Any]]:
    """The SQL condition (and its parameters) for an export's identity and decision filters."""
    conditions: list[str] = []
    params: list[Any] = []
    if identity is not None:
        conditions.append("identity = ?")
        params.append(identity)
    if decision is not None:
        conditions.append(_DECISION_MATCH)
        params += [decision, decision]
    return (" AND ".join(conditions) if conditions else "1 = 1"), params


def _session_row(event: SessionStartEvent, seq: int) -> tuple[Any, ...]:
    return (event.session_id, event.identity, event.identity_kind, event.listener, event.protocol,
            event.database, event.client_address, seq, event.time_us)


def _stored(row: Sequence[Any]) -> StoredEvent:
    seq, time_us, kind, session_id, payload, prev_hash, digest = row
    raw = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else bytes(payload)
    return StoredEvent(int(seq), int(time_us), str(kind), str(session_id), raw, str(prev_hash), str(digest))


# ---------------------------------------------------------------------------------------------
# The store


class Listener(abc.ABC):
    """Notifications on one channel, on a connection of their own (store.listen())."""

    @abc.abstractmethod
    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds; True when at least one notification arrived."""

    @abc.abstractmethod
    def close(self) -> None: ...


class JournalStore(abc.ABC):
    """A journal store. Not thread-safe: one thread uses one store object (the writer thread
    owns its own; readers open theirs). `commit_hook(n)` runs after each committed append
    transaction with the number of events it held (tests count transactions with it)."""

    url_for_messages: str = ""

    def __init__(self, commit_hook: Callable[[int], None] | None = None) -> None:
        self.commit_hook = commit_hook
        self._identities: dict[str, str] = {}
        self._chain_checked: tuple[str, str] | None = None

    # -- backend primitives -------------------------------------------------------------------

    @abc.abstractmethod
    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    @abc.abstractmethod
    def _exec(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    @abc.abstractmethod
    def _exec_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    @abc.abstractmethod
    def _write_transaction(self) -> contextlib.AbstractContextManager[None]:
        """One write transaction; commits on success, rolls back on error."""

    @abc.abstractmethod
    def _lock_migrations(self) -> None:
        """Inside a write transaction: exclude other processes migrating the same store."""

    @abc.abstractmethod
    def _ddl(self, statement: str) -> str:
        """A schema statement in this backend's dialect."""

    @abc.abstractmethod
    def _table_exists(self, name: str) -> bool: ...

    _LOCK_HEAD_SQL = "SELECT last_seq, last_hash FROM journal_head WHERE id = 1"

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> JournalStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema -------------------------------------------------------------------------------

    def require_journal(self) -> None:
        """Raise StoreError unless this store holds a journal (readers never create one)."""
        if self.schema_version() == 0:
            raise StoreError(f"{self.url_for_messages}: no journal there (nothing has been recorded in this store)")

    def schema_version(self) -> int:
        if not self._table_exists("journal_migrations"):
            return 0
        rows = self._rows("SELECT max(version) FROM journal_migrations")
        return int(rows[0][0] or 0)

    def migrate(self, target: int = CURRENT_SCHEMA_VERSION) -> list[int]:
        """Bring the schema to `target` (default: current); returns the versions applied.

        Each migration runs in its own transaction under the migration lock and re-reads the
        version inside it, so proxies starting together apply each migration exactly once."""
        applied: list[int] = []
        if self.schema_version() == target == CURRENT_SCHEMA_VERSION:
            return applied  # up to date: no write, no lock (a read-only account can open it)
        with self._write_transaction():
            self._lock_migrations()
            self._exec(self._ddl(
                "CREATE TABLE IF NOT EXISTS journal_migrations (version INTEGER PRIMARY KEY,"
                " description TEXT NOT NULL, applied_us BIGINT NOT NULL)"
            ))
        for migration in MIGRATIONS:
            if migration.version > target:
                break
            with self._write_transaction():
                self._lock_migrations()
                current = self.schema_version()
                if current > CURRENT_SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.url_for_messages}: the journal schema is version {current}, newer than this "
                        f"dbguard understands ({CURRENT_SCHEMA_VERSION}): upgrade dbguard"
                    )
                if migration.version <= current:
                    continue
                for statement in migration.statements:
                    self._exec(self._ddl(statement))
                if migration.backfill is not None:
                    migration.backfill(self)
                self._exec(
                    "INSERT INTO journal_migrations (version, description, applied_us) VALUES (?, ?, ?)",
                    (migration.version, migration.description, now_us()),
                )
            applied.append(migration.version)
        return applied

    # -- other tables in the same store --------------------------------------------------------
    # dbguard.approvals keeps its own tables (and their own migrations) in the journal's
    # database, on this connection, so a decision and its journal event commit together. These
    # are the backend primitives it needs; the SQL it passes uses `?` placeholders.

    dialect: str = ""  # "sqlite" | "postgresql"

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._rows(sql, params)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._exec(sql, params)

    def ddl(self, statement: str) -> str:
        """A schema statement in this backend's dialect ({BLOB} becomes BLOB or BYTEA)."""
        return self._ddl(statement)

    def table_exists(self, name: str) -> bool:
        return self._table_exists(name)

    @contextlib.contextmanager
    def write_transaction(self) -> Iterator[None]:
        """One write transaction (commits on success, rolls back on error); on PostgreSQL
        rows read in it with `SELECT … FOR UPDATE` stay locked until it ends."""
        try:
            with self._write_transaction():
                yield
        except BaseException:
            self._chain_checked = None  # chain parameters bound in it may have been rolled back
            raise

    def lock_migrations(self) -> None:
        """Inside write_transaction: exclude other processes migrating the same store."""
        self._lock_migrations()

    def append_in_transaction(self, events: Sequence[JournalEvent], hasher: ChainHasher) -> list[int]:
        """Inside write_transaction: append events to the chain (under the chain-head lock),
        committed with whatever else the transaction writes."""
        return self._append_locked([encode_event(e) for e in events], hasher)

    def notify(self, channel: str, payload: str = "") -> None:
        """Inside a transaction: wake listeners of `channel` once it commits (PostgreSQL
        NOTIFY); a no-op where the backend has no notifications (sqlite: readers poll)."""
        del channel, payload

    def listen(self, channel: str) -> Listener | None:
        """A connection of its own waiting for notifications on `channel`, or None where the
        backend has none (the caller then polls)."""
        return None

    # -- chain parameters ---------------------------------------------------------------------

    def chain_params(self) -> tuple[str, str] | None:
        """(algorithm, key id) the chain was started with, or None before the first append."""
        rows = self._rows("SELECT name, value FROM journal_meta WHERE name IN ('chain_algorithm', 'chain_key_id')")
        values = dict(rows)
        if "chain_algorithm" not in values:
            return None
        return str(values["chain_algorithm"]), str(values.get("chain_key_id", ""))

    def check_hasher(self, hasher: ChainHasher) -> None:
        """Raise StoreError when `hasher` does not fit the chain already in the store."""
        params = self.chain_params()
        if params is None:
            return
        why = hasher.check_matches(*params)
        if why is not None:
            raise StoreError(f"{self.url_for_messages}: {why}")

    def _bind_chain(self, hasher: ChainHasher) -> None:
        """Inside the append transaction: record the algorithm on first use, else check it."""
        wanted = (hasher.algorithm.value, hasher.key_id)
        if self._chain_checked == wanted:
            return
        params = self.chain_params()
        if params is None:
            self._exec_many("INSERT INTO journal_meta (name, value) VALUES (?, ?)",
                            [("chain_algorithm", wanted[0]), ("chain_key_id", wanted[1])])
        else:
            why = hasher.check_matches(*params)
            if why is not None:
                raise StoreError(f"{self.url_for_messages}: {why}")
        self._chain_checked = wanted

    # -- appending ----------------------------------------------------------------------------

    def append_batch(self, events: Sequence[EncodedEvent], hasher: ChainHasher, *,
                     mark: tuple[str, int] | None = None, mark_from: int | None = None) -> list[int]:
        """Append events in one transaction (one durable commit); returns their sequence numbers.
        `mark` (name, position) is recorded in the same transaction: how far a write-ahead
        segment has been appended (journal/segments.py), so no event is appended twice. With
        `mark_from`, the events are the segment's records from that position: if the mark says
        otherwise (another process appended some of them meanwhile), nothing is appended and
        `MarkMoved` names where the mark is."""
        if not events:
            return []
        try:
            with self._write_transaction():
                if mark is not None and mark_from is not None:
                    rows = self._rows("SELECT value FROM journal_meta WHERE name = ?", (mark[0],))
                    current = int(rows[0][0]) if rows else 0
                    if current != mark_from:
                        raise MarkMoved(mark[0], current)
                seqs = self._append_locked(events, hasher)
                if mark is not None:
                    self._exec("DELETE FROM journal_meta WHERE name = ?", (mark[0],))
                    self._exec("INSERT INTO journal_meta (name, value) VALUES (?, ?)", (mark[0], str(mark[1])))
        except BaseException:
            self._chain_checked = None  # the chain parameters may have been rolled back with it
            raise
        if self.commit_hook is not None:
            self.commit_hook(len(events))
        return seqs

    def _append_locked(self, events: Sequence[EncodedEvent], hasher: ChainHasher) -> list[int]:
        """Inside a write transaction: lock the chain head, chain and insert the events."""
        head = self._rows(self._LOCK_HEAD_SQL)  # first: it serializes appenders, and binding the chain
        self._bind_chain(hasher)
        last_seq, last_hash = int(head[0][0]), str(head[0][1])
        rows: list[tuple[Any, ...]] = []
        first_seq = last_seq + 1
        hashes = hasher.links(last_hash, first_seq, [enc.payload for enc in events])
        identities = self._identities
        for enc, digest in zip(events, hashes, strict=True):
            last_seq += 1
            event = enc.event
            if event is not None:  # the events of every statement come without one (nothing to do here)
                if isinstance(event, SessionStartEvent):
                    identities[event.session_id] = event.identity
                    self._exec(_INSERT_SESSION, _session_row(event, last_seq))
                elif isinstance(event, SessionEndEvent):
                    self._exec(_END_SESSION, (event.time_us, event.reason, event.session_id))
            session_id = enc.session_id
            identity = identities.get(session_id)
            rows.append((last_seq, enc.time_us, enc.kind, session_id, enc.payload, last_hash, digest,
                         identity if identity is not None else self._identity_of(session_id), enc.action,
                         enc.stmt_seq))
            last_hash = digest
        seqs = list(range(first_seq, last_seq + 1))
        self._exec_many(_INSERT_EVENT, rows)
        self._exec("UPDATE journal_head SET last_seq = ?, last_hash = ? WHERE id = 1", (last_seq, last_hash))
        return seqs

    def mark(self, name: str) -> int:
        """The position recorded by `append_batch(..., mark=(name, position))`, 0 if none."""
        rows = self._rows("SELECT value FROM journal_meta WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else 0

    def forget_mark(self, name: str) -> None:
        with self._write_transaction():
            self._exec("DELETE FROM journal_meta WHERE name = ?", (name,))

    def append(self, event: JournalEvent, hasher: ChainHasher) -> int:
        """Append one event in its own transaction (tools and tests; sessions use the writer)."""
        return self.append_batch([encode_event(event)], hasher)[0]

    def _identity_of(self, session_id: str) -> str:
        if not session_id:
            return ""
        found = self._identities.get(session_id)
        if found is None:
            rows = self._rows("SELECT identity FROM journal_sessions WHERE session_id = ?", (session_id,))
            found = str(rows[0][0]) if rows else ""
            if len(self._identities) > 100_000:
                self._identities.clear()
            self._identities[session_id] = found
        return found

    # -- chain ends ---------------------------------------------------------------------------

    def head(self) -> Anchor:
        rows = self._rows("SELECT last_seq, last_hash FROM journal_head WHERE id = 1")
        if not rows:
            raise StoreError(f"{self.url_for_messages}: the chain head row is missing (edited store?)")
        return Anchor(int(rows[0][0]), str(rows[0][1]))

    def anchor(self) -> Anchor:
        """Where the stored chain starts: genesis, or the last event removed by prune."""
        rows = self._rows("SELECT seq, hash FROM journal_anchor WHERE id = 1")
        return Anchor(int(rows[0][0]), str(rows[0][1])) if rows else GENESIS

    def verify(self, hasher: ChainHasher) -> VerifyReport:
        """Check the whole stored chain, from its anchor (genesis or the last prune) to its head."""
        rows = self._rows("SELECT last_seq, last_hash FROM journal_head WHERE id = 1")
        head = Anchor(int(rows[0][0]), str(rows[0][1])) if rows else None
        report = verify_events(self.iter_events(0), hasher, self.anchor(), head=head)
        if head is None:
            report.problems.append(ChainProblem(report.last_seq or 0, "deleted",
                                                "the chain head row is missing (the store was altered)"))
        return report

    # -- reading ------------------------------------------------------------------------------

    def iter_events(self, after_seq: int = 0, through_seq: int | None = None) -> Iterator[StoredEvent]:
        """Every stored event with after_seq < seq <= through_seq, in sequence order."""
        last = after_seq
        while True:
            if through_seq is None:
                rows = self._rows(_SELECT_EVENTS + " WHERE seq > ? ORDER BY seq LIMIT ?",
                                  (last, _PAGE))
            else:
                rows = self._rows(
                    _SELECT_EVENTS + " WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                    (last, through_seq, _PAGE),
                )
            if not rows:
                return
            for row in rows:
                yield _stored(row)
            last = int(rows[-1][0])
            if len(rows) < _PAGE:
                return

    def events_after(self, seq: int, limit: int = _PAGE) -> list[StoredEvent]:
        rows = self._rows(_SELECT_EVENTS + " WHERE seq > ? ORDER BY seq LIMIT ?",
                          (seq, limit))
        return [_stored(r) for r in rows]

    def last_events(self, count: int) -> list[StoredEvent]:
        rows = self._rows(_SELECT_EVENTS + " ORDER BY seq DESC LIMIT ?", (count,))
        return [_stored(r) for r in reversed(rows)]

    def session_events(self, session_id: str) -> list[StoredEvent]:
        rows = self._rows(_SELECT_EVENTS + " WHERE session_id = ? ORDER BY seq",
                          (session_id,))
        return [_stored(r) for r in rows]

    def resolve_session(self, prefix: str) -> str:
        """The session id that is `prefix` or the only one starting with it."""
        exact = self._rows("SELECT session_id FROM journal_sessions WHERE session_id = ?", (prefix,))
        if exact:
            return prefix
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self._rows("SELECT session_id FROM journal_sessions WHERE session_id LIKE ? ESCAPE '\\' LIMIT 3",
                          (escaped + "%",))
        if not rows:
            exact_events = self._rows("SELECT 1 FROM journal_events WHERE session_id = ? LIMIT 1", (prefix,))
            if exact_events:
                return prefix  # its start was pruned; its later events remain
            raise StoreError(f"no session {prefix!r} in the journal")
        if len(rows) > 1:
            raise StoreError(f"session {prefix!r} is ambiguous: {', '.join(str(r[0]) for r in rows)}…")
        return str(rows[0][0])

    def sessions(
        self,
        *,
        since_us: int | None = None,
        until_us: int | None = None,
        identity: str | None = None,
        limit: int = 100,
    ) -> list[SessionSummary]:
        """Sessions by start time, newest first."""
        where: list[str] = []
        params: list[Any] = []
        if since_us is not None:
            where.append("s.start_us >= ?")
            params.append(since_us)
        if until_us is not None:
            where.append("s.start_us < ?")
            params.append(until_us)
        if identity is not None:
            where.append("s.identity = ?")
            params.append(identity)
        sql = f"SELECT {_SESSION_COLUMNS} FROM journal_sessions s"  # noqa: S608 (constants only; values are parameters)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY s.start_us DESC, s.start_seq DESC LIMIT ?"
        params.append(limit)
        return [
            SessionSummary(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]), str(r[6]), int(r[7]),
                           None if r[8] is None else int(r[8]), str(r[9]), int(r[10]), int(r[11]), int(r[12]))
            for r in self._rows(sql, params)
        ]

    def seq_range(self, since_us: int | None = None, until_us: int | None = None) -> tuple[int, int] | None:
        """The contiguous range of sequence numbers from the first event at or after `since`
        to the last one before `until` (events are chained in commit order, and times are
        taken a little before commit, so a range is cut by sequence number, not by time)."""
        lo_sql = "SELECT min(seq) FROM journal_events" + (" WHERE time_us >= ?" if since_us is not None else "")  # noqa: S608 (constants only; values are parameters)
        hi_sql = "SELECT max(seq) FROM journal_events" + (" WHERE time_us < ?" if until_us is not None else "")  # noqa: S608 (constants only; values are parameters)
        lo = self._rows(lo_sql, () if since_us is None else (since_us,))[0][0]
        hi = self._rows(hi_sql, () if until_us is None else (until_us,))[0][0]
        if lo is None or hi is None or int(lo) > int(hi):
            return None
        return int(lo), int(hi)

    def event_at(self, seq: int) -> StoredEvent | None:
        rows = self._rows(_SELECT_EVENTS + " WHERE seq = ?", (seq,))
        return _stored(rows[0]) if rows else None

    def export_counts(
        self, first: int, last: int, *, identity: str | None = None, decision: str | None = None
    ) -> tuple[int, int]:
        """(events in [first, last], of which pass the filters)."""
        included, params = _filters(identity, decision)
        row = self._rows(
            f"SELECT count(*), coalesce(sum(CASE WHEN {included} THEN 1 ELSE 0 END), 0) FROM journal_events"  # noqa: S608 (constants only; values are parameters)
            " WHERE seq >= ? AND seq <= ?",
            (*params, first, last),
        )[0]
        return int(row[0]), int(row[1])

    def export_rows(
        self, first: int, last: int, *, identity: str | None = None, decision: str | None = None
    ) -> Iterator[tuple[StoredEvent, bool]]:
        """Every event of [first, last] in order, with whether it passes the filters."""
        included, params = _filters(identity, decision)
        pos = first - 1
        while True:
            rows = self._rows(
                f"SELECT {_EVENT_COLUMNS}, CASE WHEN {included} THEN 1 ELSE 0 END FROM journal_events"  # noqa: S608 (constants only; values are parameters)
                " WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (*params, pos, last, _PAGE),
            )
            for row in rows:
                yield _stored(row[:7]), bool(row[7])
            if len(rows) < _PAGE:
                return
            pos = int(rows[-1][0])

    # -- retention ----------------------------------------------------------------------------

    def prune(self, before_us: int, hasher: ChainHasher) -> PruneResult:
        """Delete the events before `before_us` (a prefix of the chain, by sequence number),
        keep the last deleted event's hash as the anchor, and journal the prune itself, all
        in one transaction."""
        with self._write_transaction():
            head = self._rows(self._LOCK_HEAD_SQL)
            self._bind_chain(hasher)
            last_seq = int(head[0][0])
            rows = self._rows("SELECT min(seq) FROM journal_events WHERE time_us >= ?", (before_us,))
            through = (int(rows[0][0]) if rows[0][0] is not None else last_seq + 1) - 1
            old = self.anchor()
            if through <= old.seq:
                return PruneResult(0, old, 0)
            hrow = self._rows("SELECT hash FROM journal_events WHERE seq = ?", (through,))
            if not hrow:
                raise StoreError(f"{self.url_for_messages}: event {through} is missing: run verify before pruning")
            anchor = Anchor(through, str(hrow[0][0]))
            count = int(self._rows("SELECT count(*) FROM journal_events WHERE seq <= ?", (through,))[0][0])
            self._exec("DELETE FROM journal_events WHERE seq <= ?", (through,))
            self._exec("DELETE FROM journal_anchor WHERE id = 1")
            self._exec("INSERT INTO journal_anchor (id, seq, hash, pruned_us) VALUES (1, ?, ?, ?)",
                       (anchor.seq, anchor.hash, now_us()))
            self._exec(
                "DELETE FROM journal_sessions WHERE start_seq <= ? AND NOT EXISTS"
                " (SELECT 1 FROM journal_events e WHERE e.session_id = journal_sessions.session_id)",
                (through,),
            )
            event = PruneEvent(time_us=now_us(), through_seq=through, anchor_hash=anchor.hash, deleted=count,
                               before_us=before_us)
            (seq,) = self._append_locked([encode_event(event)], hasher)
        self._identities.clear()
        if self.commit_hook is not None:
            self.commit_hook(1)
        return PruneResult(count, anchor, seq)
