"""mysql-connector-python scenarios, each run through the proxy and directly against the server.

Owns: the work test_mysql_clients_connector.py has mysql-connector-python do, written once for
both of its implementations. The pure-Python one runs in the test process. The C extension runs
in a fresh interpreter (`python -m tests.integration.mysql_connector_scenarios NAME PARAMS`):
its wheel bundles OpenSSL 3.5 as libssl.so.3 / libcrypto.so.3, and once the process has loaded
the system's OpenSSL (any `import hashlib` or `ssl`, which pytest does at start) the extension
no longer loads, and mysql.connector silently reports HAVE_CEXT = False. Loading it first is
the only way; a scenario asked for the C extension fails if it does not get CMySQLConnection.

Every function takes the connection parameters of the proxy (`via`) and of the server
(`direct`) and raises AssertionError on any difference.
"""

from __future__ import annotations

import importlib
import sys

if __name__ == "__main__":  # before anything loads the system's libssl / libcrypto
    importlib.import_module("_mysql_connector")

import datetime
import decimal
import io
import json
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import mysql.connector
import mysql.connector.errors
import pytest

Params = Mapping[str, Any]


def open_connection(params: Params, use_pure: bool) -> Any:
    conn: Any = mysql.connector.connect(**params, use_pure=use_pure, autocommit=True, charset="utf8mb4",
                                        collation="utf8mb4_general_ci", connection_timeout=10)
    expected = "MySQLConnection" if use_pure else "CMySQLConnection"
    assert type(conn).__name__ == expected, f"{type(conn).__name__}, not {expected}"
    return conn


def _expect_error(errno: int, run: Callable[[], object]) -> mysql.connector.errors.Error:
    with pytest.raises(mysql.connector.errors.Error) as info:
        run()
    assert info.value.errno == errno, (info.value.errno, info.value.msg)
    return info.value


BIN_TABLE = "cl_bin"
BIN_COLUMNS = "id, i, u, d, f, dt, ts, tm, s, b, n"


def _bin_rows() -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for k in range(1, 41):
        rows.append((k, -(2 ** 62) + k * 12345, 4_000_000_000 + k, decimal.Decimal(f"-{k}123456789.{k:06d}"),
                     k / 3, datetime.date(1970 + k, 1 + k % 12, 1 + k % 28),
                     datetime.datetime(2025, 1 + k % 12, 1 + k % 28, k % 24, k % 60, k % 60, k * 24_681),
                     datetime.timedelta(hours=k, seconds=k, microseconds=k * 1000),
                     f"text {k} ünïcødé 🐬🐘 '\"\\", bytes((k * j) % 256 for j in range(k * 7)),
                     None if k % 2 else k))
    return rows


def _select_binary(conn: Any, sql: str, params: tuple[Any, ...]) -> tuple[list[tuple[Any, ...]], Any]:
    cur = conn.cursor(prepared=True)
    cur.execute(sql, params)
    rows = [tuple(row) for row in cur.fetchall()]
    description = [tuple(d[:2]) for d in cur.description]
    cur.close()
    return rows, description


def prepared_binary_rows(via: Params, direct: Params, use_pure: bool) -> None:
    """Binary protocol both ways: parameters of every common type in, binary rows out;
    executemany, a BytesIO parameter (COM_STMT_SEND_LONG_DATA) and re-execution (STMT_RESET)."""
    plain = open_connection(direct, use_pure)
    cur = plain.cursor()
    cur.execute(f"DROP TABLE IF EXISTS {BIN_TABLE}")
    cur.execute(f"CREATE TABLE {BIN_TABLE} (id INT PRIMARY KEY, i BIGINT, u INT UNSIGNED, d DECIMAL(30,6), "
                "f DOUBLE, dt DATE, ts DATETIME(6), tm TIME(3), s VARCHAR(100), b MEDIUMBLOB, n INT NULL) "
                "CHARACTER SET utf8mb4")
    cur.close()
    conn = open_connection(via, use_pure)
    rows = _bin_rows()
    insert = f"INSERT INTO {BIN_TABLE} ({BIN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    pcur = conn.cursor(prepared=True)
    for row in rows[:20]:
        pcur.execute(insert, row)
        assert pcur.rowcount == 1
    pcur.executemany(insert, rows[20:])
    # A long parameter: a file-like object goes as COM_STMT_SEND_LONG_DATA chunks before the
    # execute (the pure implementation only; the C extension takes bytes in the execute).
    blob = bytes(range(256)) * 4096
    pcur.execute(f"UPDATE {BIN_TABLE} SET b = ? WHERE id = ?", (io.BytesIO(blob) if use_pure else blob, 40))
    assert pcur.rowcount == 1
    pcur.close()
    rows[39] = (*rows[39][:9], blob, rows[39][10])

    query = f"SELECT {BIN_COLUMNS} FROM {BIN_TABLE} WHERE id >= ? AND (n IS NULL OR n <> ?) ORDER BY id"
    through = _select_binary(conn, query, (1, -1))
    expected = _select_binary(plain, query, (1, -1))
    assert through == expected
    # What was sent came back (each implementation has its own Python types for some columns).
    assert [r[0] for r in through[0]] == list(range(1, 41))
    assert [(r[1], r[2], decimal.Decimal(str(r[3])), bytes(r[9]), r[10]) for r in through[0]] == [
        (r[1], r[2], r[3], r[9], r[10]) for r in rows]
    # Other parameters; executemany above re-executed one statement (COM_STMT_RESET before each).
    for low in (10, 30, 41):
        query = f"SELECT id, s, n, ts FROM {BIN_TABLE} WHERE id >= ? ORDER BY id"
        again = _select_binary(conn, query, (low,))
        assert again == _select_binary(plain, query, (low,))
        assert [r[0] for r in again[0]] == list(range(low, 41))
    literal = "SELECT ?, ?, ?, ?, CAST(? AS DATETIME(6))"
    values = (None, "🐬", b"\x00\xff", decimal.Decimal("1.50"), datetime.datetime(2024, 2, 29, 23, 59, 59, 999999))
    assert _select_binary(conn, literal, values) == _select_binary(plain, literal, values)
    conn.close()
    plain.close()


PROCEDURE = """CREATE PROCEDURE cl_multi(IN n INT, INOUT total INT)
BEGIN
  SELECT seq, CONCAT('row ', seq) AS label FROM seq_1_to_100 WHERE seq <= n;
  SELECT n * 2 AS doubled, 'ünï 🐬' AS txt, NULL AS nothing;
  SELECT COUNT(*) AS c FROM seq_1_to_100 WHERE seq > n;
  SET total = total + n;
END"""


def _call(conn: Any, args: tuple[Any, ...]) -> tuple[Any, list[Any]]:
    cur = conn.cursor()
    out = cur.callproc("cl_multi", args)
    with warnings.catch_warnings():  # 26.x deprecates the method for a property not released yet
        warnings.simplefilter("ignore", DeprecationWarning)
        sets = [([tuple(r) for r in result.fetchall()], [d[0] for d in result.description])
                for result in cur.stored_results()]
    cur.close()
    return tuple(out), sets


def callproc_results(via: Params, direct: Params, use_pure: bool) -> None:
    """callproc on a procedure with several result sets and an INOUT parameter."""
    plain = open_connection(direct, use_pure)
    cur = plain.cursor()
    cur.execute("DROP PROCEDURE IF EXISTS cl_multi")
    cur.execute(PROCEDURE)
    cur.close()
    conn = open_connection(via, use_pure)
    for args in ((3, 10), (0, 0), (100, -5)):
        through = _call(conn, args)
        assert through == _call(plain, args)
        n, total = args
        assert through[0] == (n, total + n)
        assert len(through[1]) == 3
        assert len(through[1][0][0]) == n
    # A plain query afterwards: the call's results are fully consumed.
    cur = conn.cursor()
    cur.execute("SELECT 'after'")
    assert cur.fetchall() == [("after",)]
    cur.close()
    conn.close()
    plain.close()


def caching_sha2_login(via: Params, direct: Params, use_pure: bool) -> None:
    """caching_sha2_password (the proxy's greeting plugin) and mysql_native_password logins (the
    C extension names native with an empty response and is switched); a wrong secret is 1045.
    One failure only: the proxy slows down repeated failures from one address."""
    for plugin in ("caching_sha2_password", "mysql_native_password"):
        conn = open_connection({**via, "auth_plugin": plugin}, use_pure)
        cur = conn.cursor()
        cur.execute("SELECT CURRENT_USER() IS NOT NULL, DATABASE()")
        assert cur.fetchall() == [(1, "app")]
        cur.close()
        conn.close()
    wrong = {**via, "auth_plugin": "caching_sha2_password", "password": "wrong"}
    _expect_error(1045, lambda: open_connection(wrong, use_pure))


def refused_prepared(via: Params, direct: Params, use_pure: bool) -> None:
    """COM_STMT_PREPARE of a refused statement is answered ERR 1227 / 42000, inside an open
    transaction too, which stays open: a later COMMIT commits the earlier work."""
    plain = open_connection(direct, use_pure)
    cur = plain.cursor()
    cur.execute("CREATE TABLE IF NOT EXISTS cl_ptx (id INT PRIMARY KEY)")
    cur.execute("DELETE FROM cl_ptx WHERE id > 0")
    cur.close()
    conn = open_connection(via, use_pure)
    pcur = conn.cursor(prepared=True)
    error = _expect_error(1227, lambda: pcur.execute("DROP TABLE cl_ptx"))
    assert error.sqlstate == "42000"
    assert "no-drop" in str(error.msg)
    pcur.close()
    conn.start_transaction()
    pcur = conn.cursor(prepared=True)
    pcur.execute("INSERT INTO cl_ptx (id) VALUES (?)", (1,))
    bad = conn.cursor(prepared=True)
    _expect_error(1227, lambda: bad.execute("DELETE FROM cl_ptx"))
    bad.close()
    assert conn.in_transaction
    pcur.execute("INSERT INTO cl_ptx (id) VALUES (?)", (2,))
    pcur.close()
    check = plain.cursor()
    check.execute("SELECT COUNT(*) FROM cl_ptx")
    assert check.fetchall() == [(0,)]
    conn.commit()
    check.execute("SELECT id FROM cl_ptx ORDER BY id")
    assert check.fetchall() == [(1,), (2,)]
    check.close()
    pcur = conn.cursor(prepared=True)
    pcur.execute("SELECT COUNT(*) FROM cl_ptx WHERE id > ?", (0,))
    assert pcur.fetchall() == [(2,)]
    pcur.close()
    conn.close()
    plain.close()


CURSOR_TYPE_READ_ONLY = 1
STATUS_CURSOR_EXISTS = 0x40
STATUS_LAST_ROW_SENT = 0x80


def _fetch_through_cursor(conn: Any, batch: int) -> tuple[list[tuple[Any, ...]], int]:
    stmt = conn.cmd_stmt_prepare(b"SELECT seq, CONCAT('row ', seq), seq / 7 FROM seq_1_to_1000 WHERE seq > ?")
    result = conn.cmd_stmt_execute(stmt["statement_id"], data=(10,), parameters=stmt["parameters"],
                                   flags=CURSOR_TYPE_READ_ONLY)
    _count, columns, eof = result
    assert eof["status_flag"] & STATUS_CURSOR_EXISTS, eof
    rows: list[tuple[Any, ...]] = []
    fetches = 0
    while True:
        conn.cmd_stmt_fetch(stmt["statement_id"], batch)
        fetches += 1
        got, eof = conn.get_rows(binary=True, columns=columns)
        rows.extend(tuple(r) for r in got)
        if eof["status_flag"] & STATUS_LAST_ROW_SENT:
            break
    conn.cmd_stmt_close(stmt["statement_id"])
    return rows, fetches


def cursor_fetch(via: Params, direct: Params, use_pure: bool) -> None:
    """A read-only server-side cursor (COM_STMT_EXECUTE with CURSOR_TYPE_READ_ONLY) read in
    batches with COM_STMT_FETCH. Only the pure implementation exposes cmd_stmt_fetch."""
    assert use_pure
    conn = open_connection(via, use_pure)
    plain = open_connection(direct, use_pure)
    through = _fetch_through_cursor(conn, 64)
    assert through == _fetch_through_cursor(plain, 64)
    assert len(through[0]) == 990
    assert through[1] == 990 // 64 + 1
    cur = conn.cursor()
    cur.execute("SELECT 'after'")
    assert cur.fetchall() == [("after",)]
    cur.close()
    conn.close()
    plain.close()


def _multi(conn: Any) -> list[Any]:
    cur = conn.cursor()
    cur.execute("SELECT 1; SELECT 2 AS two, 'three'; DO 0; SELECT seq FROM seq_1_to_3", map_results=True)
    sets: list[Any] = []
    while True:
        sets.append([tuple(r) for r in cur.fetchall()] if cur.with_rows else cur.rowcount)
        if not cur.nextset():
            break
    cur.close()
    return sets


def _one(conn: Any, sql: str) -> tuple[Any, ...]:
    cur = conn.cursor()
    cur.execute(sql)
    row = cur.fetchone()
    cur.fetchall()
    cur.close()
    assert row is not None
    return tuple(row)


def session_commands(via: Params, direct: Params, use_pure: bool) -> None:
    """Multi-statements, ping (COM_PING), the current database (COM_INIT_DB), reset_session()
    (COM_RESET_CONNECTION) and cmd_change_user() (COM_CHANGE_USER, proxy only: it
    re-authenticates against dbguard's identities), each leaving the session usable."""
    conn = open_connection(via, use_pure)
    plain = open_connection(direct, use_pure)
    assert _multi(conn) == _multi(plain) == [[(1,)], [(2, "three")], 0, [(1,), (2,), (3,)]]
    conn.ping()
    conn.database = "information_schema"
    assert _one(conn, "SELECT DATABASE()") == ("information_schema",)
    conn.database = "app"
    for c in (conn, plain):
        c.cursor().execute("SET @kept := 5")
        assert _one(c, "SELECT @kept") == (5,)
        c.reset_session()
        assert _one(c, "SELECT @kept, DATABASE()") == (None, "app")
    conn.cmd_change_user(username="alice", password="alice-secret", database="app")
    assert _one(conn, "SELECT DATABASE(), 'as alice'") == ("app", "as alice")
    bad = conn.cursor(prepared=True)
    _expect_error(1227, lambda: bad.execute("DROP TABLE cl_bin"))
    bad.close()
    conn.ping()
    assert _multi(conn) == _multi(plain)
    conn.close()
    plain.close()


SCENARIOS: dict[str, Callable[[Params, Params, bool], None]] = {
    f.__name__: f for f in (prepared_binary_rows, callproc_results, caching_sha2_login, refused_prepared,
                            session_commands, cursor_fetch)
}


def main(argv: list[str]) -> int:
    name, raw = argv
    params = json.loads(raw)
    SCENARIOS[name](params["via"], params["direct"], params["use_pure"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
