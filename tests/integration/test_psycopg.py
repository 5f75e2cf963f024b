"""psycopg 3 through the proxy, compared with the same work done directly on the server.

Covers parameters of many types (text and binary), executemany, server-side cursors, COPY in
both directions (and a COPY that fails), pipeline mode with an error inside it, prepared
statements, LISTEN/NOTIFY across two proxied connections, transactions and savepoints,
cancelling a running query, and the same main paths with AsyncConnection.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.types.json import Json, Jsonb

from dbguard.devdb.postgres import ThrowawayPostgres
from tests.integration.harness import ProxyProcess

T = TypeVar("T")

# A query running this long is only ever interrupted by a cancel; a cancel must land well
# before it would have finished by itself.
SLEEP_SECONDS = 10
CANCEL_DEADLINE = 2.5

UTC = dt.UTC
# (value, the SQL type it is sent as): a cast in the query, as an application would write it.
TYPED_PARAMS: tuple[tuple[object, str], ...] = (
    (42, "int4"),
    (-(2**62), "int8"),
    (Decimal("12345678901234567890.123456789"), "numeric"),
    (Decimal("-0.000000001"), "numeric"),
    (Decimal("Infinity"), "numeric"),
    (2.5, "float8"),
    (True, "bool"),
    ("it's a \"quoted\" \\ back\\slash; DROP TABLE x; --", "text"),
    ("unicode: żółw, 漢字, Ελληνικά, 🐘", "text"),
    ("", "text"),
    (b"\x00\x01\x02\xff binary \\x00 'quote'", "bytea"),
    (dt.datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=UTC), "timestamptz"),
    (dt.datetime(1999, 12, 31, 20, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))), "timestamptz"),
    (dt.datetime(2001, 2, 3, 4, 5, 6), "timestamp"),
    (dt.date(1970, 1, 1), "date"),
    (dt.time(13, 14, 15, 999999), "time"),
    (dt.timedelta(days=3, hours=4, microseconds=5), "interval"),
    (uuid.UUID("12345678-1234-5678-1234-567812345678"), "uuid"),
    (Jsonb({"a": [1, 2, {"b": None}], "é": "ü", "n": 1.5}), "jsonb"),
    (Json(["x", 1, True, None]), "json"),
    ([1, 2, 3], "int4[]"),
    (["a", None, "c'd", "e\"f"], "text[]"),
    ([[1, 2], [3, 4]], "int8[]"),
    (None, "text"),
)
PARAMS = tuple(value for value, _ in TYPED_PARAMS)


def unwrap(value: object) -> object:
    """What a parameter is expected to come back as."""
    if isinstance(value, Json | Jsonb):
        return value.obj
    return value


@pytest.fixture
def both(proxy: ProxyProcess, pg_server: ThrowawayPostgres) -> dict[str, str]:
    """The DSN of the same database through the proxy and directly."""
    return {"proxy": proxy.dsn("copilot"), "direct": pg_server.dsn()}


def run_both(both: dict[str, str], scenario: Callable[[psycopg.Connection[Any]], T],
             **connect: Any) -> tuple[T, T]:
    """Run a scenario on a fresh connection through the proxy and on one made directly."""
    results: dict[str, T] = {}
    for where, dsn in both.items():
        with psycopg.connect(dsn, **connect) as conn:
            results[where] = scenario(conn)
    return results["proxy"], results["direct"]


def select_params(marker: str = "%s") -> str:
    """SELECT %s::int4, %s::int8, … for TYPED_PARAMS."""
    return "SELECT " + ", ".join(f"{marker}::{pgtype}" for _, pgtype in TYPED_PARAMS)


# ----------------------------------------------------------------------------- parameters


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_parameters_of_many_types_round_trip(both: dict[str, str], binary: bool) -> None:
    marker = "%b" if binary else "%s"
    query = select_params(marker)

    def scenario(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
        row = conn.cursor(binary=binary).execute(query, PARAMS).fetchone()
        assert row is not None
        return tuple(row)

    through_proxy, direct = run_both(both, scenario)
    assert through_proxy == direct
    assert list(through_proxy) == [unwrap(value) for value in PARAMS]


def test_binary_results_equal_text_results(both: dict[str, str]) -> None:
    query = """
        SELECT c.id, c.full_name, c.birth_date, c.created_at, o.total, o.status,
               ARRAY[o.id, o.customer_id] AS ids, jsonb_build_object('id', o.id) AS doc,
               (o.total * 1.5)::numeric(14,3) AS scaled, o.id % 3 = 0 AS third,
               NULL::text AS nothing
        FROM customers c JOIN orders o ON o.customer_id = c.id
        ORDER BY o.id
    """

    def scenario(conn: psycopg.Connection[Any]) -> tuple[list[Any], list[Any], list[str]]:
        text_rows = conn.cursor().execute(query).fetchall()
        cur = conn.cursor(binary=True)
        binary_rows = cur.execute(query).fetchall()
        assert cur.pgresult is not None
        formats = [cur.pgresult.fformat(i) for i in range(cur.pgresult.nfields)]
        return text_rows, binary_rows, [str(f) for f in formats]

    (text_rows, binary_rows, formats), direct = run_both(both, scenario)
    assert len(text_rows) == 200
    assert binary_rows == text_rows
    assert set(formats) == {"1"}  # the server really answered in binary
    assert (text_rows, binary_rows, formats) == direct


def test_typed_columns_insert_and_select(both: dict[str, str]) -> None:
    row = (7, Decimal("99.95"), "O'Brien — ünïcode", b"\xde\xad\xbe\xef",
           dt.datetime(2023, 6, 1, 12, 0, tzinfo=UTC), Jsonb({"k": ["v", 1]}), [1.5, -2.25], None)

    def scenario(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
        conn.execute("""CREATE TEMP TABLE typed (id int PRIMARY KEY, price numeric(10,2),
                        name text, blob bytea, at timestamptz, doc jsonb, xs float8[], note text)""")
        conn.execute("INSERT INTO typed VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", row)
        conn.execute("INSERT INTO typed VALUES (%b, %b, %b, %b, %b, %b, %b, %b)",
                     (8, *row[1:]))
        return conn.execute("SELECT * FROM typed ORDER BY id").fetchall()

    through_proxy, direct = run_both(both, scenario)
    expected_tail = (row[1], row[2], row[3], row[4], {"k": ["v", 1]}, row[6], None)
    assert through_proxy == [(7, *expected_tail), (8, *expected_tail)]
    assert through_proxy == direct


def test_executemany(both: dict[str, str]) -> None:
    rows = [(i, f"name {i} ' \" \\", Decimal(i) / 7) for i in range(1, 501)]

    def scenario(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
        conn.execute("CREATE TEMP TABLE many (id int PRIMARY KEY, name text, v numeric)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO many VALUES (%s, %s, %s)", rows)
            cur.executemany("UPDATE many SET name = name || '!' WHERE id = %s",
                            [(i,) for i in range(1, 501, 5)])
            result = cur.execute(
                "SELECT count(*), sum(id), count(*) FILTER (WHERE name LIKE '%!'),"
                " min(name), max(v) FROM many").fetchone()
        assert result is not None
        return tuple(result)

    through_proxy, direct = run_both(both, scenario)
    assert through_proxy[:3] == (500, sum(range(1, 501)), 100)
    assert through_proxy == direct


def test_executemany_returning(both: dict[str, str]) -> None:
    def scenario(conn: psycopg.Connection[Any]) -> list[Any]:
        conn.execute("CREATE TEMP TABLE ret (id serial PRIMARY KEY, name text)")
        cur = conn.cursor()
        cur.executemany("INSERT INTO ret (name) VALUES (%s) RETURNING id, upper(name)",
                        [(f"n{i}",) for i in range(20)], returning=True)
        results = []
        while True:
            results.extend(cur.fetchall())
            if not cur.nextset():
                break
        return results

    through_proxy, direct = run_both(both, scenario)
    assert through_proxy == [(i + 1, f"N{i}") for i in range(20)]
    assert through_proxy == direct


# ----------------------------------------------------------------------------- cursors


def test_named_cursor_fetches_in_batches(both: dict[str, str]) -> None:
    query = "SELECT g, md5(g::text), g::numeric / 3 FROM generate_series(1, 2500) g ORDER BY g"

    def scenario(conn: psycopg.Connection[Any]) -> tuple[list[int], list[Any], list[Any]]:
        batches: list[int] = []
        rows: list[Any] = []
        with conn.transaction(), conn.cursor(name="batchy") as cur:
            cur.itersize = 100
            cur.execute(query)
            open_cursors = conn.execute("SELECT name FROM pg_cursors").fetchall()
            while chunk := cur.fetchmany(400):
                batches.append(len(chunk))
                rows.extend(chunk)
        return batches, rows, open_cursors

    (batches, rows, open_cursors), direct = run_both(both, scenario)
    assert batches == [400] * 6 + [100]
    assert [r[0] for r in rows] == list(range(1, 2501))
    assert open_cursors == [("batchy",)]  # a real server-side cursor
    assert (batches, rows, open_cursors) == direct


def test_named_cursor_iteration_scroll_and_hold(both: dict[str, str]) -> None:
    def scenario(conn: psycopg.Connection[Any]) -> tuple[list[Any], Any, list[Any]]:
        with conn.cursor(name="scrolly", scrollable=True, withhold=True) as cur:
            cur.itersize = 7
            cur.execute("SELECT id, email FROM customers ORDER BY id")
            conn.commit()  # WITH HOLD: the cursor survives the commit
            first = [row for _, row in zip(range(30), cur, strict=False)]
            cur.scroll(2, mode="absolute")
            third = cur.fetchone()
            rest = cur.fetchall()
        return first, third, rest

    (first, third, rest), direct = run_both(both, scenario)
    assert [r[0] for r in first] == list(range(1, 31))
    assert third is not None
    assert third[0] == 3
    assert [r[0] for r in rest] == list(range(4, 51))
    assert (first, third, rest) == direct


# ----------------------------------------------------------------------------- COPY

COPY_ROWS = [
    (i, f"row {i}\twith tab\nnewline \\ backslash 'q' \"dq\" ünï 🐘" if i % 7 else None,
     bytes([i % 256, 0, 255]), Decimal(i) / 4, dt.datetime(2020, 1, 1, tzinfo=UTC)
     + dt.timedelta(minutes=i))
    for i in range(1, 5001)
]


def test_copy_from_stdin_and_to_stdout(both: dict[str, str]) -> None:
    def scenario(conn: psycopg.Connection[Any]) -> tuple[bytes, bytes, list[Any], Any]:
        conn.execute("""CREATE TEMP TABLE copied (id int PRIMARY KEY, body text, blob bytea,
                        v numeric, at timestamptz)""")
        cur = conn.cursor()
        with cur.copy("COPY copied (id, body, blob, v, at) FROM STDIN") as copy:
            for row in COPY_ROWS:
                copy.write_row(row)
        loaded = cur.rowcount
        text_out = bytearray()
        with cur.copy("COPY (SELECT * FROM copied ORDER BY id) TO STDOUT") as copy:
            for data in copy:
                text_out += data
        binary_out = bytearray()
        with cur.copy("COPY (SELECT * FROM copied ORDER BY id) TO STDOUT (FORMAT BINARY)") as copy:
            for data in copy:
                binary_out += data
        with cur.copy("COPY (SELECT * FROM copied ORDER BY id) TO STDOUT") as copy:
            copy.set_types(["int4", "text", "bytea", "numeric", "timestamptz"])
            rows = list(copy.rows())
        stats = cur.execute("SELECT count(*), sum(id), count(body) FROM copied").fetchone()
        return bytes(text_out), bytes(binary_out), rows, (loaded, stats)

    (text_out, binary_out, rows, stats), direct = run_both(both, scenario)
    assert stats == (5000, (5000, sum(range(1, 5001)), 5000 - 5000 // 7))
    assert rows == COPY_ROWS
    assert text_out.count(b"\n") == 5000
    assert binary_out.startswith(b"PGCOPY\n\xff\r\n\x00")
    assert (text_out, binary_out, rows, stats) == direct


def test_copy_binary_from_stdin(both: dict[str, str]) -> None:
    def scenario(conn: psycopg.Connection[Any]) -> list[Any]:
        conn.execute("CREATE TEMP TABLE bcopy (id int, body text, blob bytea, v numeric, "
                     "at timestamptz)")
        cur = conn.cursor()
        with cur.copy("COPY bcopy FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "text", "bytea", "numeric", "timestamptz"])
            for row in COPY_ROWS[:1000]:
                copy.write_row(row)
        return cur.execute("SELECT * FROM bcopy ORDER BY id").fetchall()

    through_proxy, direct = run_both(both, scenario)
    assert through_proxy == COPY_ROWS[:1000]
    assert through_proxy == direct


def test_copy_errors_leave_the_connection_usable(both: dict[str, str]) -> None:
    class Abandon(Exception):
        pass

    def scenario(conn: psycopg.Connection[Any]) -> list[Any]:
        conn.autocommit = True
        conn.execute("CREATE TEMP TABLE strict_copy (id int PRIMARY KEY)")
        cur = conn.cursor()
        outcomes: list[Any] = []
        # The server rejects a row in the middle of the stream.
        try:
            with cur.copy("COPY strict_copy FROM STDIN") as copy:
                for value in ("1", "2", "not a number", "4"):
                    copy.write_row((value,))
        except errors.InvalidTextRepresentation as exc:
            outcomes.append(("server error", exc.sqlstate))
        outcomes.append(cur.execute("SELECT count(*) FROM strict_copy").fetchone())
        # The client gives up (CopyFail).
        try:
            with cur.copy("COPY strict_copy FROM STDIN") as copy:
                copy.write_row((10,))
                raise Abandon
        except Abandon:
            outcomes.append("client abandoned")
        outcomes.append(conn.info.transaction_status.name)
        outcomes.append(cur.execute("SELECT count(*) FROM strict_copy").fetchone())
        with cur.copy("COPY strict_copy FROM STDIN") as copy:
            copy.write_row((99,))
        outcomes.append(cur.execute("SELECT array_agg(id) FROM strict_copy").fetchone())
        return outcomes

    through_proxy, direct = run_both(both, scenario)
    assert through_proxy == [("server error", "22P02"), (0,), "client abandoned", "IDLE", (0,),
                             ([99],)]
    assert through_proxy == direct


# ----------------------------------------------------------------------------- pipeline


def test_pipeline_results_in_order(both: dict[str, str]) -> None:
    def scenario(conn: psycopg.Connection[Any]) -> list[Any]:
        conn.autocommit = True
        with conn.pipeline():
            conn.execute("CREATE TEMP TABLE piped (id int PRIMARY KEY, square int)")
            inserts = [conn.execute("INSERT INTO piped VALUES (%s, %s) RETURNING id",
                                    (i, i * i)) for i in range(200)]
            selects = [conn.execute("SELECT %s::text || '-' || square FROM piped WHERE id = %s",
                                    (f"q{i}", i)) for i in range(200)]
            total = conn.execute("SELECT count(*), sum(square) FROM piped")
        return ([c.fetchone() for c in inserts] + [c.fetchone() for c in selects]
                + [total.fetchone()])

    through_proxy, direct = run_both(both, scenario)
    assert through_proxy[:200] == [(i,) for i in range(200)]
    assert through_proxy[200:400] == [(f"q{i}-{i * i}",) for i in range(200)]
    assert through_proxy[400] == (200, sum(i * i for i in range(200)))
    assert through_proxy == direct


def test_pipeline_with_an_error(both: dict[str, str]) -> None:
    def scenario(conn: psycopg.Connection[Any]) -> list[Any]:
        conn.autocommit = True
        conn.execute("CREATE TEMP TABLE pipe_err (id int PRIMARY KEY)")
        outcomes: list[Any] = []
        try:
            with conn.pipeline() as pipeline:
                for i in range(10):
                    conn.execute("INSERT INTO pipe_err VALUES (%s)", (i,))
                pipeline.sync()  # the first ten form their own transaction
                conn.execute("INSERT INTO pipe_err VALUES (100)")
                conn.execute("SELECT 1 / 0")
                conn.execute("INSERT INTO pipe_err VALUES (101)")
                pipeline.sync()
        except errors.DivisionByZero as exc:
            outcomes.append(("raised", exc.sqlstate))
        outcomes.append(conn.info.transaction_status.name)
        outcomes.append(conn.execute("SELECT array_agg(id ORDER BY id) FROM pipe_err").fetchone())
        # A pipeline after the failed one works normally.
        with conn.pipeline():
            later = [conn.execute("SELECT %s::int * 10", (i,)) for i in range(5)]
        outcomes.append([c.fetchone() for c in later])
        return outcomes

    through_proxy, direct = run_both(both, scenario)
    assert through_proxy == [("raised", "22012"), "IDLE", (list(range(10)),),
                             [(i * 10,) for i in range(5)]]
    assert through_proxy == direct


# ----------------------------------------------------------------------------- prepared


def test_prepared_statements_are_reused(both: dict[str, str]) -> None:
    query = "SELECT %s::int * 2, %s::text || '!' /* prepared-check */"

    def scenario(conn: psycopg.Connection[Any]) -> tuple[list[Any], Any, list[Any]]:
        results = [conn.execute(query, (i, f"v{i}"), prepare=True).fetchone() for i in range(12)]
        prepared = conn.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            ("%prepared-check%",)).fetchone()
        # Automatic preparation after prepare_threshold executions, binary too.
        cur = conn.cursor(binary=True)
        auto = [cur.execute("SELECT %s::bigint + 1", (i,)).fetchone() for i in range(8)]
        return results, prepared, auto

    (results, prepared, auto), direct = run_both(both, scenario)
    assert results == [(i * 2, f"v{i}!") for i in range(12)]
    assert prepared == (1,)  # one server-side statement, executed twelve times
    assert auto == [(i + 1,) for i in range(8)]
    assert (results, prepared, auto) == direct


# ----------------------------------------------------------------------------- notifications


def test_listen_notify_between_two_proxied_connections(proxy: ProxyProcess) -> None:
    channel = f"chan_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(proxy.dsn("copilot"), autocommit=True) as listener, \
            psycopg.connect(proxy.dsn("alice"), autocommit=True) as notifier:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        notifier.execute("SELECT pg_notify(%s, %s)", (channel, "first ünïcode 🐘"))
        received = list(listener.notifies(timeout=5, stop_after=1))
        with notifier.transaction():
            notifier.execute("SELECT pg_notify(%s, %s)", (channel, "second"))
            notifier.execute("SELECT pg_notify(%s, %s)", (channel, "third"))
            # Nothing is delivered before the commit.
            assert list(listener.notifies(timeout=0.3, stop_after=1)) == []
        received += list(listener.notifies(timeout=5, stop_after=2))
        assert [(n.channel, n.payload) for n in received] == [
            (channel, "first ünïcode 🐘"), (channel, "second"), (channel, "third")]
        # The listener keeps working as a normal connection.
        assert listener.execute("SELECT 1").fetchone() == (1,)


def test_notification_pid_identifies_the_sender(
        proxy: ProxyProcess, pg_server: ThrowawayPostgres) -> None:
    """A client filtering its own notifications compares Notify.pid with its backend pid."""
    for dsn in (pg_server.dsn(), proxy.dsn("copilot")):
        channel = f"self_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(dsn, autocommit=True) as listener, \
                psycopg.connect(dsn, autocommit=True) as notifier:
            listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            notifier.execute("SELECT pg_notify(%s, 'x')", (channel,))
            received = list(listener.notifies(timeout=5, stop_after=1))
            assert len(received) == 1
            server_pid = notifier.execute("SELECT pg_backend_pid()").fetchone()
            assert server_pid == (received[0].pid,)
            assert received[0].pid == notifier.info.backend_pid, (
                f"via {dsn.split('@')[1]}: the notification says it came from pid "
                f"{received[0].pid}, the sender was told its pid is {notifier.info.backend_pid}")


# ----------------------------------------------------------------------------- transactions


def test_transactions_and_savepoints(both: dict[str, str]) -> None:
    def scenario(conn: psycopg.Connection[Any]) -> list[Any]:
        conn.autocommit = True
        conn.execute("CREATE TEMP TABLE tx (id int PRIMARY KEY)")
        states: list[Any] = []
        with conn.transaction():
            conn.execute("INSERT INTO tx VALUES (1)")
            states.append(conn.info.transaction_status.name)
            try:
                with conn.transaction():  # a savepoint
                    conn.execute("INSERT INTO tx VALUES (2)")
                    conn.execute("INSERT INTO tx VALUES (1)")  # duplicate key
            except errors.UniqueViolation as exc:
                states.append(exc.sqlstate)
            states.append(conn.info.transaction_status.name)
            conn.execute("INSERT INTO tx VALUES (3)")
        with conn.transaction(force_rollback=True):
            conn.execute("INSERT INTO tx VALUES (4)")
        # The same by hand, with an error that aborts the transaction.
        conn.execute("BEGIN")
        conn.execute("INSERT INTO tx VALUES (5)")
        conn.execute("SAVEPOINT sp")
        try:
            conn.execute("SELECT 1 / 0")
        except errors.DivisionByZero:
            states.append(conn.info.transaction_status.name)
        try:
            conn.execute("SELECT 1")
        except errors.InFailedSqlTransaction as exc:
            states.append(exc.sqlstate)
        conn.execute("ROLLBACK TO SAVEPOINT sp")
        conn.execute("INSERT INTO tx VALUES (6)")
        conn.execute("COMMIT")
        states.append(conn.info.transaction_status.name)
        states.append(conn.execute("SELECT array_agg(id ORDER BY id) FROM tx").fetchone())
        return states

    through_proxy, direct = run_both(both, scenario)
    assert through_proxy == ["INTRANS", "23505", "INTRANS", "INERROR", "25P02", "IDLE",
                             ([1, 3, 5, 6],)]
    assert through_proxy == direct


def test_rolled_back_work_is_not_visible(proxy: ProxyProcess, pg_server: ThrowawayPostgres) -> None:
    table = f"psycopg_rb_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as direct:
        direct.execute(sql.SQL("CREATE TABLE {} (id int)").format(sql.Identifier(table)))
        try:
            with psycopg.connect(proxy.dsn("copilot")) as conn:
                conn.execute(sql.SQL("INSERT INTO {} VALUES (1)").format(sql.Identifier(table)))
                conn.rollback()
                conn.execute(sql.SQL("INSERT INTO {} VALUES (2)").format(sql.Identifier(table)))
                conn.commit()
            rows = direct.execute(sql.SQL("SELECT id FROM {}").format(sql.Identifier(table)))
            assert rows.fetchall() == [(2,)]
        finally:
            direct.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))


# ----------------------------------------------------------------------------- session


def outcome(action: Callable[[], object]) -> object:
    """The action's value, or the error a user would see (class, SQLSTATE, first line)."""
    try:
        return action()
    except psycopg.Error as exc:
        return type(exc).__name__, exc.sqlstate, str(exc).splitlines()[0]


def test_session_details(both: dict[str, str]) -> None:
    def scenario(conn: psycopg.Connection[Any]) -> list[Any]:
        conn.autocommit = True
        notices: list[tuple[Any, ...]] = []
        conn.add_notice_handler(
            lambda d: notices.append((d.severity, d.sqlstate, d.message_primary, d.message_hint)))
        out: list[Any] = []
        # Empty and comment-only statements, simple and extended protocol.
        def status(query: str, params: tuple[()] | None) -> object:
            return outcome(lambda: conn.execute(query, params).statusmessage)

        for text in ("", "-- only a comment", ";", "/* c */ ;"):
            out += [status(text, None), status(text, ())]
        conn.execute("DO $$ BEGIN RAISE NOTICE 'hello %', 1 USING HINT = 'a hint'; "
                     "RAISE WARNING 'careful'; END $$")
        # ParameterStatus updates reach the client.
        conn.execute("SET application_name = 'renamed by SET'")
        out.append(conn.info.parameter_status("application_name"))
        conn.execute("SET TIME ZONE 'Asia/Tokyo'")
        out.append(str(conn.info.timezone))
        out.append(conn.execute("SELECT timestamptz '2020-01-01 00:00+00'").fetchone())
        out.append(conn.info.parameter_status("TimeZone"))
        conn.execute("SET statement_timeout = '100ms'")
        out.append(outcome(lambda: conn.execute("SELECT pg_sleep(2)")))
        conn.execute("RESET statement_timeout")
        out.append(list(conn.cursor().stream("SELECT g FROM generate_series(1, 5) g")))
        out.append(notices)
        return out

    through_proxy, direct = run_both(both, scenario)
    assert through_proxy[:8] == [None] * 8  # an empty query has no status, and no error
    assert through_proxy[8:] == [
        "renamed by SET", "Asia/Tokyo",
        (dt.datetime(2020, 1, 1, 9, tzinfo=dt.timezone(dt.timedelta(hours=9))),), "Asia/Tokyo",
        ("QueryCanceled", "57014", "canceling statement due to statement timeout"),
        [(g,) for g in range(1, 6)],
        [("NOTICE", "00000", "hello 1", "a hint"), ("WARNING", "01000", "careful", None)],
    ]
    assert through_proxy == direct


def test_startup_parameters_reach_the_server(both: dict[str, str]) -> None:
    def scenario(conn: psycopg.Connection[Any]) -> Any:
        return conn.execute("SELECT current_setting('search_path'), "
                            "current_setting('application_name'), "
                            "current_setting('statement_timeout'), "
                            "current_setting('DateStyle')").fetchone()

    through_proxy, direct = run_both(
        both, scenario, application_name="compat-app",
        options="-c search_path=scratch,public -c statement_timeout=1234 -c DateStyle=SQL,DMY")
    assert through_proxy == ("scratch,public", "compat-app", "1234ms", "SQL, DMY")
    assert through_proxy == direct


def test_newer_protocol_request_falls_back_to_3_0(both: dict[str, str]) -> None:
    """libpq 18 may ask for protocol 3.2; a 3.0 server answers NegotiateProtocolVersion."""

    def scenario(conn: psycopg.Connection[Any]) -> Any:
        return conn.info.pgconn.protocol_version, conn.execute("SELECT 'negotiated'").fetchone()

    through_proxy, direct = run_both(both, scenario, max_protocol_version="3.2")
    assert through_proxy == (3, ("negotiated",))
    assert through_proxy == direct


def test_negotiate_protocol_version_bytes(proxy: ProxyProcess,
                                          pg_server: ThrowawayPostgres) -> None:
    """The NegotiateProtocolVersion message itself, as PostgreSQL sends it: the newest version
    it supports (3.0 = 0x00030000) and the startup options it did not recognise."""
    answers = {}
    for where, port, user in (("proxy", proxy.port, "copilot"),
                              ("direct", pg_server.port, pg_server.app_user)):
        params = f"user\0{user}\0database\0app\0_pq_.made_up_option\0on\0\0".encode()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(struct.pack("!ii", 8 + len(params), (3 << 16) | 2) + params)
            header = sock.recv(5, socket.MSG_WAITALL)
            body = sock.recv(struct.unpack("!i", header[1:])[0] - 4, socket.MSG_WAITALL)
        answers[where] = header + body
    expected_body = struct.pack("!ii", 3 << 16, 1) + b"_pq_.made_up_option\x00"
    assert answers["direct"] == b"v" + struct.pack("!i", 4 + len(expected_body)) + expected_body
    assert answers["proxy"] == answers["direct"]


def test_large_values_and_results(both: dict[str, str]) -> None:
    blob = bytes(range(256)) * 20_000  # ~5 MB
    document = "ü🐘" * 1_000_000

    def scenario(conn: psycopg.Connection[Any]) -> list[Any]:
        out: list[Any] = []
        out.append(conn.execute("SELECT %b::bytea = %b::bytea, length(%s::bytea)",
                                (blob, blob, blob)).fetchone())
        out.append(conn.execute("SELECT %s::bytea", (blob,), binary=True).fetchone() == (blob,))
        out.append(conn.execute("SELECT %s::text", (document,)).fetchone() == (document,))
        rows = conn.execute("SELECT g, md5(g::text) FROM generate_series(1, 200000) g").fetchall()
        out.append((len(rows), rows[-1]))
        return out

    through_proxy, direct = run_both(both, scenario)
    assert through_proxy == [(True, len(blob)), True, True,
                             (200000, (200000, "03e6c61603f6c550ab49ab6a2d83f793"))]
    assert through_proxy == direct


def test_terminated_backend_is_reported(both: dict[str, str]) -> None:
    def scenario(conn: psycopg.Connection[Any]) -> list[Any]:
        conn.autocommit = True
        return [outcome(lambda: conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")),
                conn.closed, outcome(lambda: conn.execute("SELECT 1"))]

    through_proxy, direct = run_both(both, scenario)
    assert through_proxy == [
        ("AdminShutdown", "57P01", "terminating connection due to administrator command"),
        True, ("OperationalError", None, "the connection is closed")]
    assert through_proxy == direct


# ----------------------------------------------------------------------------- cancel


@pytest.mark.parametrize("method", ["cancel", "cancel_safe"])
def test_cancel_a_running_query(proxy: ProxyProcess, pg_server: ThrowawayPostgres,
                                method: str) -> None:
    marker = f"cancel_me_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(proxy.dsn("copilot"), autocommit=True) as conn:
        timer = threading.Timer(0.5, getattr(conn, method))
        started = time.monotonic()
        timer.start()
        try:
            with pytest.raises(errors.QueryCanceled):
                conn.execute(f"SELECT pg_sleep({SLEEP_SECONDS}) /* {marker} */")
        finally:
            timer.join()
        assert time.monotonic() - started < CANCEL_DEADLINE
        assert conn.execute("SELECT 'still usable'").fetchone() == ("still usable",)
    with psycopg.connect(pg_server.superuser_dsn(), autocommit=True) as su:
        running = su.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s "
                             "AND pid <> pg_backend_pid()", (f"%{marker}%",)).fetchone()
        assert running == (0,)  # the server-side query really stopped


def test_cancel_inside_a_transaction(proxy: ProxyProcess) -> None:
    with psycopg.connect(proxy.dsn("copilot")) as conn:
        conn.execute("CREATE TEMP TABLE canc (id int)")
        conn.execute("INSERT INTO canc VALUES (1)")
        timer = threading.Timer(0.3, conn.cancel_safe)
        timer.start()
        try:
            with pytest.raises(errors.QueryCanceled):
                conn.execute(f"SELECT pg_sleep({SLEEP_SECONDS})")
        finally:
            timer.join()
        assert conn.info.transaction_status.name == "INERROR"
        conn.rollback()
        assert conn.execute("SELECT to_regclass('pg_temp.canc') IS NULL").fetchone() == (True,)


# ----------------------------------------------------------------------------- async


def run_async_both(both: dict[str, str],
                   scenario: Callable[[psycopg.AsyncConnection[Any]], Any]) -> tuple[Any, Any]:
    async def main() -> tuple[Any, Any]:
        results = {}
        for where, dsn in both.items():
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                results[where] = await scenario(conn)
        return results["proxy"], results["direct"]

    return asyncio.run(main())


def test_async_parameters_pipeline_and_copy(both: dict[str, str]) -> None:
    query = select_params()

    async def scenario(conn: psycopg.AsyncConnection[Any]) -> list[Any]:
        out: list[Any] = []
        cur = await conn.execute(query, PARAMS)
        out.append(await cur.fetchone())
        await conn.execute("CREATE TEMP TABLE acopy (id int, body text)")
        async with conn.cursor() as acur:
            async with acur.copy("COPY acopy FROM STDIN") as copy:
                for i in range(3000):
                    await copy.write_row((i, f"body {i} 'ü'\t"))
            data = bytearray()
            async with acur.copy("COPY (SELECT * FROM acopy ORDER BY id) TO STDOUT") as copy:
                async for chunk in copy:
                    data += chunk
            out.append(bytes(data))
            await acur.executemany("INSERT INTO acopy VALUES (%s, %s)",
                                   [(i, None) for i in range(3000, 3100)])
        async with conn.pipeline():
            cursors = [await conn.execute("SELECT count(*) + %s FROM acopy", (i,))
                       for i in range(50)]
        out.append([await c.fetchone() for c in cursors])
        async with conn.transaction(), conn.cursor(name="acur") as named:
            await named.execute("SELECT g FROM generate_series(1, 1000) g")
            out.append([len(await named.fetchmany(300)) for _ in range(4)])
        return out

    through_proxy, direct = run_async_both(both, scenario)
    assert list(through_proxy[0]) == [unwrap(v) for v in PARAMS]
    assert through_proxy[1].count(b"\n") == 3000
    assert through_proxy[2] == [(3100 + i,) for i in range(50)]
    assert through_proxy[3] == [300, 300, 300, 100]
    assert through_proxy == direct


def test_async_transactions_and_savepoints(both: dict[str, str]) -> None:
    async def scenario(conn: psycopg.AsyncConnection[Any]) -> Any:
        await conn.execute("CREATE TEMP TABLE atx (id int PRIMARY KEY)")
        async with conn.transaction():
            await conn.execute("INSERT INTO atx VALUES (1)")
            try:
                async with conn.transaction():
                    await conn.execute("INSERT INTO atx VALUES (2)")
                    await conn.execute("SELECT 1 / 0")
            except errors.DivisionByZero:
                pass
            await conn.execute("INSERT INTO atx VALUES (3)")
        cur = await conn.execute("SELECT array_agg(id ORDER BY id) FROM atx")
        return await cur.fetchone()

    through_proxy, direct = run_async_both(both, scenario)
    assert through_proxy == ([1, 3],)
    assert through_proxy == direct


def test_async_cancel_and_notify(proxy: ProxyProcess) -> None:
    channel = f"achan_{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        dsn = proxy.dsn("copilot")
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn, \
                await psycopg.AsyncConnection.connect(dsn, autocommit=True) as other:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            await other.execute("SELECT pg_notify(%s, 'async hello')", (channel,))
            received = [n async for n in conn.notifies(timeout=5, stop_after=1)]
            assert [(n.channel, n.payload) for n in received] == [(channel, "async hello")]

            async def cancel_soon() -> None:
                await asyncio.sleep(0.4)
                await conn.cancel_safe()

            started = time.monotonic()
            task = asyncio.create_task(cancel_soon())
            with pytest.raises(errors.QueryCanceled):
                await conn.execute(f"SELECT pg_sleep({SLEEP_SECONDS})")
            await task
            assert time.monotonic() - started < CANCEL_DEADLINE
            cur = await conn.execute("SELECT 'alive'")
            assert await cur.fetchone() == ("alive",)

    asyncio.run(main())
