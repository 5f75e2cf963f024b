# dbguard/journal/store_postgres.py — owns the shared journal store, `store: postgresql://…`,
# through psycopg 3: the connection (autocommit outside explicit transactions, reconnecting
# after a broken connection), the chain-head lock (`SELECT … FOR UPDATE` on the single
# journal_head row inside the append transaction, so proxies sharing the store append one
# after another and keep one chain), the migration lock (a transaction-scoped advisory lock),
# PostgreSQL's dialect of the schema, and notifications (NOTIFY in a transaction; LISTEN on a
# connection of its own, for approvals' wake-ups). Everything else is shared with sqlite in store.py.
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import psycopg
import psycopg.sql

from dbguard.journal.store import JournalStore, Listener, StoreError

__all__ = ["PostgresJournalStore"]

# pg_advisory_xact_lock key for schema migrations: "dbguard" in ASCII, as a bigint.
_MIGRATION_LOCK_KEY: Final = 0x6462677561726400
DEFAULT_CONNECT_TIMEOUT: Final = 10


def _pg(sql: str) -> str:
    # The shared SQL uses '?' placeholders and contains no literal '?' or '%'.
    return sql.replace("?", "%s")


class PostgresJournalStore(JournalStore):
    dialect = "postgresql"
    _LOCK_HEAD_SQL = "SELECT last_seq, last_hash FROM journal_head WHERE id = 1 FOR UPDATE"

    def __init__(
        self,
        conninfo: str,
        *,
        migrate: bool = True,
        commit_hook: Callable[[int], None] | None = None,
        redacted_url: str = "",
        connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
        fsync: bool = True,
    ) -> None:
        super().__init__(commit_hook)
        # fsync=False: commits return before the server has flushed its WAL (synchronous_commit
        # off): they survive a crash of the proxy, not one of the store's server.
        self._fsync = fsync
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
        self.url_for_messages = redacted_url or "postgresql store"
        self._conn = self._connect()
        self._in_transaction = False
        if migrate:
            self.migrate()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=self._connect_timeout,
                                   application_name="dbguard journal")
            if not self._fsync:
                conn.execute("SET synchronous_commit = off")
        except psycopg.Error as e:
            raise StoreError(f"{self.url_for_messages}: cannot connect: {_first_line(e)}") from None
        return conn

    def _ready(self) -> psycopg.Connection[Any]:
        if not self._in_transaction and (self._conn.closed or self._conn.broken):
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = self._connect()
        return self._conn

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._ready().execute(_pg(sql), tuple(params)).fetchall()
        except psycopg.Error as e:
            raise StoreError(f"{self.url_for_messages}: {_first_line(e)}") from e

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> None:
        try:
            self._ready().execute(_pg(sql), tuple(params))
        except psycopg.Error as e:
            raise StoreError(f"{self.url_for_messages}: {_first_line(e)}") from e

    def _exec_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            with self._ready().cursor() as cur:
                cur.executemany(_pg(sql), [tuple(r) for r in rows])
        except psycopg.Error as e:
            raise StoreError(f"{self.url_for_messages}: {_first_line(e)}") from e

    @contextlib.contextmanager
    def _write_transaction(self) -> Iterator[None]:
        if self._in_transaction:
            raise RuntimeError("nested journal write transaction")
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self._ready().transaction())
            except psycopg.OperationalError:
                # The connection died while idle (the store's server restarted): nothing of
                # this transaction reached the server, so it is safe to reconnect once.
                with contextlib.suppress(psycopg.Error):
                    self._conn.close()
                try:
                    stack.enter_context(self._ready().transaction())
                except psycopg.Error as e:
                    raise StoreError(f"{self.url_for_messages}: {_first_line(e)}") from e
            except psycopg.Error as e:
                raise StoreError(f"{self.url_for_messages}: {_first_line(e)}") from e
            self._in_transaction = True
            try:
                yield
                stack.close()  # COMMIT
            except psycopg.Error as e:
                # Raised by COMMIT itself: the transaction is not durable.
                raise StoreError(f"{self.url_for_messages}: {_first_line(e)}") from e
            finally:
                self._in_transaction = False

    def _lock_migrations(self) -> None:
        self._exec("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK_KEY,))

    def _ddl(self, statement: str) -> str:
        return statement.replace("{BLOB}", "BYTEA")

    def _table_exists(self, name: str) -> bool:
        return bool(self._rows(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ?",
            (name,),
        ))

    def notify(self, channel: str, payload: str = "") -> None:
        self._exec("SELECT pg_notify(?, ?)", (channel, payload))

    def listen(self, channel: str) -> Listener:
        return _PostgresListener(self._conninfo, channel, self.url_for_messages, self._connect_timeout)

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self._conn.close()


class _PostgresListener(Listener):
    """LISTEN on a connection of its own; reconnects (and reports a wake-up, since
    notifications may have been missed) when the connection breaks."""

    def __init__(self, conninfo: str, channel: str, label: str, connect_timeout: int) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._label = label
        self._connect_timeout = connect_timeout
        self._conn: psycopg.Connection[Any] | None = None
        self._connect()

    def _connect(self) -> None:
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=self._connect_timeout,
                                   application_name="dbguard listener")
            conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(self._channel)))
        except psycopg.Error as e:
            raise StoreError(f"{self._label}: cannot listen: {_first_line(e)}") from None
        self._conn = conn

    def wait(self, timeout: float) -> bool:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            self._connect()
            return True
        try:
            for _ in self._conn.notifies(timeout=max(timeout, 0.0), stop_after=1):
                return True
        except psycopg.Error:
            self.close()  # reconnected at the next wait
            return True
        return False

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
