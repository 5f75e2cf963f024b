"""The session state dbguard reads text with is the server's, not a guess (session.mysql_state_sync).

A server whose global sql_mode includes ANSI_QUOTES or NO_BACKSLASH_ESCAPES lexes quotes
differently from the default; so does a session after a SET that failed, or one only prepared.
Each test hides a DROP where only one of the two readings sees it, and checks that the table
survives and the client is refused where the server would have run the DROP.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import mysql.connector
import pymysql
import pymysql.connections
import pytest
from pymysql.constants import CLIENT

from dbguard.devdb.mariadb import ThrowawayMariaDB
from tests.integration.conftest import start_mariadb_server
from tests.integration.harness import ProxyFactory, ProxyProcess

pytestmark = pytest.mark.integration

NO_DROP = "rules:\n  - id: no-drop\n    when: {statement: [drop]}\n    action: block\n"


@pytest.fixture(scope="module")
def own_server() -> Iterator[ThrowawayMariaDB]:
    """A server of this module's own: the tests change its global sql_mode."""
    server = start_mariadb_server()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def guarded(own_server: ThrowawayMariaDB, proxy_factory: ProxyFactory,
            tmp_path: Path) -> Iterator[tuple[ThrowawayMariaDB, ProxyProcess]]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(NO_DROP, encoding="utf-8")
    own_server.run_sql("CREATE TABLE IF NOT EXISTS canary (id INT PRIMARY KEY); REPLACE INTO canary VALUES (1)",
                       own_server.app_database, as_root=False)
    default_mode = own_server.run_sql("SELECT @@GLOBAL.sql_mode")[0][0]
    try:
        yield own_server, proxy_factory(own_server.dsn(), extra_yaml=f"rules: {rules}\n", protocol="mysql")
    finally:
        own_server.run_sql(f"SET GLOBAL sql_mode = '{default_mode}'")


def _connect(proxy: ProxyProcess) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(host=proxy.host, port=proxy.port, user="copilot", password=proxy.secrets["copilot"],
                           database="app", autocommit=True, client_flag=CLIENT.MULTI_STATEMENTS)


def _canary_alive(server: ThrowawayMariaDB) -> bool:
    rows = server.run_sql("SELECT COUNT(*) FROM information_schema.tables "
                          "WHERE table_schema = 'app' AND table_name = 'canary'")
    return int(rows[0][0]) == 1


def _refused(conn: pymysql.connections.Connection[Any], sql: str) -> bool:
    with conn.cursor() as cur:
        try:
            cur.execute(sql)
            while cur.nextset():
                pass
        except pymysql.err.MySQLError as exc:
            return int(exc.args[0]) == 1227
    return False


def test_a_global_ansi_quotes_default_is_read_from_the_server(guarded: tuple[ThrowawayMariaDB, ProxyProcess]) -> None:
    server, proxy = guarded
    server.run_sql("SET GLOBAL sql_mode = 'ANSI_QUOTES,STRICT_TRANS_TABLES'")
    conn = _connect(proxy)  # a new session: it starts with the global sql_mode
    # Default reading: one string alias. ANSI_QUOTES reading: an alias `a\`, then a DROP.
    assert _refused(conn, 'SELECT 1 AS "a\\"; DROP TABLE canary; -- "')
    assert _canary_alive(server)
    with conn.cursor() as cur:  # and the session goes on, reading as the server does
        cur.execute('SELECT 1 AS "a"')
        assert cur.fetchone() == (1,)
    conn.close()


def test_a_global_no_backslash_escapes_default_is_read_from_the_server(
        guarded: tuple[ThrowawayMariaDB, ProxyProcess]) -> None:
    server, proxy = guarded
    server.run_sql("SET GLOBAL sql_mode = 'NO_BACKSLASH_ESCAPES'")
    conn = _connect(proxy)
    # With escapes: one string. Without (the server's mode): 'x\' ends, then a DROP.
    assert _refused(conn, "SELECT 'x\\'; DROP TABLE canary; -- '")
    assert _canary_alive(server)
    conn.close()


# With backslash escapes (the default), 'x\'' is the string x' and a DROP follows; read without
# them, 'x\' ' ; DROP ... ' is two adjacent strings and no DROP.
HIDDEN_FROM_NO_BACKSLASH_ESCAPES = "SELECT 'x\\'' ; DROP TABLE canary; -- '"


def test_a_set_that_never_ran_does_not_change_how_dbguard_reads(
        guarded: tuple[ThrowawayMariaDB, ProxyProcess]) -> None:
    server, proxy = guarded
    conn = _connect(proxy)
    with conn.cursor() as cur, pytest.raises(pymysql.err.MySQLError):
        # The first statement fails, so the server never runs the SET after it.
        cur.execute("SELECT nosuch FROM canary; SET sql_mode = 'NO_BACKSLASH_ESCAPES'")
    with conn.cursor() as cur:
        cur.execute("SELECT @@SESSION.sql_mode")
        row = cur.fetchone()
        assert row is not None
        assert "NO_BACKSLASH_ESCAPES" not in row[0]
    assert _refused(conn, HIDDEN_FROM_NO_BACKSLASH_ESCAPES)
    assert _canary_alive(server)
    conn.close()


def test_a_prepared_but_never_executed_set_changes_nothing(guarded: tuple[ThrowawayMariaDB, ProxyProcess]) -> None:
    server, proxy = guarded
    conn = mysql.connector.connect(host=proxy.host, port=proxy.port, user="copilot",
                                   password=proxy.secrets["copilot"], database="app", use_pure=True,
                                   autocommit=True)
    stmt = cast(Mapping[str, Any], conn.cmd_stmt_prepare(b"SET sql_mode = 'NO_BACKSLASH_ESCAPES'"))
    text = conn.cursor()
    with pytest.raises(mysql.connector.Error) as info:  # prepared, never executed: escapes still on
        text.execute(HIDDEN_FROM_NO_BACKSLASH_ESCAPES)
    assert info.value.errno == 1227
    assert _canary_alive(server)
    # Executed, it changes the server's mode, and dbguard reads the next text the same way.
    conn.cmd_stmt_execute(stmt["statement_id"])
    text.execute("SELECT 'x\\'")
    assert text.fetchall() == [("x\\",)]
    with pytest.raises(mysql.connector.Error) as info:
        text.execute("SELECT 'x\\'; DROP TABLE canary; -- '")
    assert info.value.errno == 1227
    assert _canary_alive(server)
    conn.close()
