"""MySQL/MariaDB sessions write the journal: what a compliance reader finds after real clients ran.

Covers: session start and end with identity and connect attributes, intent from a connect
attribute; COM_QUERY texts with their outcome (rows returned or affected, errno), a
multi-statement text as one event; COM_STMT_EXECUTE executions with their bound parameters
(mysql-connector's prepared cursor), each execution on its own; refused statements journaled
as blocked with no outcome; COM_INIT_DB as USE; KILL QUERY of another session as a cancel in
that session; redacted parameters; write-ahead (the event is durable while the statement
runs); a store that fails refuses the statement and closes the session, or with
`on_store_failure: allow` lets it run and says so in the log; `kill -9` of the proxy
under load loses no statement whose result a client received; `dbguard journal verify`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import mysql.connector
import pymysql
import pytest
from pymysql.constants import CLIENT

from dbguard.devdb import ThrowawayMariaDB, ThrowawayPostgres
from dbguard.journal import (
    CancelEvent,
    SessionEndEvent,
    SessionStartEvent,
    StatementEvent,
    open_store,
)
from tests.integration import journal_sessions as js
from tests.integration.harness import ProxyProcess
from tests.integration.mysql_harness import WRITE_GUARD_RULES, connect, serve_in_front_of


def _connector(proxy: ProxyProcess, program: str, user: str = "copilot", **attrs: str) -> Any:
    """mysql-connector (pure Python) through the proxy, naming itself `program`."""
    return mysql.connector.connect(
        host=proxy.host, port=proxy.port, user=user, password=proxy.secrets[user], database="app",
        use_pure=True, connection_timeout=10, conn_attrs={"program_name": program, **attrs})


@pytest.fixture
def journaled(mariadb_server: ThrowawayMariaDB) -> Iterator[ProxyProcess]:
    yield from serve_in_front_of(mariadb_server, WRITE_GUARD_RULES)


def test_pymysql_session_is_journaled_statement_by_statement(journaled: ProxyProcess) -> None:
    conn = connect(journaled, program_name="journal-pymysql", client_flag=CLIENT.MULTI_STATEMENTS)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TEMPORARY TABLE jt (id int, note text)")
            cur.execute("INSERT INTO jt VALUES (1, 'a'), (2, 'b'), (3, NULL)")
            cur.execute("SELECT id FROM jt WHERE id >= 2")
            assert cur.fetchall() == ((2,), (3,))
            with pytest.raises(pymysql.err.ProgrammingError) as missing_info:
                cur.execute("SELECT * FROM no_such_table")
            assert missing_info.value.args[0] == 1146
            with pytest.raises(pymysql.err.OperationalError) as blocked:
                cur.execute("DROP TABLE jt")
            assert blocked.value.args[0] == 1227
            cur.execute("SELECT 1; SELECT 2 FROM jt")  # one message, two result sets
            while cur.nextset():
                pass
            conn.select_db("app")  # COM_INIT_DB
            cur.execute("UPDATE jt SET note = 'z' WHERE id <= 2")
    finally:
        conn.close()
    events = js.session_events(journaled, "journal-pymysql")
    start = events[0]
    assert isinstance(start, SessionStartEvent)
    assert (start.identity, start.identity_kind, start.protocol) == ("copilot", "agent", "mysql")
    assert start.listener == "app-mysql"
    assert start.database == "app"
    assert start.client_address.startswith("127.0.0.1:")
    assert ("program_name", "journal-pymysql") in start.client_attributes
    assert any(name == "_client_name" for name, _ in start.client_attributes)
    assert isinstance(events[-1], SessionEndEvent)
    assert events[-1].reason in ("client quit", "client closed")

    statements = js.statements(events)
    assert [s.seq for s in statements] == list(range(1, len(statements) + 1))
    # dbguard's own state queries are not the client's statements.
    assert not [s for s in statements if "@@SESSION" in s.text.upper()]
    by_text = {s.text: s for s in statements}

    insert = by_text["INSERT INTO jt VALUES (1, 'a'), (2, 'b'), (3, NULL)"]
    assert insert.action == "allow"
    assert "insert" in insert.kinds
    outcome = js.outcome(events, insert.seq)
    assert outcome is not None
    assert (outcome.rows, outcome.error_code) == (3, "")

    outcome = js.outcome(events, by_text["SELECT id FROM jt WHERE id >= 2"].seq)
    assert outcome is not None
    assert outcome.rows == 2

    outcome = js.outcome(events, by_text["SELECT * FROM no_such_table"].seq)
    assert outcome is not None
    assert outcome.error_code == "1146"
    assert "no_such_table" in outcome.error_message

    drop = by_text["DROP TABLE jt"]
    assert drop.action == "block"
    assert drop.rule_ids == ("no-drop",)
    assert js.outcome(events, drop.seq) is None  # it never ran

    outcome = js.outcome(events, by_text["SELECT 1; SELECT 2 FROM jt"].seq)
    assert outcome is not None
    assert outcome.rows == 1 + 3

    outcome = js.outcome(events, by_text["USE `app`"].seq)
    assert outcome is not None
    assert outcome.error_code == ""

    outcome = js.outcome(events, by_text["UPDATE jt SET note = 'z' WHERE id <= 2"].seq)
    assert outcome is not None
    assert outcome.rows == 2

    shown = js.journal_cli(journaled, "show", start.session_id)
    assert shown.returncode == 0, shown.stderr
    assert "DROP TABLE jt" in shown.stdout
    verified = js.journal_cli(journaled, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_prepared_executions_are_journaled_with_their_parameters(journaled: ProxyProcess) -> None:
    conn = _connector(journaled, "journal-connector", **{"dbguard.intent": "weekly-cleanup"})
    try:
        cur = conn.cursor(prepared=True)
        for value in (10, 20, 30):  # one prepared statement executed three times
            cur.execute("SELECT ? + 1", (value,))
            assert cur.fetchall() == [(value + 1,)]
        cur.execute("SELECT ?, ?, ?, ?, ?, ?", ("caf\u00e9", None, 2.5, datetime.date(2026, 11, 21),
                                                 datetime.datetime(2026, 11, 21, 14, 30, 5, 123), b"\x00\xff"))
        cur.fetchall()
        with pytest.raises(mysql.connector.Error) as info:
            cur.execute("DELETE FROM nowhere")  # refused at prepare: never reaches the server
        assert info.value.errno == 1227
        cur.close()
    finally:
        conn.close()
    events = js.session_events(journaled, "journal-connector")
    start = events[0]
    assert isinstance(start, SessionStartEvent)
    assert start.intent == "weekly-cleanup"
    statements = js.statements(events)
    assert all(s.intent == "weekly-cleanup" for s in statements)
    executions = [s for s in statements if s.text == "SELECT ? + 1"]
    assert [s.parameters for s in executions] == [("10",), ("20",), ("30",)]
    assert all((o := js.outcome(events, s.seq)) is not None and o.rows == 1 for s in executions)
    typed = next(s for s in statements if s.text == "SELECT ?, ?, ?, ?, ?, ?")
    assert typed.parameters is not None
    assert typed.parameters[:3] == ("caf\u00e9", None, "2.5")
    assert str(typed.parameters[3]).startswith("2026-11-21")
    assert typed.parameters[4] == "2026-11-21 14:30:05.000123"
    assert typed.parameters[5] in ("\\x00ff", "\x00\ufffd")
    refused = next(s for s in statements if s.text == "DELETE FROM nowhere")
    assert refused.action == "block"
    assert js.outcome(events, refused.seq) is None


def test_kill_query_is_a_cancel_in_the_killed_session(journaled: ProxyProcess) -> None:
    victim = connect(journaled, program_name="journal-victim")
    killer = connect(journaled, program_name="journal-killer")
    try:
        victim_id = int(vars(victim)["server_thread_id"][0])  # the greeting's id, as thread_id() gives
        timer = threading.Timer(0.7, lambda: killer.cursor().execute(f"KILL QUERY {victim_id}"))
        timer.start()
        with victim.cursor() as cur, contextlib.suppress(pymysql.err.OperationalError):
            cur.execute("SELECT SLEEP(10)")  # MariaDB: SLEEP returns 1, or 1317 when interrupted
        timer.join()
    finally:
        victim.close()
        killer.close()
    events = js.session_events(journaled, "journal-victim")
    sleep = next(s for s in js.statements(events) if s.text == "SELECT SLEEP(10)")
    cancels = [e for e in events if isinstance(e, CancelEvent)]
    assert len(cancels) == 1
    assert cancels[0].statement_seq == sleep.seq
    assert js.outcome(events, sleep.seq) is not None
    killer_statements = js.statements(js.session_events(journaled, "journal-killer"))
    assert any(s.text.startswith("KILL QUERY ") for s in killer_statements)


def test_redacted_parameters_keep_only_their_count(mariadb_server: ThrowawayMariaDB) -> None:
    for proxy in serve_in_front_of(mariadb_server, extra_yaml="journal: {redact_parameters: true}\n"):
        conn = _connector(proxy, "journal-redacted")
        try:
            cur = conn.cursor(prepared=True)
            cur.execute("SELECT ?, ?", ("4111 1111 1111 1111", 7))
            assert cur.fetchall() == [("4111 1111 1111 1111", 7)]
            cur.close()
        finally:
            conn.close()
        event = next(s for s in js.statements(js.session_events(proxy, "journal-redacted")) if s.text == "SELECT ?, ?")
        assert event.parameters is None
        assert event.parameters_redacted
        assert event.parameter_count == 2
        assert b"4111 1111" not in (proxy.config_path.parent / "dbguard.db").read_bytes()


def test_statement_event_is_durable_before_the_statement_runs(journaled: ProxyProcess) -> None:
    marker = "write-ahead-check-5b1c"
    found: list[bool] = []

    def look_while_running() -> None:
        time.sleep(0.5)  # the statement is sleeping on the server by now
        with open_store(js.store_url(journaled), create=False) as store:
            found.append(any(marker.encode() in stored.payload for stored in store.iter_events()))

    conn = connect(journaled, program_name="journal-ahead")
    try:
        watcher = threading.Thread(target=look_while_running)
        watcher.start()
        with conn.cursor() as cur:
            cur.execute(f"SELECT CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED), SLEEP(1.5), '{marker}'")
            started_us = cur.fetchone()
        watcher.join()
    finally:
        conn.close()
    assert found == [True], "the statement's event was not in the store while it ran"
    assert started_us is not None
    statement = next(s for s in js.statements(js.session_events(journaled, "journal-ahead")) if marker in s.text)
    assert statement.time_us <= started_us[0]  # recorded before the server started it


def test_store_failure_refuses_the_statement(mariadb_server: ThrowawayMariaDB,
                                             fresh_pg_server: ThrowawayPostgres) -> None:
    """A PostgreSQL store that goes away: the next statement is refused, never run unrecorded."""
    store = fresh_pg_server.superuser_dsn()
    mariadb_server.run_sql("CREATE TABLE IF NOT EXISTS journal_refusal (n int); TRUNCATE journal_refusal",
                           mariadb_server.app_database, as_root=False)
    for proxy in serve_in_front_of(mariadb_server, extra_yaml=f"store: {store}\n"):
        conn = connect(proxy)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            fresh_pg_server.stop()
            with pytest.raises(pymysql.err.MySQLError) as info, conn.cursor() as cur:
                cur.execute("INSERT INTO journal_refusal VALUES (1)")
            assert "the statement was not run: the journal cannot record it" in str(info.value)
        finally:
            with contextlib.suppress(pymysql.err.Error):
                conn.close()
            fresh_pg_server.start()
        assert proxy.alive
        assert mariadb_server.run_sql("SELECT count(*) FROM journal_refusal", mariadb_server.app_database) == [(0,)]
        assert "journal.statement_refused" in proxy.log()
        again = connect(proxy)  # the store is back: sessions work again
        try:
            with again.cursor() as cur:
                cur.execute("SELECT 2")
                assert cur.fetchone() == (2,)
        finally:
            again.close()
    mariadb_server.run_sql("DROP TABLE journal_refusal", mariadb_server.app_database, as_root=False)


def test_store_failure_with_allow_runs_the_statement_loudly(mariadb_server: ThrowawayMariaDB,
                                                            fresh_pg_server: ThrowawayPostgres) -> None:
    store = fresh_pg_server.superuser_dsn()
    for proxy in serve_in_front_of(mariadb_server,
                                   extra_yaml=f"store: {store}\njournal: {{on_store_failure: allow}}\n"):
        conn = connect(proxy)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            fresh_pg_server.stop()
            with conn.cursor() as cur:
                cur.execute("SELECT 41 + 1")
                assert cur.fetchone() == (42,)
        finally:
            with contextlib.suppress(pymysql.err.Error):
                conn.close()
            fresh_pg_server.start()
        log = proxy.log()
        assert "journal.statement_unjournaled" in log
        assert "journal.allow_unjournaled" in log


def test_kill_9_under_load_loses_no_statement_a_client_saw(mariadb_server: ThrowawayMariaDB) -> None:
    received: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def text_client(proxy: ProxyProcess, number: int) -> None:
        conn = None
        try:
            conn = connect(proxy)
            n = 0
            while not stop.is_set():
                n += 1
                marker = f"k9-{number}-{n}"
                with conn.cursor() as cur:
                    cur.execute(f"SELECT '{marker}'")
                    assert cur.fetchone() == (marker,)
                with lock:
                    received.append(marker)
        except pymysql.err.MySQLError:
            return  # the proxy died under us: expected
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def prepared_client(proxy: ProxyProcess, number: int) -> None:
        conn = None
        try:
            conn = _connector(proxy, f"k9-prepared-{number}")
            cur = conn.cursor(prepared=True)
            n = 0
            while not stop.is_set():
                n += 1
                marker = f"k9p-{number}-{n}"
                cur.execute("SELECT CONCAT(?, '')", (marker,))
                assert cur.fetchall() == [(marker,)]
                with lock:
                    received.append(marker)
        except (mysql.connector.Error, OSError):
            return
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    for proxy in serve_in_front_of(mariadb_server, clean_exit=False):
        threads = [threading.Thread(target=text_client if i % 2 else prepared_client, args=(proxy, i))
                   for i in range(8)]
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        os.kill(proxy.proc.pid, signal.SIGKILL)
        proxy.proc.wait(10)
        stop.set()
        for thread in threads:
            thread.join(10)
        assert len(received) > 200, "too little load to prove anything"

        # What was still in the killed proxy's write-ahead segment goes into the store with
        # the next `dbguard journal` command (or the next start), as an operator would see it.
        missing, no_outcome = js.answered_but_unjournaled(proxy, received)
        assert missing == [], f"{len(missing)} statements answered but not journaled, e.g. {missing[:5]}"
        assert no_outcome == [], f"{len(no_outcome)} results received without their outcome, e.g. {no_outcome[:5]}"


def test_change_user_starts_a_new_journal_session(journaled: ProxyProcess) -> None:
    conn = _connector(journaled, "journal-change-user")
    try:
        cur = conn.cursor()
        cur.execute("SELECT 'as copilot'")
        cur.fetchall()
        cur.close()
        conn.cmd_change_user(username="alice", password=journaled.secrets["alice"], database="app")
        cur = conn.cursor()
        cur.execute("SELECT 'as alice'")
        cur.fetchall()
        cur.close()
    finally:
        conn.close()
    deadline = time.monotonic() + 10
    while True:
        with open_store(js.store_url(journaled), create=False) as store:
            events = [stored.event() for stored in store.iter_events()]
        starts = [e for e in events if isinstance(e, SessionStartEvent) and e.application_name == "journal-change-user"]
        ends = {e.session_id: e for e in events if isinstance(e, SessionEndEvent)}
        if len(starts) == 2 and all(start.session_id in ends for start in starts):
            break
        assert time.monotonic() < deadline, starts
        time.sleep(0.05)
    assert [start.identity for start in starts] == ["copilot", "alice"]
    assert ends[starts[0].session_id].reason == "changed user to alice"
    by_session = {start.session_id: [(e.seq, e.text) for e in events
                                     if isinstance(e, StatementEvent) and e.session_id == start.session_id]
                  for start in starts}
    # (mysql-connector's own SET NAMES / autocommit statements come first)
    for start, mine, other in ((starts[0], "SELECT 'as copilot'", "SELECT 'as alice'"),
                               (starts[1], "SELECT 'as alice'", "SELECT 'as copilot'")):
        statements = by_session[start.session_id]
        assert [seq for seq, _ in statements] == list(range(1, len(statements) + 1))
        texts = [text for _, text in statements]
        assert mine in texts
        assert other not in texts
