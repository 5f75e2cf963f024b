# dbguard/journal/store_sqlite.py — owns the embedded journal store, `store: sqlite:///PATH`:
# the sqlite3 connection (WAL; synchronous=FULL when every commit must survive power loss,
# NORMAL when surviving a crash of the proxy is enough: a commit is then written to the WAL
# file but not fsynced; a busy timeout for several processes), write transactions taken with
# BEGIN IMMEDIATE (which is also the chain-head lock between processes), and sqlite's
# dialect of the schema. Everything else is shared with PostgreSQL in store.py.
from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from dbguard.journal.store import JournalStore, StoreError

__all__ = ["SqliteJournalStore"]

# How long a writer waits for another process's write transaction before failing.
DEFAULT_BUSY_TIMEOUT: Final = 30.0


class SqliteJournalStore(JournalStore):
    dialect = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        create: bool = True,
        migrate: bool = True,
        commit_hook: Callable[[int], None] | None = None,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        fsync: bool = True,
    ) -> None:
        super().__init__(commit_hook)
        target = str(path)
        self.path = None if target == ":memory:" else Path(path)
        self.url_for_messages = "sqlite:///" + (target if target == ":memory:" else Path(path).absolute().as_posix())
        if self.path is not None and not self.path.exists():
            if not create:
                raise StoreError(f"{self.url_for_messages}: no journal there (the file does not exist)")
            if not self.path.parent.is_dir():
                raise StoreError(f"{self.url_for_messages}: directory {self.path.parent} does not exist")
            # Statements and parameters may be sensitive: only the owner reads the journal
            # (sqlite gives its -wal and -shm files the same permissions).
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
            except OSError as e:
                raise StoreError(f"{self.url_for_messages}: cannot create: {e.strerror}") from None
        try:
            # isolation_level=None: no implicit transactions; this class opens them explicitly.
            self._conn = sqlite3.connect(target, isolation_level=None, timeout=busy_timeout,
                                         check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL" if fsync else "PRAGMA synchronous=NORMAL")
        except sqlite3.Error as e:
            raise StoreError(f"{self.url_for_messages}: cannot open: {e}") from None
        self._in_transaction = False
        if migrate:
            self._guard(self.migrate)

    def _guard(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except sqlite3.Error as e:
            raise StoreError(f"{self.url_for_messages}: {e}") from e

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"{self.url_for_messages}: {e}") from e

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> None:
        try:
            self._conn.execute(sql, tuple(params))
        except sqlite3.Error as e:
            raise StoreError(f"{self.url_for_messages}: {e}") from e

    def _exec_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        try:
            self._conn.executemany(sql, [tuple(r) for r in rows])
        except sqlite3.Error as e:
            raise StoreError(f"{self.url_for_messages}: {e}") from e

    @contextlib.contextmanager
    def _write_transaction(self) -> Iterator[None]:
        if self._in_transaction:
            raise RuntimeError("nested journal write transaction")
        self._exec("BEGIN IMMEDIATE")
        self._in_transaction = True
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise
        else:
            try:
                self._exec("COMMIT")  # with synchronous=FULL the WAL is fsynced here
            except StoreError:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise
        finally:
            self._in_transaction = False

    def set_busy_timeout(self, seconds: float) -> None:
        """How long a write waits for another process's write transaction (0: fail at once)."""
        self._exec(f"PRAGMA busy_timeout = {int(seconds * 1000)}")

    def disable_auto_checkpoint(self) -> None:
        """Leave WAL checkpoints to `checkpoint()` (called from elsewhere, e.g. a thread that
        may wait for an fsync when the appending one must not)."""
        self._exec("PRAGMA wal_autocheckpoint=0")

    def checkpoint(self, mode: str = "PASSIVE") -> None:
        if mode not in ("PASSIVE", "FULL", "RESTART", "TRUNCATE"):
            raise ValueError(f"unknown checkpoint mode {mode!r}")
        self._rows(f"PRAGMA wal_checkpoint({mode})")

    def _lock_migrations(self) -> None:
        return None  # BEGIN IMMEDIATE already excludes every other writer

    def _ddl(self, statement: str) -> str:
        return statement.replace("{BLOB}", "BLOB")

    def _table_exists(self, name: str) -> bool:
        return bool(self._rows("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
