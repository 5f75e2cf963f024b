# tests/unit/journal_helpers.py — shared by the journal tests: sample events of every kind, a
# small recorded session, and the StoreBackend protocol the shared store suite
# (test_journal_store.py) runs against, for sqlite here and PostgreSQL in
# tests/integration/test_journal_postgres_store.py.
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from dbguard.journal import (
    ApprovalEvent,
    ApprovalEventKind,
    CancelEvent,
    ChainHasher,
    JournalEvent,
    JournalStore,
    OutcomeEvent,
    SessionEndEvent,
    SessionStartEvent,
    StatementEvent,
    decode_event,
)
from dbguard.journal.store import EncodedEvent
from dbguard.session.journal import SessionJournal

T0 = 1_795_000_000_000_000  # 2026-11-18T...Z in microseconds
KEY = b"0123456789abcdef0123456789abcdef"


class StoreBackend(Protocol):
    """One kind of store for the shared suite; each test gets a fresh, empty location."""

    name: str
    url: str  # a canonical store URL (with password) for open_store / the CLI

    def open(self, *, key: bytes | None = None, commit_hook: Callable[[int], None] | None = None,
             migrate: bool = True) -> JournalStore: ...

    def raw(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run SQL ('?' placeholders) on a separate connection, committed: the tamperer's access."""
        ...


def session_events(session_id: str = "s-0001", identity: str = "copilot", t0: int = T0,
                   statements: int = 4) -> list[JournalEvent]:
    """A session: start, `statements` statements (every third blocked) with outcomes, an end."""
    events: list[JournalEvent] = [
        SessionStartEvent(session_id, t0, identity, "agent", ("readers",), "127.0.0.1:50000", True, "app-pg",
                          "postgres", "app", "psql", (("client", "psql 17"),)),
    ]
    t = t0
    for n in range(1, statements + 1):
        t += 1000
        blocked = n % 3 == 0
        events.append(StatementEvent(session_id, t, n, f"SELECT {n} FROM orders", "block" if blocked else "allow",
                                     ("no-orders",) if blocked else (), "blocked by rule" if blocked else "",
                                     kinds=("select",), reads=("public.orders",)))
        t += 500
        events.append(OutcomeEvent(session_id, t, n, 400, rows=None if blocked else n,
                                   error_code="42501" if blocked else ""))
    t += 1000
    events.append(SessionEndEvent(session_id, t, "client closed"))
    return events


def every_kind(t0: int = T0) -> list[JournalEvent]:
    return [
        *session_events(t0=t0, statements=1)[:-1],
        CancelEvent("s-0001", t0 + 5000, 1, "127.0.0.1:50001"),
        ApprovalEvent("ap-1", t0 + 6000, ApprovalEventKind.REQUESTED, "s-0001", 1, "copilot", "needs a DBA"),
        ApprovalEvent("ap-1", t0 + 7000, ApprovalEventKind.APPROVED, "s-0001", 1, "alice", "fine"),
        SessionEndEvent("s-0001", t0 + 8000, "client closed"),
    ]


def fill(store: JournalStore, hasher: ChainHasher, events: Sequence[JournalEvent]) -> list[int]:
    from dbguard.journal.store import encode_event

    return store.append_batch([encode_event(e) for e in events], hasher)


def taken(journal: SessionJournal) -> tuple[list[JournalEvent], bool]:
    """`journal.take()`, with the events it hands over already encoded read back, as the
    store reads them (the session encodes ordinary statements and outcomes itself)."""
    events, ahead = journal.take()
    return [decode_event(e.payload) if isinstance(e, EncodedEvent) else e for e in events], ahead
