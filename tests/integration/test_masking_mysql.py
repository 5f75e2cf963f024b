"""Masked PII in MySQL/MariaDB results, through the proxy, with real clients and a real server.

Covers: PyMySQL (text protocol) and mysql-connector prepared cursors (binary protocol) getting
masked values of valid types; an exempt identity (role dba) seeing real values; lineage through
aliases, expressions (UPPER, CONCAT, HEX, TO_BASE64, REVERSE), GROUP_CONCAT, JSON_OBJECT,
subqueries, derived tables, CTEs, UNION and views (a view over a view too); id and name
untouched; content detection of card numbers; a duplicate-key error that does not quote the
e-mail; the journal's count of masked values; and a leak test that taps every byte the proxy
sends to the client and looks for the seeded PII in plain, upper, lower, reversed, base64 and hex
forms.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pytest
from pymysql.constants import CLIENT

from dbguard.devdb import ThrowawayMariaDB
from tests.integration import journal_sessions as js
from tests.integration.harness import ProxyFactory, ProxyProcess
from tests.integration.leak_tap import Tap, leaked_forms

RULES = """
masks:
  - id: pii-email
    columns: [customers.email]
    strategy: email
    unless: {roles: [dba]}
  - id: pii-ssn
    columns: ["*.ssn"]
    strategy: partial
    unless: {roles: [dba]}
  - id: pii-card
    detect: [credit_card]
    strategy: full
    unless: {roles: [dba]}
"""

CUSTOMERS = [
    (1, "alice.smith@example.com", "Alice Smith", "123-45-6789", "+1 415 555 0101", "4111 1111 1111 1111"),
    (2, "bob.jones@example.org", "Bob Jones", "234-56-7890", "+44 20 7946 0958", "5500 0000 0000 0004"),
    (3, "carol.o'hara@example.net", "Carol O'Hara", "345-67-8901", "(415) 555-0199", "3782 822463 10005"),
]
SEED = """
DROP VIEW IF EXISTS customer_contacts_v2;
DROP VIEW IF EXISTS customer_contacts;
DROP TABLE IF EXISTS customers;
CREATE TABLE customers (id int PRIMARY KEY, email varchar(100) UNIQUE, name varchar(100), ssn char(11),
                        phone varchar(30), card varchar(30)) ENGINE=InnoDB;
INSERT INTO customers VALUES {values};
CREATE VIEW customer_contacts AS SELECT id, email, UPPER(name) AS shout FROM customers;
CREATE VIEW customer_contacts_v2 (mail) AS SELECT CONCAT('<', email, '>') FROM customer_contacts;
"""


def _literal(value: object) -> str:
    return str(value) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"


@pytest.fixture(scope="module")
def customers(mariadb_server: ThrowawayMariaDB) -> Iterator[None]:
    values = ", ".join("(" + ", ".join(_literal(v) for v in row) + ")" for row in CUSTOMERS)
    mariadb_server.run_sql(SEED.format(values=values), mariadb_server.app_database, as_root=False)
    yield
    mariadb_server.run_sql("DROP VIEW IF EXISTS customer_contacts_v2; DROP VIEW IF EXISTS customer_contacts; "
                           "DROP VIEW IF EXISTS v; DROP TABLE IF EXISTS customers",
                           mariadb_server.app_database, as_root=False)


@pytest.fixture
def masking_proxy(mariadb_server: ThrowawayMariaDB, customers: None, proxy_factory: ProxyFactory,
                  tmp_path: Path) -> ProxyProcess:
    rules = tmp_path / "mask-rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    return proxy_factory(mariadb_server.dsn(), protocol="mysql",
                         extra_yaml=f"rules: {rules}\nmasking: {{hash_key: test-hash-key-0123456789}}\n")


def connect(proxy: ProxyProcess, user: str = "copilot", port: int | None = None,
            program: str = "masking-test") -> pymysql.connections.Connection[Any]:
    return pymysql.connect(host=proxy.host, port=port or proxy.port, user=user, password=proxy.secrets[user],
                           database="app", connect_timeout=10, autocommit=True, charset="utf8mb4",
                           program_name=program, client_flag=CLIENT.MULTI_STATEMENTS)


def query(proxy: ProxyProcess, sql: str, user: str = "copilot") -> list[tuple[Any, ...]]:
    conn = connect(proxy, user)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def prepared(proxy: ProxyProcess, sql: str, params: tuple[Any, ...] = (), user: str = "copilot",
             port: int | None = None) -> list[tuple[Any, ...]]:
    conn: Any = mysql.connector.connect(
        host=proxy.host, port=port or proxy.port, user=user, password=proxy.secrets[user], database="app",
        use_pure=True, autocommit=True, connection_timeout=10)
    try:
        cur = conn.cursor(prepared=True)
        cur.execute(sql, params)
        rows = [tuple(v.decode() if isinstance(v, bytearray | bytes) else v for v in row) for row in cur.fetchall()]
        cur.close()
        return rows
    finally:
        conn.close()


def email_masked(real: str) -> str:
    return "****@" + real.split("@")[1]


def partial(real: str) -> str:
    return "*" * (len(real) - 4) + real[-4:]


EMAILS = [row[1] for row in CUSTOMERS]
SSNS = [row[3] for row in CUSTOMERS]
CARDS = [row[5] for row in CUSTOMERS]


# ---------------------------------------------------------------------------- direct columns


def test_pymysql_sees_each_strategy_and_untouched_columns(masking_proxy: ProxyProcess) -> None:
    rows = query(masking_proxy, "SELECT id, name, email, ssn, phone, card FROM customers ORDER BY id")
    for got, real in zip(rows, CUSTOMERS, strict=True):
        assert (got[0], got[1], got[4]) == (real[0], real[2], real[4])  # id, name, phone untouched
        assert got[2] == email_masked(real[1])
        assert got[3] == partial(real[3])
        assert got[5] == "*" * len(real[5])  # a detected card: `full` over the span


def test_exempt_identity_sees_real_values(masking_proxy: ProxyProcess) -> None:
    rows = query(masking_proxy, "SELECT id, email, ssn, card FROM customers ORDER BY id", user="alice")
    assert rows == [(r[0], r[1], r[3], r[5]) for r in CUSTOMERS]


def test_prepared_statements_use_the_binary_protocol(masking_proxy: ProxyProcess) -> None:
    rows = prepared(masking_proxy, "SELECT id, email, ssn, UPPER(email), name FROM customers WHERE id <= ? ORDER BY id",
                    (2,))
    assert rows == [(r[0], email_masked(r[1]), partial(r[3]), email_masked(r[1].upper()), r[2]) for r in CUSTOMERS[:2]]
    real = prepared(masking_proxy, "SELECT email FROM customers WHERE id = ?", (1,), user="alice")
    assert real == [(EMAILS[0],)]


# ---------------------------------------------------------------------------- lineage


@pytest.mark.parametrize("sql", [
    "SELECT email AS contact FROM customers ORDER BY id",
    "SELECT UPPER(email) FROM customers ORDER BY id",
    "SELECT CONCAT(name, ' <', email, '>') FROM customers ORDER BY id",
    "SELECT (SELECT c2.email FROM customers c2 WHERE c2.id = c.id) FROM customers c ORDER BY id",
    "SELECT e FROM (SELECT id, email AS e FROM customers) d ORDER BY id",
    "SELECT e FROM (SELECT id, email AS e FROM customers ORDER BY id LIMIT 10) d",
    "WITH x AS (SELECT id, email FROM customers) SELECT email FROM x ORDER BY id",
    "SELECT email FROM customers UNION SELECT name FROM customers",
    "SELECT email FROM customer_contacts ORDER BY id",
    "SELECT mail FROM customer_contacts_v2",
    "SELECT * FROM customer_contacts",
    "SELECT GROUP_CONCAT(email SEPARATOR ',') FROM customers",
    "SELECT JSON_OBJECT('e', email) FROM customers",
    "SELECT HEX(email), TO_BASE64(email), REVERSE(email) FROM customers",
])
def test_derived_values_are_masked(masking_proxy: ProxyProcess, sql: str) -> None:
    text = repr(query(masking_proxy, sql))
    for email in EMAILS:
        for form in (email, email.upper(), email.encode().hex().upper(), email[::-1]):
            assert form not in text, (sql, text)


def test_a_view_created_in_the_session_is_seen_through(masking_proxy: ProxyProcess) -> None:
    conn = connect(masking_proxy)
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE OR REPLACE VIEW v AS SELECT email FROM customers")
            cur.execute("SELECT email FROM v")
            got = sorted(r[0] for r in cur.fetchall())
            cur.execute("DROP VIEW v")
    finally:
        conn.close()
    assert got == sorted(email_masked(e) for e in EMAILS)


def test_unmasked_columns_and_filters_stay_usable(masking_proxy: ProxyProcess) -> None:
    assert query(masking_proxy, f"SELECT id, name FROM customers WHERE email = '{EMAILS[1]}'") == [(2, "Bob Jones")]
    assert query(masking_proxy, "SELECT COUNT(*), MAX(id) FROM customers") == [(3, 3)]
    assert query(masking_proxy, "SELECT id FROM customer_contacts ORDER BY id") == [(1,), (2,), (3,)]


def test_multi_statement_results(masking_proxy: ProxyProcess) -> None:
    conn = connect(masking_proxy)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id, name FROM customers WHERE id = 1; SELECT id, email FROM customers WHERE id = 1")
            first = cur.fetchall()
            assert cur.nextset()
            second = cur.fetchall()
    finally:
        conn.close()
    assert first == ((1, "Alice Smith"),)
    assert second == ((1, email_masked(EMAILS[0])),)


# ---------------------------------------------------------------------------- errors and journal


def test_a_duplicate_key_error_does_not_quote_the_email(masking_proxy: ProxyProcess) -> None:
    conn = connect(masking_proxy)
    try:
        with conn.cursor() as cur, pytest.raises(pymysql.err.IntegrityError) as raised:
            cur.execute(f"INSERT INTO customers (id, email) VALUES (99, '{EMAILS[0]}')")
        code, message = raised.value.args
        assert code == 1062
        assert EMAILS[0] not in message
        assert "Duplicate entry '****' for key 'email'" in message
        with conn.cursor() as cur:  # the session goes on
            cur.execute("SELECT 1")
            assert cur.fetchall() == ((1,),)
    finally:
        conn.close()


def test_the_journal_counts_masked_values(masking_proxy: ProxyProcess) -> None:
    conn = connect(masking_proxy, program="masking-journal")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id, email, ssn FROM customers ORDER BY id")
            cur.fetchall()
    finally:
        conn.close()
    events = js.session_events(masking_proxy, "masking-journal")
    [statement] = [s for s in js.statements(events) if "FROM customers" in s.text]
    outcome = js.outcome(events, statement.seq)
    assert outcome is not None
    assert outcome.rows == 3
    assert outcome.masked == (("email", 3), ("ssn", 3))


# ---------------------------------------------------------------------------- the leak test


@pytest.fixture
def tap(masking_proxy: ProxyProcess) -> Iterator[Tap]:
    t = Tap(masking_proxy.port)
    yield t
    t.close()


LEAK_QUERIES = [
    "SELECT * FROM customers",
    "SELECT c.* FROM customers c JOIN customers d ON d.id = c.id",
    "SELECT email AS a, ssn AS b FROM customers",
    "SELECT UPPER(email), LOWER(ssn), REVERSE(email), REVERSE(ssn) FROM customers",
    "SELECT TO_BASE64(email), HEX(ssn), HEX(email), TO_BASE64(ssn) FROM customers",
    "SELECT * FROM customer_contacts",
    "SELECT * FROM customer_contacts_v2",
    "WITH x AS (SELECT * FROM customers) SELECT email, ssn FROM x",
    "SELECT email FROM customers UNION SELECT ssn FROM customers",
    "SELECT GROUP_CONCAT(CONCAT(email, ssn) SEPARATOR ';') FROM customers",
    "SELECT JSON_ARRAYAGG(email), JSON_OBJECT('s', ssn) FROM customers",
    "SELECT x.e FROM (SELECT SUBSTRING(email, 1) AS e FROM customers) x",
    "SELECT CAST(ssn AS BINARY), CONVERT(email USING latin1) FROM customers",
    "SELECT card, name FROM customers",
]


def test_no_seeded_pii_reaches_the_client_in_any_form(tap: Tap, masking_proxy: ProxyProcess) -> None:
    conn = connect(masking_proxy, port=tap.port)
    try:
        with conn.cursor() as cur:
            for sql in LEAK_QUERIES:
                cur.execute(sql)
                cur.fetchall()
            with pytest.raises(pymysql.err.IntegrityError):
                cur.execute(f"INSERT INTO customers (id, email) VALUES (98, '{EMAILS[1]}')")
    finally:
        conn.close()
    prepared(masking_proxy, "SELECT email, ssn, UPPER(email), HEX(ssn) FROM customers WHERE id > ?", (0,),
             port=tap.port)
    prepared(masking_proxy, "SELECT * FROM customer_contacts WHERE id > ?", (0,), port=tap.port)
    received = bytes(tap.received)
    assert b"Bob Jones" in received, "the tap saw the results"
    for value in EMAILS + SSNS:
        for form in leaked_forms(value):
            assert form not in received, f"{form!r} (from {value!r}) reached the client"
    for card in CARDS:  # detected by content where it is sent as text
        assert card.encode() not in received
