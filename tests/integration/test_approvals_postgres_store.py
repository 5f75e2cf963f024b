# tests/integration/test_approvals_postgres_store.py — the shared approval queue suite
# (tests/unit/test_approvals_store.py, imported whole) run against a throwaway PostgreSQL: each
# test gets a schema of its own in the session's server. Plus what only a server store has:
# wake-ups through LISTEN/NOTIFY on `dbguard_approvals`, and a listener that survives its
# connection being terminated.
from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from dbguard.approvals import ApprovalStore
from dbguard.devdb import ThrowawayPostgres
from tests.integration.test_journal_postgres_store import PostgresBackend
from tests.unit.test_approvals_store import *  # noqa: F403  (the shared suite, collected here again)
from tests.unit.test_approvals_store import QueueBackend, held


@pytest.fixture  # type: ignore[no-redef]
def backend(pg_server: ThrowawayPostgres) -> Iterator[QueueBackend]:
    """A fresh schema of the session's server for each test."""
    schema = "approvals_" + secrets.token_hex(6)
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield PostgresBackend(pg_server, schema)
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_wake_up_is_a_notification_not_a_poll(open_queue: Callable[..., ApprovalStore]) -> None:
    """With a long poll interval a sqlite-style poll would take 30 s; NOTIFY wakes at once."""
    watcher = open_queue(poll_interval=30.0)
    writer = open_queue()
    assert watcher.wait_for_update(0.2) is False  # LISTEN is set up here
    timer = threading.Timer(0.2, lambda: writer.create(held()))
    timer.start()
    started = time.monotonic()
    try:
        assert watcher.wait_for_update(20) is True
    finally:
        timer.join()
    assert time.monotonic() - started < 5


def test_the_listener_survives_a_terminated_connection(open_queue: Callable[..., ApprovalStore],
                                                       backend: PostgresBackend, pg_server: ThrowawayPostgres) -> None:
    watcher = open_queue()
    writer = open_queue()
    assert watcher.wait_for_update(0.1) is False
    with psycopg.connect(pg_server.superuser_dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                      " WHERE datname = %s AND application_name = 'dbguard listener'", (backend.database,))
    watcher.wait_for_update(1)  # notices the broken connection (a wake-up: something may be missed)
    writer.create(held())
    deadline = time.monotonic() + 10
    while not watcher.wait_for_update(1):
        assert time.monotonic() < deadline
