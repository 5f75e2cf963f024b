# tests/integration/test_journal_postgres_store.py — the shared journal store suite
# (tests/unit/test_journal_store.py, imported whole) run against a throwaway PostgreSQL: each
# test gets a schema of its own in the session's server. Plus what only a server store has:
# surviving a terminated connection (the batch fails cleanly, the next one reconnects).
from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
import pytest

from dbguard.devdb import ThrowawayPostgres
from dbguard.journal import ChainHasher, JournalStore, JournalWriter
from dbguard.journal.store_postgres import PostgresJournalStore
from tests.unit.journal_helpers import StoreBackend, session_events
from tests.unit.test_journal_store import *  # noqa: F403  (the shared suite, collected here again)


class PostgresBackend:
    name = "postgresql"

    def __init__(self, server: ThrowawayPostgres, schema: str) -> None:
        self.server = server
        self.schema = schema
        self.database = server.app_database
        # The store's tables go to the schema first on the search_path: one schema per test.
        self.url = server.dsn(options=f"-csearch_path={schema}")

    def open(self, *, key: bytes | None = None, commit_hook: Callable[[int], None] | None = None,
             migrate: bool = True) -> JournalStore:
        return PostgresJournalStore(self.url, commit_hook=commit_hook, migrate=migrate, redacted_url=self.schema)

    def raw(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(sql.replace("?", "%s"), tuple(params))
            return cur.fetchall() if cur.description is not None else []


@pytest.fixture  # type: ignore[no-redef]
def backend(pg_server: ThrowawayPostgres) -> Iterator[StoreBackend]:
    """A fresh schema of the session's server for each test (cheaper than a database)."""
    schema = "journal_" + secrets.token_hex(6)
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield PostgresBackend(pg_server, schema)
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_a_connection_terminated_while_idle_is_reconnected_without_losing_a_batch(
        backend: PostgresBackend, pg_server: ThrowawayPostgres) -> None:
    """The store's server restarted (or killed the backend) between two commits: nothing of
    the next transaction had reached it, so the writer reconnects and commits it."""
    hasher = ChainHasher()
    writer = JournalWriter(backend.open, hasher)
    try:
        assert writer.submit(session_events()[0]).result(30) == 1
        with psycopg.connect(pg_server.superuser_dsn(), autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                         " WHERE datname = %s AND application_name = 'dbguard journal'", (backend.database,))
        assert writer.submit(session_events()[1]).result(30) == 2  # reconnected; no gap in the chain
        assert writer.stats.failed_transactions == 0
    finally:
        writer.close()
    with backend.open() as s:
        assert s.verify(hasher).ok


def test_an_auditor_with_select_only_can_verify_and_export(backend: PostgresBackend,
                                                          pg_server: ThrowawayPostgres) -> None:
    import io

    from dbguard.journal import open_store
    from dbguard.journal.export import export_range, verify_export
    from tests.unit.journal_helpers import fill

    hasher = ChainHasher()
    with backend.open() as s:
        fill(s, hasher, session_events())
    role = "auditor_" + secrets.token_hex(4)
    password = secrets.token_hex(8)
    pg_server.create_role(role, password)
    backend.raw(f"GRANT USAGE ON SCHEMA {backend.schema} TO {role}")
    backend.raw(f"GRANT SELECT ON ALL TABLES IN SCHEMA {backend.schema} TO {role}")
    url = pg_server.dsn(user=role, password=password, options=f"-csearch_path={backend.schema}")
    with open_store(url, create=False) as s:
        assert s.verify(hasher).ok
        out = io.StringIO()
        export_range(s, out, hasher=hasher)
    assert verify_export(out.getvalue()).checked == 10
