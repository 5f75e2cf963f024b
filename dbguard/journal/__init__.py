# dbguard/journal/ — the statement journal: event model (events.py), hash chain (chain.py),
# stores (store.py shared logic, store_sqlite.py, store_postgres.py), the group-commit writer
# (writer.py), exports and their verification (export.py), session replay (replay.py) and
# re-running a session against a staging database (replay_execute.py). Depends on
# dbguard.model, the standard library and psycopg only (and PyMySQL, imported by
# replay_execute.py only when a MySQL target is given). This file owns opening a
# store from its URL and re-exports what the rest of dbguard uses.
"""The statement journal: every session, statement, outcome and approval, hash-chained."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

from dbguard.journal.chain import GENESIS_HASH, Anchor, ChainHasher, ChainProblem, StoredEvent, VerifyReport
from dbguard.journal.events import (
    ApprovalEvent,
    ApprovalEventKind,
    CancelEvent,
    EncodingError,
    EventKind,
    JournalEvent,
    OutcomeEvent,
    PruneEvent,
    SessionEndEvent,
    SessionStartEvent,
    StatementEvent,
    canonical_bytes,
    decode_event,
    now_us,
    session_start_from,
    statement_from,
)
from dbguard.journal.store import JournalStore, StoreError
from dbguard.journal.writer import (
    DEFAULT_MAX_BATCH,
    DEFAULT_QUEUE_SIZE,
    JournalClosed,
    JournalUnavailable,
    JournalWriter,
)

__all__ = [
    "GENESIS_HASH",
    "Anchor",
    "ApprovalEvent",
    "ApprovalEventKind",
    "CancelEvent",
    "ChainHasher",
    "ChainProblem",
    "EncodingError",
    "EventKind",
    "JournalClosed",
    "JournalEvent",
    "JournalStore",
    "JournalUnavailable",
    "JournalWriter",
    "OutcomeEvent",
    "PruneEvent",
    "SessionEndEvent",
    "SessionStartEvent",
    "StatementEvent",
    "StoreError",
    "StoredEvent",
    "VerifyReport",
    "canonical_bytes",
    "decode_event",
    "now_us",
    "open_store",
    "session_start_from",
    "start_writer",
    "statement_from",
]


def open_store(
    url: str,
    *,
    create: bool = True,
    commit_hook: Callable[[int], None] | None = None,
    redacted_url: str = "",
    fsync: bool = True,
) -> JournalStore:
    """Open (and migrate) the store at a canonical store URL (config.StoreUrl.url, or a full
    postgresql:// URL with its password): ``sqlite:////abs/path.db``, ``sqlite:///:memory:``,
    ``postgresql://user:pw@host:port/db``. `create=False` (readers): a store without a journal
    is an error, never created. `fsync=False`: a commit survives a crash of this process but
    not necessarily of the machine (journal.sync: normal)."""
    if url.startswith("sqlite://"):
        from dbguard.journal.store_sqlite import SqliteJournalStore

        rest = unquote(url[len("sqlite://"):])
        if not rest.startswith("/"):
            raise StoreError("expected sqlite:///PATH")
        target: str | Path = ":memory:" if rest == "/:memory:" else Path("/" + rest.lstrip("/"))
        store: JournalStore = SqliteJournalStore(target, create=create, migrate=create, commit_hook=commit_hook,
                                                 fsync=fsync)
    elif url.startswith(("postgresql://", "postgres://")):
        from dbguard.journal.store_postgres import PostgresJournalStore

        store = PostgresJournalStore(url, commit_hook=commit_hook, redacted_url=redacted_url, migrate=create,
                                     fsync=fsync)
    else:
        raise StoreError("expected a store URL sqlite:///PATH or postgresql://…")
    if not create:
        try:
            store.require_journal()
            store.migrate()  # an older layout is upgraded; an up-to-date one is not written to
        except BaseException:
            store.close()
            raise
    return store


def start_writer(
    url: str,
    key: bytes | None = None,
    *,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    max_batch: int = DEFAULT_MAX_BATCH,
    redacted_url: str = "",
    fsync: bool = True,
) -> JournalWriter:
    """The process's group-commit writer on the store at `url` (opened, migrated and checked
    against the key in the writer thread). Raises JournalUnavailable when it cannot start:
    a startup error for `serve`, naming the store."""
    return JournalWriter(
        lambda: open_store(url, redacted_url=redacted_url, fsync=fsync),
        ChainHasher(key),
        queue_size=queue_size,
        max_batch=max_batch,
    )
