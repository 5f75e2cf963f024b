# tests/integration/test_blast_radius.py — the blast-radius preview of a held statement
# (dbguard/runtime/blast_radius.py) against real throwaway servers (PostgreSQL and MariaDB,
# password logins), with the real analysers. What a DBA checks: the exact count is the number of
# rows the statement would touch, and afterwards every row is still there (always rolled back);
# DROP / TRUNCATE are counted, never run; statements that call user code, tables with triggers
# and MyISAM tables are never run (a side-effect table stays empty, the rows stay); a lock held
# by another session, a slow statement, a closed port or a wrong password give a note within
# the time bound, never an exception; the note never quotes the password.
# Own objects: schema `blast` (PostgreSQL) and database `blast` (MariaDB), recreated per test.
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pymysql
import pytest

from dbguard.approvals.model import BlastRadius
from dbguard.devdb import ThrowawayMariaDB, ThrowawayPostgres
from dbguard.model import ParseSettings, StatementInfo
from dbguard.runtime.blast_radius import measure
from dbguard.session.pg_actions import UpstreamSettings, UpstreamTlsMode
from dbguard.sql import analyse
from tests.integration.harness import free_port

pytestmark = pytest.mark.integration

TIMEOUT = 1.0
# measure() promises about 3 timeouts; libpq's connect timeout is at least 2 s.
BOUND = 3 * TIMEOUT + 2.5

PG_SETUP = """
DROP SCHEMA IF EXISTS blast CASCADE;
CREATE SCHEMA blast;
CREATE TABLE blast.items (id int PRIMARY KEY, price numeric NOT NULL, note text);
INSERT INTO blast.items SELECT g, g, CASE WHEN g = 7 THEN 'it''s $1' ELSE 'plain' END FROM generate_series(1, 100) g;
CREATE TABLE blast.audit (id int, noted_at timestamptz DEFAULT now());
CREATE FUNCTION blast.remember(i int) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN INSERT INTO blast.audit (id) VALUES (i); RETURN true; END $$;
CREATE TABLE blast.logged (id int PRIMARY KEY);
INSERT INTO blast.logged SELECT g FROM generate_series(1, 5) g;
CREATE FUNCTION blast.log_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO blast.audit (id) VALUES (OLD.id); RETURN OLD; END $$;
CREATE TRIGGER logged_delete BEFORE DELETE ON blast.logged FOR EACH ROW EXECUTE FUNCTION blast.log_delete();
"""


def pg_upstream(server: ThrowawayPostgres, *, port: int | None = None, password: str | None = None) -> UpstreamSettings:
    return UpstreamSettings(host=server.host, port=server.port if port is None else port, user=server.app_user,
                            password=server.app_password if password is None else password,
                            database=server.app_database, tls_mode=UpstreamTlsMode.DISABLE)


def pg_analysis(sql: str) -> tuple[StatementInfo, ...]:
    return analyse(sql, ParseSettings("postgres"))


def pg_measure(server: ThrowawayPostgres, sql: str, parameters: tuple[str | None, ...] | None = None,
               **upstream: Any) -> tuple[BlastRadius, float]:
    started = time.monotonic()
    result = measure(pg_upstream(server, **upstream), "postgres", "", sql, parameters, pg_analysis(sql),
                     timeout=TIMEOUT)
    return result, time.monotonic() - started


def pg_query(server: ThrowawayPostgres, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def pg_count(server: ThrowawayPostgres, table: str) -> int:
    return int(pg_query(server, f"SELECT count(*) FROM {table}")[0][0])


def pg_measurement_sessions(server: ThrowawayPostgres) -> int:
    """Connections of the preview still open on the server (they must all be gone)."""
    deadline = time.monotonic() + 5
    while True:
        left = int(pg_query(server, "SELECT count(*) FROM pg_stat_activity "
                                    "WHERE application_name = 'dbguard blast radius'")[0][0])
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@pytest.fixture
def pg(pg_server: ThrowawayPostgres) -> Iterator[ThrowawayPostgres]:
    pg_server.run_sql(PG_SETUP, as_superuser=False)
    try:
        yield pg_server
    finally:
        pg_server.run_sql("DROP SCHEMA IF EXISTS blast CASCADE;", as_superuser=False)


# ------------------------------------------------------------------------------ PostgreSQL


def test_pg_delete_counts_the_matching_rows_and_keeps_them(pg: ThrowawayPostgres) -> None:
    result, elapsed = pg_measure(pg, "DELETE FROM blast.items WHERE id <= 30")
    assert result.exact_rows == 30
    assert result.estimated_rows is not None
    assert result.estimated_rows > 0
    assert "EXPLAIN" in result.note
    assert "rolled-back" in result.note
    assert elapsed < BOUND
    assert pg_count(pg, "blast.items") == 100
    assert pg_query(pg, "SELECT min(id), max(id) FROM blast.items WHERE id <= 30") == [(1, 30)]
    assert pg_measurement_sessions(pg) == 0


def test_pg_update_with_parameters_counts_and_changes_nothing(pg: ThrowawayPostgres) -> None:
    sql = "UPDATE blast.items SET price = $1, note = $2 WHERE id < $3 OR note = $4"
    result, _ = pg_measure(pg, sql, ("0", None, "4", "it's $1"))
    assert result.exact_rows == 4  # ids 1, 2, 3 and 7 (whose note is the 4th parameter)
    assert result.estimated_rows is not None
    assert pg_query(pg, "SELECT count(*) FROM blast.items WHERE price = id AND note IS NOT NULL") == [(100,)]


def test_pg_drop_table_counts_its_rows_and_never_drops_it(pg: ThrowawayPostgres) -> None:
    pg.run_sql("ANALYZE blast.items;", as_superuser=False)
    result, _ = pg_measure(pg, "DROP TABLE blast.items")
    assert result.exact_rows == 100
    assert result.estimated_rows == 100  # pg_class.reltuples, after ANALYZE
    assert "rows in blast.items (DROP would remove them)" in result.note
    assert pg_query(pg, "SELECT to_regclass('blast.items') IS NOT NULL") == [(True,)]
    assert pg_count(pg, "blast.items") == 100


def test_pg_truncate_counts_every_table_it_names(pg: ThrowawayPostgres) -> None:
    result, _ = pg_measure(pg, "TRUNCATE blast.items, blast.logged")
    assert result.exact_rows == 105
    assert "blast.items" in result.note
    assert "blast.logged" in result.note
    assert "TRUNCATE" in result.note
    assert pg_count(pg, "blast.items") == 100
    assert pg_count(pg, "blast.logged") == 5


def test_pg_drop_schema_counts_its_tables(pg: ThrowawayPostgres) -> None:
    result, _ = pg_measure(pg, "DROP SCHEMA blast CASCADE")
    assert result.exact_rows == 105  # items, logged, and the empty audit table
    assert pg_query(pg, "SELECT count(*) FROM pg_namespace WHERE nspname = 'blast'") == [(1,)]


def test_pg_statement_calling_user_code_is_never_run(pg: ThrowawayPostgres) -> None:
    result, _ = pg_measure(pg, "DELETE FROM blast.items WHERE blast.remember(id)")
    assert result.exact_rows is None
    assert "calls user code" in result.note
    assert pg_count(pg, "blast.audit") == 0  # the function never ran, not even rolled back
    assert pg_count(pg, "blast.items") == 100


def test_pg_table_with_a_trigger_is_never_written(pg: ThrowawayPostgres) -> None:
    result, _ = pg_measure(pg, "DELETE FROM blast.logged")
    assert result.exact_rows is None
    assert result.estimated_rows is not None
    assert "blast.logged" in result.note
    assert "triggers" in result.note
    assert pg_count(pg, "blast.audit") == 0
    assert pg_count(pg, "blast.logged") == 5


def test_pg_returning_rows_are_counted_not_kept(pg: ThrowawayPostgres) -> None:
    result, _ = pg_measure(pg, "DELETE FROM blast.items WHERE id > 90 RETURNING *")
    assert result.exact_rows == 10
    assert pg_count(pg, "blast.items") == 100


def test_pg_cascade_reaching_a_trigger_is_never_run(pg: ThrowawayPostgres) -> None:
    pg.run_sql("CREATE TABLE blast.owner (id int PRIMARY KEY); INSERT INTO blast.owner VALUES (1);"
               "ALTER TABLE blast.logged ADD COLUMN owner int REFERENCES blast.owner ON DELETE CASCADE;"
               "UPDATE blast.logged SET owner = 1;", as_superuser=False)
    result, _ = pg_measure(pg, "DELETE FROM blast.owner")
    assert result.exact_rows is None
    assert "blast.owner (or a table its cascades reach) has triggers" in result.note
    assert pg_count(pg, "blast.audit") == 0
    assert pg_count(pg, "blast.logged") == 5


def test_pg_write_through_a_view_is_never_run(pg: ThrowawayPostgres) -> None:
    pg.run_sql("CREATE VIEW blast.cheap AS SELECT * FROM blast.items WHERE price < 10;", as_superuser=False)
    result, _ = pg_measure(pg, "DELETE FROM blast.cheap")
    assert result.exact_rows is None
    assert result.estimated_rows is not None
    assert "it would write blast.items, which it does not name" in result.note


@pytest.mark.parametrize(("holder", "sql"), [
    ("SELECT * FROM blast.items WHERE id = 5 FOR UPDATE", "DELETE FROM blast.items WHERE id = 5"),
    ("LOCK TABLE blast.items IN ACCESS EXCLUSIVE MODE", "DELETE FROM blast.items WHERE id = 5"),
    ("LOCK TABLE blast.items IN ACCESS EXCLUSIVE MODE", "DROP TABLE blast.items"),
])
def test_pg_lock_held_by_another_session_gives_a_note_in_time(pg: ThrowawayPostgres, holder: str, sql: str) -> None:
    with psycopg.connect(pg.dsn()) as other:  # a transaction of its own, open during the measurement
        other.execute(holder)
        result, elapsed = pg_measure(pg, sql)
        other.rollback()
    assert result.exact_rows is None
    assert "waited too long for a lock (55P03)" in result.note
    assert elapsed < BOUND
    assert pg_count(pg, "blast.items") == 100
    assert pg_measurement_sessions(pg) == 0


def test_pg_slow_statement_hits_the_statement_timeout(pg: ThrowawayPostgres) -> None:
    result, elapsed = pg_measure(pg, "DELETE FROM blast.items WHERE id IN (SELECT 1 FROM pg_sleep(30))")
    assert result.exact_rows is None
    assert result.estimated_rows is not None  # EXPLAIN does not run it
    assert "not counted: statement timeout (57014)" in result.note
    assert elapsed < BOUND
    assert pg_count(pg, "blast.items") == 100
    assert pg_measurement_sessions(pg) == 0


def test_pg_closed_port_gives_a_note(pg_server: ThrowawayPostgres) -> None:
    result, elapsed = pg_measure(pg_server, "DELETE FROM blast.items", port=free_port())
    assert result == BlastRadius(None, None, result.note)
    assert result.note == "not measured: cannot connect to the upstream (connection refused)"
    assert elapsed < BOUND


def test_pg_wrong_password_gives_a_note_without_the_password(pg_server: ThrowawayPostgres) -> None:
    result, _ = pg_measure(pg_server, "DELETE FROM blast.items", password="not-the-password-x9")
    assert result.exact_rows is None
    assert "cannot connect to the upstream (authentication failed)" in result.note
    assert "not-the-password-x9" not in result.note
    assert pg_server.app_password not in result.note


def test_pg_error_notes_name_the_sqlstate_not_the_data(pg: ThrowawayPostgres) -> None:
    # The server's message would quote the value ("invalid input syntax for type integer: ...").
    result, _ = pg_measure(pg, "DELETE FROM blast.items WHERE id = $1", ("secret-value-42",))
    assert result.exact_rows is None
    assert result.estimated_rows is None
    assert "22P02" in result.note
    assert "secret-value-42" not in result.note


@pytest.mark.parametrize(("sql", "note"), [
    ("DELETE FROM blast.items; DELETE FROM blast.logged", "not measured: several statements"),
    ("BEGIN", "not measured: transaction control"),
    ("DELETE FROM blast.items WHERE", "not measured: the statement could not be analysed"),
    ("CREATE INDEX ON blast.items (price)", "not measured: CREATE INDEX"),
])
def test_pg_statements_never_measured_open_no_connection(pg_server: ThrowawayPostgres, sql: str, note: str) -> None:
    result, elapsed = pg_measure(pg_server, sql, port=free_port())  # nobody listens: no attempt made
    assert result == BlastRadius(None, None, note)
    assert elapsed < 0.5


def test_pg_measurements_in_parallel_threads(pg: ThrowawayPostgres) -> None:
    results: list[BlastRadius] = []

    def one(limit: int) -> None:
        results.append(pg_measure(pg, f"DELETE FROM blast.items WHERE id <= {limit}")[0])

    threads = [threading.Thread(target=one, args=(n,)) for n in (10, 20, 30, 40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.exact_rows or 0 for r in results) == [10, 20, 30, 40]
    assert pg_count(pg, "blast.items") == 100


# ------------------------------------------------------------------------------ MySQL / MariaDB

MYSQL_SETUP = """
DROP DATABASE IF EXISTS blast;
CREATE DATABASE blast;
GRANT ALL ON blast.* TO 'app_owner'@'%';
CREATE TABLE blast.blast_items (id INT PRIMARY KEY, note VARCHAR(100) NOT NULL) ENGINE=InnoDB;
INSERT INTO blast.blast_items SELECT seq, IF(seq = 7, 'o''clock?', 'plain') FROM seq_1_to_50;
CREATE TABLE blast.blast_myisam (id INT PRIMARY KEY) ENGINE=MyISAM;
INSERT INTO blast.blast_myisam SELECT seq FROM seq_1_to_10;
"""


def my_upstream(server: ThrowawayMariaDB, *, port: int | None = None) -> UpstreamSettings:
    return UpstreamSettings(host=server.host, port=server.port if port is None else port, user=server.app_user,
                            password=server.app_password, database=server.app_database,
                            tls_mode=UpstreamTlsMode.DISABLE)


def my_measure(server: ThrowawayMariaDB, sql: str, parameters: tuple[str | None, ...] | None = None,
               **upstream: Any) -> tuple[BlastRadius, float]:
    analysis = analyse(sql, ParseSettings("mysql", search_path=("blast",)))
    started = time.monotonic()
    result = measure(my_upstream(server, **upstream), "mysql", "blast", sql, parameters, analysis, timeout=TIMEOUT)
    return result, time.monotonic() - started


def my_rows(server: ThrowawayMariaDB, sql: str) -> list[tuple[Any, ...]]:
    return server.run_sql(sql, "blast")


@pytest.fixture
def mariadb(mariadb_server: ThrowawayMariaDB) -> Iterator[ThrowawayMariaDB]:
    mariadb_server.run_sql(MYSQL_SETUP, mariadb_server.app_database)
    try:
        yield mariadb_server
    finally:
        mariadb_server.run_sql("DROP DATABASE IF EXISTS blast")


def test_mysql_delete_counts_the_matching_rows_and_rolls_back(mariadb: ThrowawayMariaDB) -> None:
    result, elapsed = my_measure(mariadb, "DELETE FROM blast_items WHERE id <= 20")
    assert result.exact_rows == 20
    assert result.estimated_rows is not None
    assert result.estimated_rows > 0
    assert "EXPLAIN rows" in result.note
    assert "rolled-back" in result.note
    assert elapsed < BOUND
    assert my_rows(mariadb, "SELECT COUNT(*), MIN(id) FROM blast_items") == [(50, 1)]


def test_mysql_update_with_placeholders_and_tricky_values(mariadb: ThrowawayMariaDB) -> None:
    # `?` inside a string literal and a comment are not placeholders; values holding a quote
    # and a `?` are escaped, and their `?` is not taken for the next placeholder.
    sql = "UPDATE blast_items SET note = CONCAT(?, '?') /* ? */ WHERE id = ? OR note = ?"
    result, _ = my_measure(mariadb, sql, ("it's a ? test", "3", "o'clock?"))
    assert result.exact_rows == 2  # id 3, and id 7 whose note is the third value
    assert "rolled-back" in result.note
    assert my_rows(mariadb, "SELECT COUNT(*) FROM blast_items WHERE note IN ('plain', 'o''clock?')") == [(50,)]


def test_mysql_null_parameter_and_placeholder_count(mariadb: ThrowawayMariaDB) -> None:
    result, _ = my_measure(mariadb, "DELETE FROM blast_items WHERE id = ? OR id <=> ?", ("5", None))
    assert result.exact_rows == 1
    result, _ = my_measure(mariadb, "DELETE FROM blast_items WHERE id = ?", ("5", "6"))
    assert result == BlastRadius(None, None, "not measured: 1 placeholders for 2 parameters")
    assert my_rows(mariadb, "SELECT COUNT(*) FROM blast_items") == [(50,)]


def test_mysql_returning_rows_are_counted(mariadb: ThrowawayMariaDB) -> None:
    result, _ = my_measure(mariadb, "DELETE FROM blast_items WHERE id > 40 RETURNING id, note")
    assert result.exact_rows == 10
    assert my_rows(mariadb, "SELECT COUNT(*) FROM blast_items") == [(50,)]


def test_mysql_myisam_table_is_never_written(mariadb: ThrowawayMariaDB) -> None:
    result, _ = my_measure(mariadb, "DELETE FROM blast_myisam WHERE id > 2")
    assert result.exact_rows is None
    assert "blast.blast_myisam is MyISAM (cannot be rolled back)" in result.note
    assert my_rows(mariadb, "SELECT COUNT(*) FROM blast_myisam") == [(10,)]


def test_mysql_drop_is_not_measured(mariadb: ThrowawayMariaDB) -> None:
    result, _ = my_measure(mariadb, "DROP TABLE blast_items")
    assert result == BlastRadius(None, None, "not measured: DROP TABLE (MySQL: DML only)")
    assert my_rows(mariadb, "SELECT COUNT(*) FROM blast_items") == [(50,)]


def test_mysql_user_function_is_never_run(mariadb: ThrowawayMariaDB) -> None:
    mariadb.run_sql("CREATE TABLE blast.blast_audit (id INT) ENGINE=InnoDB;"
                    "CREATE FUNCTION blast.blast_remember(i INT) RETURNS INT MODIFIES SQL DATA "
                    "BEGIN INSERT INTO blast.blast_audit VALUES (i); RETURN 1; END")
    result, _ = my_measure(mariadb, "DELETE FROM blast_items WHERE blast_remember(id) = 1")
    assert result.exact_rows is None
    assert "calls user code" in result.note
    assert my_rows(mariadb, "SELECT COUNT(*) FROM blast_audit") == [(0,)]


def test_mysql_row_lock_held_by_another_session_gives_a_note_in_time(mariadb: ThrowawayMariaDB) -> None:
    other = pymysql.connect(**mariadb.connect_kwargs(database="blast"))
    try:
        with other.cursor() as cur:
            cur.execute("START TRANSACTION")
            cur.execute("SELECT * FROM blast_items WHERE id = 5 FOR UPDATE")
            result, elapsed = my_measure(mariadb, "DELETE FROM blast_items WHERE id = 5")
            cur.execute("ROLLBACK")
    finally:
        other.close()
    assert result.exact_rows is None
    assert "waited too long for a lock (1205)" in result.note
    assert elapsed < BOUND
    assert my_rows(mariadb, "SELECT COUNT(*) FROM blast_items") == [(50,)]


def test_mysql_slow_statement_hits_max_statement_time(mariadb: ThrowawayMariaDB) -> None:
    result, elapsed = my_measure(mariadb, "DELETE FROM blast_items WHERE id = (SELECT SLEEP(30) + 1)")
    assert result.exact_rows is None
    assert "not counted: statement timeout (1969)" in result.note
    assert elapsed < BOUND
    assert my_rows(mariadb, "SELECT COUNT(*) FROM blast_items") == [(50,)]


def test_mysql_closed_port_gives_a_note(mariadb_server: ThrowawayMariaDB) -> None:
    result, elapsed = my_measure(mariadb_server, "DELETE FROM blast_items", port=free_port())
    assert result == BlastRadius(None, None, "not measured: cannot connect to the upstream (connection refused (2003))")
    assert elapsed < BOUND
