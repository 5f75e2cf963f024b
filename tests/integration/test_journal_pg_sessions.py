"""PostgreSQL sessions write the journal: what a compliance reader finds after real clients ran.

Covers: session start and end with identity, client attributes and intent; simple-protocol
statements with their outcome (rows, SQLSTATE); extended-protocol executions with their bound
parameters (psycopg text, asyncpg binary), each execution of a prepared statement on its own;
refused statements journaled as blocked with no outcome; cancels; redacted parameters;
write-ahead (the event is durable before the statement runs); a store that fails refuses the
statement (or lets it through with `on_store_failure: allow`); `kill -9` of the proxy under
load loses no statement whose result a client received; `dbguard journal verify` afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from pathlib import Path

import asyncpg
import psycopg
import pytest
from psycopg import errors

from dbguard.devdb.postgres import ThrowawayPostgres
from dbguard.journal import (
    CancelEvent,
    SessionEndEvent,
    SessionStartEvent,
    open_store,
)
from dbguard.journal.segments import SEGMENT_SUFFIX, maps_safely, read_segment, segment_directory
from tests.integration import journal_sessions as js
from tests.integration.harness import ProxyFactory, ProxyProcess

RULES = """\
rules:
  - id: no-drop
    when: {statement: [drop, truncate]}
    action: block
"""


@pytest.fixture
def journaled(pg_server: ThrowawayPostgres, proxy_factory: ProxyFactory, tmp_path: Path) -> ProxyProcess:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    return proxy_factory(pg_server.dsn(sslmode="disable"), extra_yaml=f"rules: {rules}\n")


def test_psycopg_session_is_journaled_statement_by_statement(journaled: ProxyProcess) -> None:
    with psycopg.connect(journaled.dsn("copilot", application_name="journal-psycopg"), autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE jt (id int, note text)")
        conn.execute("INSERT INTO jt VALUES (1, 'a'), (2, 'b'), (3, NULL)")
        assert conn.execute("SELECT id FROM jt WHERE id >= %s", (2,)).fetchall() == [(2,), (3,)]
        with conn.cursor() as cur:
            for value in (10, 20, 30):  # one prepared statement executed three times
                cur.execute("SELECT %s::int + id FROM jt WHERE id = 1", (value,), prepare=True)
                assert cur.fetchone() == (value + 1,)
        with pytest.raises(errors.UndefinedTable):
            conn.execute("SELECT * FROM no_such_table")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DROP TABLE jt")
        conn.execute("SELECT 1; SELECT 2 FROM jt")  # one message, two statements
    events = js.session_events(journaled, "journal-psycopg")
    start = events[0]
    assert isinstance(start, SessionStartEvent)
    assert (start.identity, start.identity_kind, start.roles) == ("copilot", "agent", ("readers",))
    assert start.protocol == "postgres"
    assert start.listener == "app-pg"
    assert start.database == "app"
    assert start.client_address.startswith("127.0.0.1:")
    assert ("application_name", "journal-psycopg") in start.client_attributes
    assert isinstance(events[-1], SessionEndEvent)
    assert events[-1].reason == "client closed"

    statements = js.statements(events)
    assert [s.seq for s in statements] == list(range(1, len(statements) + 1))
    texts = [s.text for s in statements]
    assert "CREATE TEMP TABLE jt (id int, note text)" in texts
    insert = statements[texts.index("INSERT INTO jt VALUES (1, 'a'), (2, 'b'), (3, NULL)")]
    assert insert.action == "allow"
    assert "insert" in insert.kinds
    outcome = js.outcome(events, insert.seq)
    assert outcome is not None
    assert outcome.rows == 3
    assert outcome.error_code == ""

    select = next(s for s in statements if s.text == "SELECT id FROM jt WHERE id >= $1")
    # psycopg sends small ints in binary (int2, named in its Parse): journaled as the number.
    assert select.parameters == ("2",)
    assert select.parameter_count == 1
    outcome = js.outcome(events, select.seq)
    assert outcome is not None
    assert outcome.rows == 2

    executions = [s for s in statements if s.text == "SELECT $1::int + id FROM jt WHERE id = 1"]
    assert [s.parameters for s in executions] == [("10",), ("20",), ("30",)]
    assert all((o := js.outcome(events, s.seq)) is not None and o.rows == 1 for s in executions)

    missing = next(s for s in statements if s.text == "SELECT * FROM no_such_table")
    outcome = js.outcome(events, missing.seq)
    assert outcome is not None
    assert outcome.error_code == "42P01"
    assert "no_such_table" in outcome.error_message

    drop = next(s for s in statements if s.text == "DROP TABLE jt")
    assert drop.action == "block"
    assert drop.rule_ids == ("no-drop",)
    assert drop.enforced
    assert js.outcome(events, drop.seq) is None  # it never ran

    multi = next(s for s in statements if s.text == "SELECT 1; SELECT 2 FROM jt")
    outcome = js.outcome(events, multi.seq)
    assert outcome is not None
    assert outcome.rows == 1 + 3

    # What an auditor runs: the session reads back through the CLI, and the chain verifies.
    shown = js.journal_cli(journaled, "show", start.session_id)
    assert shown.returncode == 0, shown.stderr
    assert "DROP TABLE jt" in shown.stdout
    verified = js.journal_cli(journaled, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_intent_from_startup_option_and_sqlcommenter_comment(journaled: ProxyProcess) -> None:
    dsn = journaled.dsn("alice", application_name="journal-intent")
    with psycopg.connect(dsn, autocommit=True, options="-c dbguard.intent=weekly-cleanup") as conn:
        conn.execute("SELECT 1")
        conn.execute("SELECT 2 /*dbguard_intent='count%20the%20rows',framework='x'*/")
    events = js.session_events(journaled, "journal-intent")
    start = events[0]
    assert isinstance(start, SessionStartEvent)
    assert start.intent == "weekly-cleanup"
    by_text = {s.text: s for s in js.statements(events)}
    assert by_text["SELECT 1"].intent == "weekly-cleanup"
    assert by_text["SELECT 2 /*dbguard_intent='count%20the%20rows',framework='x'*/"].intent == "count the rows"


def test_asyncpg_binary_parameters_are_journaled_as_hex(journaled: ProxyProcess) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(journaled.dsn("copilot"), server_settings={"application_name": "journal-asyncpg"})
        try:
            assert await conn.fetchval("SELECT $1::int8 * 2", 21) == 42
            assert await conn.fetchval("SELECT $1::text || 'x'", "caf\u00e9") == "caf\u00e9x"
            assert await conn.fetchval("SELECT $1::int4 IS NULL", None) is True
        finally:
            await conn.close()

    asyncio.run(run())
    statements = js.statements(js.session_events(journaled, "journal-asyncpg"))
    by_text = {s.text: s for s in statements}
    # asyncpg sends int8 in binary without naming the type in its Parse (it learns it from the
    # server's ParameterDescription): 21 as eight big-endian bytes, in hex.
    assert by_text["SELECT $1::int8 * 2"].parameters == ("\\x0000000000000015",)
    assert by_text["SELECT $1::text || 'x'"].parameters in (("caf\u00e9",), ("\\x636166c3a9",))
    assert by_text["SELECT $1::int4 IS NULL"].parameters == (None,)


def test_redacted_parameters_keep_only_their_count(pg_server: ThrowawayPostgres, proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(pg_server.dsn(sslmode="disable"), extra_yaml="journal: {redact_parameters: true}\n")
    with psycopg.connect(proxy.dsn("copilot", application_name="journal-redacted"), autocommit=True) as conn:
        assert conn.execute("SELECT %s::text, %s::int", ("4111 1111 1111 1111", 7)).fetchone() == (
            "4111 1111 1111 1111", 7)
    statements = js.statements(js.session_events(proxy, "journal-redacted"))
    event = next(s for s in statements if s.text == "SELECT $1::text, $2::int")
    assert event.parameters is None
    assert event.parameters_redacted
    assert event.parameter_count == 2
    assert b"4111 1111" not in (proxy.config_path.parent / "dbguard.db").read_bytes()


def test_statement_event_is_durable_before_the_statement_runs(journaled: ProxyProcess) -> None:
    marker = "write-ahead-check-7f3a"
    found: list[bool] = []

    def look_while_running() -> None:
        # Durable means: in the proxy's write-ahead segment (what a restart recovers) or already
        # in the store (the appender moves it there ~50 ms later, off the proxy's loop).
        time.sleep(0.5)  # the statement is sleeping on the server by now
        store_path = journaled.config_path.parent / "dbguard.db"
        in_segments = any(marker.encode() in record.payload
                          for segment in segment_directory(store_path).glob("*" + SEGMENT_SUFFIX)
                          for record in read_segment(segment))
        with open_store(js.store_url(journaled), create=False) as store:
            in_store = any(marker.encode() in stored.payload for stored in store.iter_events())
        found.append(in_segments or in_store)

    with psycopg.connect(journaled.dsn("copilot", application_name="journal-ahead"), autocommit=True) as conn:
        watcher = threading.Thread(target=look_while_running)
        watcher.start()
        started_us = conn.execute(
            f"SELECT (extract(epoch from statement_timestamp()) * 1000000)::bigint, pg_sleep(1.5), '{marker}'"
        ).fetchone()
        watcher.join()
    assert found == [True], "the statement's event was not durable while it ran"
    assert started_us is not None
    statement = next(s for s in js.statements(js.session_events(journaled, "journal-ahead")) if marker in s.text)
    # Recorded before the server started it (same machine clock).
    assert statement.time_us <= started_us[0]


def test_cancel_is_journaled_in_the_cancelled_session(journaled: ProxyProcess) -> None:
    with psycopg.connect(journaled.dsn("copilot", application_name="journal-cancel"), autocommit=True) as conn:
        timer = threading.Timer(0.5, conn.cancel)
        timer.start()
        with pytest.raises(errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(10)")
        timer.join()
    events = js.session_events(journaled, "journal-cancel")
    sleep = next(s for s in js.statements(events) if s.text == "SELECT pg_sleep(10)")
    cancels = [e for e in events if isinstance(e, CancelEvent)]
    assert len(cancels) == 1
    assert cancels[0].statement_seq == sleep.seq
    assert cancels[0].client_address.startswith("127.0.0.1:")
    outcome = js.outcome(events, sleep.seq)
    assert outcome is not None
    assert outcome.error_code == "57014"


def test_store_failure_refuses_the_statement(pg_server: ThrowawayPostgres, fresh_pg_server: ThrowawayPostgres,
                                             proxy_factory: ProxyFactory) -> None:
    """A PostgreSQL store that goes away: the next statement is refused, never run unrecorded."""
    store = fresh_pg_server.superuser_dsn()
    proxy = proxy_factory(pg_server.dsn(sslmode="disable"), extra_yaml=f"store: {store}\n")
    with psycopg.connect(proxy.dsn("copilot"), autocommit=True) as setup:
        setup.execute("CREATE TABLE IF NOT EXISTS journal_refusal (n int)")
        setup.execute("TRUNCATE journal_refusal")
    conn = psycopg.connect(proxy.dsn("copilot"), autocommit=True)
    assert conn.execute("SELECT 1").fetchone() == (1,)
    fresh_pg_server.stop()
    try:
        with pytest.raises(psycopg.OperationalError) as info:
            conn.execute("INSERT INTO journal_refusal VALUES (1)")
        assert "the statement was not run: the journal cannot record it" in str(info.value)
        assert "58030" in (getattr(info.value, "sqlstate", None) or "58030")
    finally:
        conn.close()
        fresh_pg_server.start()
    assert proxy.alive
    assert pg_server.run_sql("SELECT count(*) FROM journal_refusal").strip() == "0"
    assert "journal.statement_refused" in proxy.log()
    # The store is back: sessions work again.
    with psycopg.connect(proxy.dsn("copilot"), autocommit=True) as again:
        assert again.execute("SELECT 2").fetchone() == (2,)


def test_store_failure_with_allow_runs_the_statement_loudly(pg_server: ThrowawayPostgres,
                                                            fresh_pg_server: ThrowawayPostgres,
                                                            proxy_factory: ProxyFactory) -> None:
    store = fresh_pg_server.superuser_dsn()
    proxy = proxy_factory(pg_server.dsn(sslmode="disable"),
                          extra_yaml=f"store: {store}\njournal: {{on_store_failure: allow}}\n")
    conn = psycopg.connect(proxy.dsn("copilot"), autocommit=True)
    assert conn.execute("SELECT 1").fetchone() == (1,)
    fresh_pg_server.stop()
    try:
        assert conn.execute("SELECT 41 + 1").fetchone() == (42,)
    finally:
        conn.close()
        fresh_pg_server.start()
    log = proxy.log()
    assert "journal.statement_unjournaled" in log
    assert "journal.allow_unjournaled" in log


@pytest.mark.parametrize("segment_writes", ["auto", "write"])
def test_kill_9_under_load_loses_no_statement_a_client_saw(pg_server: ThrowawayPostgres,
                                                           proxy_factory: ProxyFactory, segment_writes: str) -> None:
    """Both ways of writing the segment (through a memory map, where the file system allows
    it; write() always) lose nothing a client saw."""
    proxy = proxy_factory(pg_server.dsn(sslmode="disable"),
                          extra_yaml=f"journal: {{segment_writes: {segment_writes}}}\n")
    received: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(number: int) -> None:
        try:
            with psycopg.connect(proxy.dsn("copilot"), autocommit=True) as conn:
                n = 0
                while not stop.is_set():
                    n += 1
                    marker = f"k9-{number}-{n}"
                    if n % 2:
                        row = conn.execute(f"SELECT '{marker}'").fetchone()
                    else:
                        row = conn.execute("SELECT %s::text", (marker,)).fetchone()
                    assert row == (marker,)
                    with lock:
                        received.append(marker)
        except psycopg.OperationalError:
            return  # the proxy died under us: expected

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    with open(f"/proc/{proxy.proc.pid}/maps", encoding="utf-8") as maps:
        mapped = any(line.rstrip().endswith(SEGMENT_SUFFIX) for line in maps)
    segments = segment_directory(proxy.config_path.parent / "dbguard.db")
    assert mapped == (segment_writes == "auto" and maps_safely(segments))
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
    # The outcome too: it is in the segment before the client reads the result.
    assert no_outcome == [], f"{len(no_outcome)} results received without their outcome, e.g. {no_outcome[:5]}"


def test_journal_disabled_writes_nothing_and_says_so(pg_server: ThrowawayPostgres,
                                                     proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(pg_server.dsn(sslmode="disable"), extra_yaml="journal: {enabled: false}\n")
    with psycopg.connect(proxy.dsn("copilot"), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not (proxy.config_path.parent / "dbguard.db").exists()
    assert "journal.disabled" in proxy.log()


def test_journal_show_json_is_the_session(journaled: ProxyProcess) -> None:
    with psycopg.connect(journaled.dsn("migrator", application_name="journal-cli"), autocommit=True) as conn:
        conn.execute("SELECT 40 + 2")
    events = js.session_events(journaled, "journal-cli")
    start = events[0]
    assert isinstance(start, SessionStartEvent)
    out = js.journal_cli(journaled, "show", start.session_id, "--json")
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["session_id"] == start.session_id
    kinds = [event["event"]["kind"] for event in shown["events"]]
    assert kinds[0] == "session_start"
    assert kinds[-1] == "session_end"
    assert "statement" in kinds
