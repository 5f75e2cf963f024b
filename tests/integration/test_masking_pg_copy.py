"""COPY TO STDOUT through the masking proxy, with real clients and a real server.

Covers: `COPY table` and `COPY (query)` in text and CSV format coming back masked exactly as
SELECT masks (same strategies, lineage through expressions and views, content detectors);
custom DELIMITER / NULL / QUOTE / ESCAPE / FORCE_QUOTE / HEADER, values full of tabs, newlines,
quotes, backslashes and commas, and NULLs, checked by loading the masked copy back with
PostgreSQL's own COPY FROM; the rewriter's escaping against the server's own output; an exempt
identity seeing the raw copy; binary COPY refused with 42501 and the session going on; psql's
`\\copy`; asyncpg's copy; the journal's counts; and a leak test over every COPY form.
"""

from __future__ import annotations

import asyncio
import datetime
import glob
import io
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import errors

from dbguard.devdb.postgres import ThrowawayPostgres
from dbguard.session.pg_copy_masking import CopyColumn, CopyRowRewriter, copy_statement
from tests.integration import journal_sessions as js
from tests.integration.harness import ProxyFactory, ProxyProcess
from tests.integration.leak_tap import Tap, leaked_forms
from tests.integration.pg_masking_setup import copy_out, direct, query, seeded_pii, start_masking_proxy

# Values that exercise every escaping rule of both formats; the masked `ssn` keeps its last
# four characters (`partial`), so the specials at the end reach the client through a mask.
TRICKY = [
    "tab\there", "new\nline", "cr\rhere", 'quote"d', "back\\slash", "comma,semi;pipe|", "\\N", "NIL", "",
    "'single'", "\\.", "ünïcödé 表", "end\\", "abcd\t,\"\n", "abcde\\\r|", "abcdef\\N", "xx'|;,",
    "card 4111 1111 1111 1111 here",
]


def direct_copy(pg_server: ThrowawayPostgres, sql: str) -> bytes:
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        return copy_out(conn, sql)


def proxy_copy(proxy: ProxyProcess, sql: str, identity: str = "copilot") -> bytes:
    with psycopg.connect(proxy.dsn(identity), autocommit=True) as conn:
        return copy_out(conn, sql)


def load_back(pg_server: ThrowawayPostgres, data: bytes, columns: str, options: str) -> list[tuple[object, ...]]:
    """What PostgreSQL's own COPY FROM reads from `data` (into a temporary table), with the
    options it was written with (FORCE_QUOTE is for COPY TO only)."""
    options = re.sub(r", FORCE_QUOTE (\*|\(\w+\))", "", options)
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE TEMP TABLE back ({columns})")
        with conn.cursor().copy(f"COPY back FROM STDIN WITH ({options})") as copy:
            copy.write(data)
        return conn.execute("SELECT * FROM back ORDER BY 1").fetchall()


@pytest.fixture
def masking_proxy(pg_server: ThrowawayPostgres, proxy_factory: ProxyFactory, tmp_path: Path) -> ProxyProcess:
    return start_masking_proxy(pg_server, proxy_factory, tmp_path)


@pytest.fixture(scope="module")
def pii(pg_server: ThrowawayPostgres) -> list[str]:
    return seeded_pii(pg_server)


@pytest.fixture(scope="module")
def tricky(pg_server: ThrowawayPostgres) -> Iterator[str]:
    """scratch.copy_tricky (id, ssn varchar(40), note text): the TRICKY values in both text
    columns, and a row of NULLs; dropped at the end."""
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE scratch.copy_tricky (id int PRIMARY KEY, ssn varchar(40), note text)")
        with conn.cursor() as cursor:
            cursor.executemany("INSERT INTO scratch.copy_tricky VALUES (%s, %s, %s)",
                               [(i, value, value) for i, value in enumerate(TRICKY, start=1)])
        conn.execute("INSERT INTO scratch.copy_tricky VALUES (0, NULL, NULL)")
    try:
        yield "scratch.copy_tricky"
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute("DROP TABLE scratch.copy_tricky")


def rows_of(data: bytes, delimiter: bytes = b"\t") -> list[list[bytes]]:
    return sorted((line.split(delimiter) for line in data.splitlines()), key=lambda r: int(r[0]))


# ---------------------------------------------------------------------------- tables and queries


def test_copy_table_is_masked_like_select(masking_proxy: ProxyProcess, pg_server: ThrowawayPostgres) -> None:
    masked = rows_of(proxy_copy(masking_proxy, "COPY customers TO STDOUT"))
    raw = rows_of(direct_copy(pg_server, "COPY customers TO STDOUT"))
    selected = query(masking_proxy, "SELECT email, ssn, birth_date FROM customers ORDER BY id")
    assert len(masked) == len(raw) == len(selected) == 50
    for row, real, (email, ssn, birth) in zip(masked, raw, selected, strict=True):
        # id, full_name, phone, created_at: untouched
        assert [row[i] for i in (0, 1, 3, 6)] == [real[i] for i in (0, 1, 3, 6)]
        assert row[2].decode() == email == "****@" + real[2].decode().split("@")[1]
        assert row[4].decode() == ssn
        assert row[4] != real[4]
        assert row[4].endswith(real[4][-4:])
        assert row[5].decode() == str(birth)  # hashed, as a valid date, as SELECT hashes it
        assert row[5] != real[5]


def test_copy_of_a_column_list_and_of_unmasked_columns(masking_proxy: ProxyProcess,
                                                       pg_server: ThrowawayPostgres) -> None:
    sql = "COPY public.customers (id, email) TO STDOUT WITH (FORMAT csv)"
    masked = rows_of(proxy_copy(masking_proxy, sql), b",")
    assert all(email.startswith(b"****@") for _id, email in masked)
    plain = "COPY products TO STDOUT"
    assert proxy_copy(masking_proxy, plain) == direct_copy(pg_server, plain)


@pytest.fixture
def typed(pg_server: ThrowawayPostgres) -> Iterator[str]:
    """scratch.copy_typed: a generated column (COPY leaves it out) before an `ssn` whose type
    is a domain over date, and a bpchar(6) one; dropped at the end."""
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE DOMAIN scratch.day AS date")
        conn.execute("CREATE TABLE scratch.copy_typed (id int, twice int GENERATED ALWAYS AS (id * 2) STORED, "
                     "ssn scratch.day, code char(6))")
        conn.execute("INSERT INTO scratch.copy_typed (id, ssn, code) VALUES (1, '1999-12-31', 'ab')")
        conn.execute("CREATE TABLE scratch.code (ssn char(6))")
        conn.execute("INSERT INTO scratch.code VALUES ('abcdef')")
    try:
        yield "scratch.copy_typed"
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
            conn.execute("DROP TABLE scratch.copy_typed, scratch.code")
            conn.execute("DROP DOMAIN scratch.day")


def test_copied_columns_get_their_catalog_type(masking_proxy: ProxyProcess, typed: str) -> None:
    # `ssn` (partial) on a date domain is the date's full mask, as SELECT gives it, not text
    assert query(masking_proxy, f"SELECT id, ssn FROM {typed}") == [(1, datetime.date(1970, 1, 1))]
    assert proxy_copy(masking_proxy, f"COPY {typed} TO STDOUT") == b"1\t1970-01-01\tab    \n"
    assert proxy_copy(masking_proxy, "COPY scratch.code TO STDOUT (FORMAT csv)") == b"**cdef\n"


def test_copy_query_in_csv_with_header(masking_proxy: ProxyProcess) -> None:
    sql = "COPY (SELECT upper(email), id FROM customers WHERE id <= 3 ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)"
    lines = proxy_copy(masking_proxy, sql).decode().splitlines()
    selected = query(masking_proxy, "SELECT upper(email), id FROM customers WHERE id <= 3 ORDER BY id")
    assert lines[0] == "upper,id"
    assert lines[1:] == [f"{email},{rid}" for email, rid in selected]
    assert all(line.startswith("****@EXAMPLE.COM,") for line in lines[1:])


@pytest.mark.parametrize("sql", [
    "COPY (SELECT email, id FROM customer_contacts WHERE id <= 5 ORDER BY id) TO STDOUT",
    "COPY (SELECT customer_email, order_id FROM order_summary WHERE order_id <= 5 ORDER BY order_id) TO STDOUT",
    "COPY (SELECT * FROM customer_contacts WHERE id <= 5 ORDER BY id) TO STDOUT",
])
def test_copy_through_a_view(masking_proxy: ProxyProcess, pii: list[str], sql: str) -> None:
    data = proxy_copy(masking_proxy, sql)
    assert data.count(b"****@example.com") == 5
    for value in pii:
        assert value.encode() not in data


def test_expressions_and_detectors_in_a_copied_query(masking_proxy: ProxyProcess, pii: list[str]) -> None:
    data = proxy_copy(masking_proxy, "COPY (SELECT reverse(email), encode(convert_to(ssn, 'UTF8'), 'base64'), "
                                     "'card 4111 1111 1111 1111', 'order 12345' FROM customers WHERE id <= 10) "
                                     "TO STDOUT")
    for value in pii[:20]:
        for form in leaked_forms(value):
            assert form not in data
    assert b"4111" not in data
    assert data.count(b"order 12345") == 10  # nothing found: unchanged


# ---------------------------------------------------------------------------- escaping and options

OPTION_SETS = [
    "FORMAT text",
    "FORMAT text, DELIMITER ',', NULL '<null>'",
    "FORMAT text, DELIMITER '|', HEADER",
    "FORMAT csv",
    "FORMAT csv, HEADER, DELIMITER '|', NULL 'NIL', QUOTE '''', ESCAPE '\\'",
    "FORMAT csv, DELIMITER ';', FORCE_QUOTE *",
    "FORMAT csv, DELIMITER E'\\t', NULL '\\N', FORCE_QUOTE (ssn)",
]


@pytest.mark.parametrize("options", OPTION_SETS)
def test_masked_copy_loads_back_as_select_sees_it(masking_proxy: ProxyProcess, pg_server: ThrowawayPostgres,
                                                  tricky: str, options: str) -> None:
    data = proxy_copy(masking_proxy, f"COPY {tricky} TO STDOUT WITH ({options})")
    selected = query(masking_proxy, f"SELECT id, ssn, note FROM {tricky} ORDER BY id")
    raw = direct(pg_server, f"SELECT id, ssn, note FROM {tricky} ORDER BY id")
    loaded = load_back(pg_server, data, "id int, ssn text, note text", options)
    assert loaded == selected
    assert [r[1] for r in loaded] != [r[1] for r in raw]  # the ssn column is masked
    assert selected[0] == (0, None, None)  # NULLs stay NULL
    # `note` is not a masked column: only what the detectors find changes
    for (_, _, note), (_, _, real) in zip(loaded, raw, strict=True):
        assert note == real or (real is not None and "4111" in str(real) and "4111" not in str(note))


@pytest.mark.parametrize("options", OPTION_SETS)
def test_a_copied_query_with_masked_values_loads_back(masking_proxy: ProxyProcess, pg_server: ThrowawayPostgres,
                                                      tricky: str, options: str) -> None:
    sql = f"SELECT id, ssn || note AS ssn, note FROM {tricky} ORDER BY id"
    data = proxy_copy(masking_proxy, f"COPY ({sql}) TO STDOUT WITH ({options})")
    assert load_back(pg_server, data, "id int, ssn text, note text", options) == query(masking_proxy, sql)


VALUES = st.text(alphabet=st.one_of(st.sampled_from('\t\n\r\b\f\v\\,;|"\'.N \x01'),
                                    st.characters(codec="utf-8", exclude_characters="\x00")), max_size=10)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(VALUES, min_size=1, max_size=4), options=st.sampled_from(OPTION_SETS))
def test_escaping_matches_postgresql(pg_server: ThrowawayPostgres, values: list[str], options: str) -> None:
    """Rows PostgreSQL itself wrote (one CopyData each), rewritten with a masker that gives
    each value back: the same bytes, so values are written exactly as the server writes them."""
    names = ["ssn", *(f"c{i}" for i in range(1, len(values)))]  # FORCE_QUOTE (ssn) names the first
    columns = ", ".join(f"%s::text AS {name}" for name in names)
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        statement = psycopg.ClientCursor(conn).mogrify(f"COPY (SELECT {columns}) TO STDOUT WITH ({options})", values)
        with conn.cursor().copy(statement) as copy:
            messages = [bytes(chunk) for chunk in copy]
    parsed = copy_statement(statement)
    assert parsed is not None
    rows = CopyRowRewriter(parsed.options, len(values),
                           [CopyColumn(i, name, lambda value: value) for i, name in enumerate(names)], "utf-8", b"")
    outs = [rows.rewrite(message) for message in messages]
    assert len(messages) == (2 if parsed.options.header else 1)
    assert outs[-1] == messages[-1] or (outs[-1] is None and set(values) <= {"<null>"})
    if parsed.options.header:
        assert outs[0] is None


# ---------------------------------------------------------------------------- who, and which format


def test_exempt_identity_gets_the_raw_copy(masking_proxy: ProxyProcess, pg_server: ThrowawayPostgres) -> None:
    for sql in ("COPY customers TO STDOUT", "COPY (SELECT upper(email) FROM customers) TO STDOUT (FORMAT csv)",
                "COPY customers TO STDOUT (FORMAT binary)"):
        assert proxy_copy(masking_proxy, sql, identity="alice") == direct_copy(pg_server, sql)


def test_binary_copy_of_masked_columns_is_refused_and_the_session_goes_on(masking_proxy: ProxyProcess) -> None:
    with psycopg.connect(masking_proxy.dsn(), autocommit=True) as conn:
        for sql in ("COPY customers TO STDOUT (FORMAT binary)",
                    "COPY (SELECT upper(email) FROM customer_contacts) TO STDOUT WITH (FORMAT binary)",
                    "COPY BINARY payments TO STDOUT"):
            with pytest.raises(errors.InsufficientPrivilege, match="binary COPY TO STDOUT of masked columns"):
                copy_out(conn, sql)
            assert conn.execute("SELECT 1").fetchone() == (1,)
        data = copy_out(conn, "COPY (SELECT id FROM products ORDER BY id LIMIT 2) TO STDOUT (FORMAT binary)")
        assert data.startswith(b"PGCOPY\n")
        assert copy_out(conn, "COPY customers (id) TO STDOUT (FORMAT binary)").startswith(b"PGCOPY\n")
        assert copy_out(conn, "COPY (SELECT id FROM products ORDER BY id LIMIT 2) TO STDOUT") == b"1\n2\n"


# ---------------------------------------------------------------------------- other clients


def _psql() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))
    return found[-1] if found else shutil.which("psql") or "psql"


@pytest.mark.parametrize(("command", "separator"), [
    ("\\copy (select id, email, ssn from customers where id <= 3 order by id) to stdout", "\t"),
    ("\\copy (select id, email, ssn from customers where id <= 3 order by id) to stdout with csv", ","),
    ("\\copy customers (id, email, ssn) to stdout with (format csv, header)", ","),
])
def test_psql_copy_to_stdout(masking_proxy: ProxyProcess, pg_server: ThrowawayPostgres, command: str,
                             separator: str) -> None:
    customers = direct(pg_server, "SELECT id, email, ssn FROM customers")
    real = {rid: (str(email), str(ssn)) for rid, email, ssn in customers}
    result = subprocess.run([_psql(), "-X", "-v", "ON_ERROR_STOP=1", "-c", command], env=masking_proxy.libpq_env(),
                            capture_output=True, text=True, timeout=30, check=True)
    lines = result.stdout.splitlines()
    if "header" in command:
        assert lines.pop(0) == "id,email,ssn"
    assert len(lines) == (3 if "<=" in command else 50)
    for line in lines:
        rid, email, ssn = line.split(separator)
        real_email, real_ssn = real[int(rid)]
        assert email == "****@" + real_email.split("@")[1]
        assert ssn == "*" * (len(real_ssn) - 4) + real_ssn[-4:]


def test_asyncpg_copy(masking_proxy: ProxyProcess, pii: list[str]) -> None:
    async def run() -> tuple[bytes, bytes]:
        conn = await asyncpg.connect(masking_proxy.dsn())
        try:
            table, result = io.BytesIO(), io.BytesIO()
            await conn.copy_from_table("customers", output=table, format="csv")
            await conn.copy_from_query("SELECT email, ssn FROM customers WHERE id <= $1", 10, output=result)
            return table.getvalue(), result.getvalue()
        finally:
            await conn.close()

    table, result = asyncio.run(run())
    assert table.count(b"****@example.com") == 50
    assert result.count(b"****@example.com") == 10
    for value in pii:
        assert value.encode() not in table + result


# ---------------------------------------------------------------------------- journal and leaks


def test_journal_counts_masked_copied_values(masking_proxy: ProxyProcess, pii: list[str]) -> None:
    with psycopg.connect(masking_proxy.dsn(application_name="copy-journal"), autocommit=True) as conn:
        copy_out(conn, "COPY customers (id, email, ssn) TO STDOUT")
        copy_out(conn, "COPY (SELECT upper(email) AS loud FROM customers WHERE id <= 4) TO STDOUT (FORMAT csv)")
        copy_out(conn, "COPY products TO STDOUT")
    events = js.session_events(masking_proxy, "copy-journal")
    outcomes = [js.outcome(events, s.seq) for s in js.statements(events)]
    assert [dict(o.masked) if o is not None else None for o in outcomes] == [
        {"email": 50, "ssn": 50}, {"loud": 4}, {}]
    recorded = "\n".join(repr(e) for e in events)
    for value in pii[:6]:
        assert value not in recorded


@pytest.fixture
def tap(masking_proxy: ProxyProcess) -> Iterator[Tap]:
    t = Tap(masking_proxy.port)
    yield t
    t.close()


LEAK_COPIES = [
    "COPY customers TO STDOUT",
    "COPY customers TO STDOUT WITH (FORMAT csv, HEADER, FORCE_QUOTE *)",
    "COPY public.customers (email, ssn) TO STDOUT (DELIMITER '|', NULL 'x')",
    "COPY payments TO STDOUT (FORMAT csv)",
    "COPY (SELECT * FROM customers WHERE id <= 10) TO STDOUT",
    "COPY (SELECT upper(email), lower(ssn), reverse(email), reverse(ssn) FROM customers WHERE id <= 10) TO STDOUT",
    "COPY (SELECT encode(convert_to(email, 'UTF8'), 'base64'), encode(convert_to(ssn, 'UTF8'), 'hex') "
    "FROM customers WHERE id <= 10) TO STDOUT (FORMAT csv)",
    "COPY (SELECT * FROM customer_contacts) TO STDOUT",
    "COPY (SELECT email FROM customers UNION ALL SELECT ssn FROM customers) TO STDOUT",
    "COPY (WITH x AS (SELECT * FROM customers) SELECT row_to_json(x) FROM x) TO STDOUT",
    "COPY (SELECT string_agg(email || ssn, ';') FROM customers) TO STDOUT (FORMAT csv)",
    "COPY (SELECT card_number, upper(card_number) FROM payments) TO STDOUT",
]
# Through psql: several results in one simple Query, and psql's own \copy.
LEAK_PSQL = [
    "SELECT 1; COPY customers TO STDOUT; COPY (SELECT ssn, email FROM customers) TO STDOUT (FORMAT csv)",
    "\\copy customers to stdout with csv",
    "\\copy (select upper(c.email), reverse(s.ssn) from customer_contacts c join customers s using (id)) to stdout",
]


def test_no_seeded_pii_reaches_the_client_in_any_copy(tap: Tap, pii: list[str]) -> None:
    dsn = f"postgresql://copilot:copilot-secret@127.0.0.1:{tap.port}/app"
    with psycopg.connect(dsn, autocommit=True) as conn:
        for sql in LEAK_COPIES:
            copy_out(conn, sql)
        for sql in ("COPY customers TO STDOUT (FORMAT binary)", "COPY (SELECT ssn FROM customers) TO STDOUT BINARY"):
            with pytest.raises(psycopg.Error):
                copy_out(conn, sql)
    env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(tap.port), "PGUSER": "copilot",
           "PGPASSWORD": "copilot-secret", "PGDATABASE": "app"}
    for command in LEAK_PSQL:
        result = subprocess.run([_psql(), "-X", "-v", "ON_ERROR_STOP=1", "-c", command], env=env,
                                capture_output=True, check=True, timeout=30)
        assert result.stdout.count(b"****") >= 50
    seen = bytes(tap.received)
    assert len(seen) > 20_000  # the tap saw the copies
    for value in pii:
        for form in leaked_forms(value):
            assert form not in seen, f"{value!r} leaked as {form!r}"
