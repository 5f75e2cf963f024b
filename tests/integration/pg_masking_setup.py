"""What the PostgreSQL masking tests share (test_masking_pg.py, test_masking_pg_copy.py): the
mask rules they run under, a proxy started with them, the seeded PII no masked result may
reveal, and small helpers to query or COPY directly or through the proxy."""

from __future__ import annotations

from pathlib import Path

import psycopg

from dbguard.devdb.postgres import ThrowawayPostgres
from tests.integration.harness import ProxyFactory, ProxyProcess

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
  - id: pii-birth
    columns: [public.customers.birth_date]
    strategy: hash
    unless: {roles: [dba]}
  - id: pii-card
    columns: [payments.card_number]
    strategy: full
    unless: {roles: [dba]}
  - id: pii-content
    detect: [credit_card, us_ssn]
    strategy: full
    unless: {roles: [dba]}
"""


def direct(pg_server: ThrowawayPostgres, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def query(proxy: ProxyProcess, sql: str, identity: str = "copilot") -> list[tuple[object, ...]]:
    with psycopg.connect(proxy.dsn(identity), autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def copy_out(conn: psycopg.Connection[tuple[object, ...]], sql: str) -> bytes:
    with conn.cursor().copy(sql) as copy:
        return b"".join(bytes(chunk) for chunk in copy)


def start_masking_proxy(pg_server: ThrowawayPostgres, proxy_factory: ProxyFactory, directory: Path) -> ProxyProcess:
    rules = directory / "mask-rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    return proxy_factory(pg_server.dsn(sslmode="disable"),
                         extra_yaml=f"rules: {rules}\nmasking: {{hash_key: test-hash-key-0123456789}}\n")


def seeded_pii(pg_server: ThrowawayPostgres) -> list[str]:
    """The seeded values no masked result may reveal (first ten customers, their cards)."""
    values: list[str] = []
    for email, ssn in direct(pg_server, "SELECT email, ssn FROM customers ORDER BY id LIMIT 10"):
        values += [str(email), str(ssn)]
    values += [str(r[0]) for r in direct(pg_server, "SELECT card_number FROM payments ORDER BY id LIMIT 10")]
    return values
