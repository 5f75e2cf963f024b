"""Policy enforced on the wire, against a real PostgreSQL with real clients.

Covers: a blocked statement's error (SQLSTATE 42501, message, DETAIL key=value, HINT) and a
session that goes on; a block inside a transaction failing it like a server error (25P02,
COMMIT rolls back); the extended protocol (psycopg with parameters, asyncpg prepared
statements); multi-statement messages decided as a whole; destructive statements in disguise
leave the server's data unchanged while benign look-alikes run; SQL-level PREPARE/EXECUTE;
standard_conforming_strings and client_encoding tricks; observe-only rules; psql's view of a
refusal; reloading rules on file change and on SIGHUP, a broken file keeping the old policy.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import psycopg
import pytest
from psycopg import errors, pq

from dbguard.devdb.postgres import ThrowawayPostgres
from tests.integration.conftest import start_seeded_server
from tests.integration.harness import REPO_ROOT, ProxyProcess, start_proxy

pytestmark = pytest.mark.integration

RULES = """
defaults: {action: allow, on_parse_error: block}
rules:
  - id: no-drop
    description: nobody drops or truncates through the proxy
    when: {statement: [drop, truncate]}
    action: block
    hint: Ask a DBA to run it.
  - id: no-unbounded-writes
    description: writes must say which rows
    when: {statement: [delete, update], where: missing}
    action: block
  - id: agents-no-deletes
    description: agents do not delete outside scratch
    when: {identity_kind: agent, statement: [delete]}
    unless: {tables: ["scratch.*"]}
    action: block
  - id: no-server-side-effects
    description: no server files, programs, admin functions or untrusted code
    when: {features: [file_access, program_execution, system_admin, untrusted_code]}
    action: block
  - id: watch-grants
    description: grants are being watched before they are blocked
    when: {statement: [grant]}
    action: block
    enforce: false
"""


@pytest.fixture(scope="module")
def guarded_server() -> Iterator[ThrowawayPostgres]:
    """A server of its own: if a destructive statement slipped through, no other test suffers."""
    server = start_seeded_server()
    server.run_sql("CREATE TABLE scratch.guard_notes (id integer PRIMARY KEY, note text)", database="app",
                   as_superuser=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def guarded(guarded_server: ThrowawayPostgres) -> Iterator[ProxyProcess]:
    with tempfile.TemporaryDirectory(prefix="dbguard-policy-") as tmp:
        directory = Path(tmp)
        (directory / "rules.yaml").write_text(RULES, encoding="utf-8")
        proxy = start_proxy(directory, guarded_server.dsn(sslmode="disable"), extra_yaml="rules: rules.yaml\n",
                            log_level="info")
        try:
            yield proxy
        finally:
            proxy.stop()


def snapshot(server: ThrowawayPostgres) -> str:
    """Everything a destructive statement could change, as text."""
    return server.run_sql(
        "SELECT string_agg(format('%s.%s:%s', table_schema, table_name, column_name), ',' "
        "ORDER BY table_schema, table_name, column_name) FROM information_schema.columns "
        "WHERE table_schema IN ('public', 'scratch');"
        "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM orders), "
        "(SELECT count(*) FROM order_items), (SELECT md5(string_agg(email, ',' ORDER BY id)) FROM customers);",
        database="app")


def test_blocked_statement_error_and_the_session_goes_on(guarded: ProxyProcess) -> None:
    with psycopg.connect(guarded.dsn("copilot"), autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege) as caught:
            conn.execute("DROP TABLE customers")
        diag = caught.value.diag
        assert diag.sqlstate == "42501"
        assert diag.message_primary == "dbguard: blocked by rule no-drop: nobody drops or truncates through the proxy"
        detail = dict(pair.split("=", 1) for pair in (diag.message_detail or "").split())
        assert detail["rule"] == "no-drop"
        assert detail["action"] == "block"
        assert diag.message_hint == "Ask a DBA to run it."
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (50,)


def test_block_inside_a_transaction_fails_it_like_a_server_error(
        guarded: ProxyProcess, guarded_server: ThrowawayPostgres) -> None:
    with psycopg.connect(guarded.dsn("copilot")) as conn:
        conn.execute("INSERT INTO scratch.guard_notes VALUES (1, 'must not survive')")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DELETE FROM customers WHERE id = 1")
        with pytest.raises(errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.commit()  # the server answers ROLLBACK: nothing of the transaction is kept
        assert conn.execute("SELECT count(*) FROM scratch.guard_notes WHERE id = 1").fetchone() == (0,)
    # A savepoint set before the refusal recovers the transaction, as after any error.
    with psycopg.connect(guarded.dsn("copilot")) as conn:
        conn.execute("INSERT INTO scratch.guard_notes VALUES (2, 'kept')")
        conn.execute("SAVEPOINT before_drop")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DROP TABLE orders")
        conn.execute("ROLLBACK TO SAVEPOINT before_drop")
        conn.commit()
    assert "kept" in guarded_server.run_sql("SELECT note FROM scratch.guard_notes WHERE id = 2", database="app")
    guarded_server.run_sql("DELETE FROM scratch.guard_notes", database="app")


def test_extended_protocol_refusal_with_parameters(guarded: ProxyProcess) -> None:
    with psycopg.connect(guarded.dsn("copilot"), autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege) as caught:
            conn.execute("DELETE FROM customers WHERE id = %s", (1,))
        assert "agents-no-deletes" in (caught.value.diag.message_primary or "")
        # Prepared server-side statements (prepare=True) and the pipeline keep working after it.
        assert conn.execute("SELECT %s::int + 1", (41,), prepare=True).fetchone() == (42,)
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("UPDATE customers SET email = email WHERE %s", (True,), prepare=True)
        with conn.pipeline() as pipeline:
            first = conn.execute("SELECT %s::int", (1,))
            pipeline.sync()
            assert first.fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (50,)


def test_asyncpg_prepared_refusal_and_recovery(guarded: ProxyProcess) -> None:
    async def scenario() -> None:
        conn = await asyncpg.connect(guarded.dsn("copilot"))
        try:
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError) as caught:
                await conn.fetch("TRUNCATE orders CASCADE")
            assert "no-drop" in str(caught.value)
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                await conn.prepare("DELETE FROM customers WHERE id = $1")
            async with conn.transaction():
                assert await conn.fetchval("SELECT count(*) FROM customers") == 50
            tx = conn.transaction()
            await tx.start()
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                await conn.execute("DROP TABLE customers")
            with pytest.raises(asyncpg.exceptions.InFailedSQLTransactionError):
                await conn.fetchval("SELECT 1")
            await tx.rollback()
            assert await conn.fetchval("SELECT $1::int * 2", 21) == 42
        finally:
            await conn.close()

    asyncio.run(scenario())


# Under standard_conforming_strings = off a backslash escapes the quote and the call is real
# SQL (which would end our own session); with it on, the same text is one harmless string.
TRICK = b"SELECT 'x\\'' , pg_terminate_backend(pg_backend_pid()) --'"

# Each of these destroys data or runs something the rules forbid, in disguise.
DISGUISED = [
    "/* just a comment */ DROP TABLE customers",
    'DrOp TaBlE "customers"',
    "SELECT 1; DROP TABLE customers",
    "SELECT 1 -- comment\n; DROP TABLE customers",
    "SELECT $x$ ; $x$; DROP TABLE customers",
    "SELECT 1 /* nested /* comment */ still */; DROP TABLE customers",
    "WITH gone AS (DELETE FROM customers RETURNING id) SELECT count(*) FROM gone",
    "EXPLAIN ANALYZE DELETE FROM order_items",
    "DELETE FROM order_items WHERE 1=1",
    "DELETE FROM order_items WHERE true OR id = 1",
    "UPDATE customers SET email = 'x' || id WHERE id = id",
    "UPDATE customers SET email = 'x' || id",
    "TRUNCATE order_items",
    "ALTER TABLE customers DROP COLUMN email",
    "ALTER TABLE customers RENAME COLUMN email TO gone, DROP COLUMN phone",
    "DROP OWNED BY CURRENT_USER",
    "DO $$ BEGIN EXECUTE 'DROP TABLE customers'; END $$",
    "COPY customers TO PROGRAM 'cat > /dev/null'",
    "COPY customers TO '/tmp/dbguard-exfiltrated.csv'",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT pg_terminate_backend(pg_backend_pid())",
    "PREPARE wipe AS DELETE FROM order_items",
    "CREATE TABLE copy_of AS SELECT * FROM customers; DROP TABLE customers",
    "SELEC 1; DROP TABLE customers",  # unparseable: fails closed
    "BEGIN; DELETE FROM order_items; COMMIT",
]


@pytest.mark.parametrize("sql", DISGUISED)
def test_destructive_statements_in_disguise_change_nothing(
        guarded: ProxyProcess, guarded_server: ThrowawayPostgres, sql: str) -> None:
    before = snapshot(guarded_server)
    with psycopg.connect(guarded.dsn("copilot"), autocommit=True) as conn:
        with pytest.raises(errors.InsufficientPrivilege) as caught:
            conn.execute(sql.encode())  # bytes: psycopg sends it as is, simple protocol
        assert (caught.value.diag.message_primary or "").startswith("dbguard: blocked by rule ")
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session is still usable
    assert snapshot(guarded_server) == before


BENIGN = [
    ("SELECT 'DELETE FROM customers' AS s", [("DELETE FROM customers",)]),
    ("SELECT $$DROP TABLE customers$$", [("DROP TABLE customers",)]),
    ("SELECT 1 AS drop_date /* DROP TABLE customers */", [(1,)]),
    ('SELECT count(*) AS "delete" FROM customers -- ; DROP TABLE customers', [(50,)]),
    ("SELECT count(*) FROM customers WHERE full_name <> 'x''; DROP TABLE customers; --'", [(50,)]),
]


@pytest.mark.parametrize(("sql", "rows"), BENIGN)
def test_benign_look_alikes_run(guarded: ProxyProcess, sql: str, rows: list[tuple[object, ...]]) -> None:
    with psycopg.connect(guarded.dsn("copilot"), autocommit=True) as conn:
        assert conn.execute(sql.encode()).fetchall() == rows


def test_exemption_covers_only_what_it_names(guarded: ProxyProcess, guarded_server: ThrowawayPostgres) -> None:
    with psycopg.connect(guarded.dsn("copilot"), autocommit=True) as conn:
        conn.execute("INSERT INTO scratch.guard_notes VALUES (10, 'x')")
        conn.execute("DELETE FROM scratch.guard_notes WHERE id = 10")  # exempt: scratch only
        with pytest.raises(errors.InsufficientPrivilege):
            # A delete of a real table hidden next to an exempt one is not exempt.
            conn.execute("WITH d AS (DELETE FROM orders WHERE id = 1 RETURNING id) "
                         "DELETE FROM scratch.guard_notes WHERE id IN (SELECT id FROM d)")
        # An unqualified name could resolve to either schema once search_path has both.
        conn.execute("SET search_path TO scratch, public")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DELETE FROM guard_notes WHERE id = 1")
    # The human is not an agent: the agent-only rule does not apply to alice.
    with psycopg.connect(guarded.dsn("alice"), autocommit=True) as conn:
        conn.execute("INSERT INTO scratch.guard_notes VALUES (11, 'y')")
        conn.execute("DELETE FROM public.order_items WHERE id = -1")
    assert "11" in guarded_server.run_sql("SELECT id FROM scratch.guard_notes", database="app")
    guarded_server.run_sql("DELETE FROM scratch.guard_notes", database="app")


def test_sql_prepare_and_execute_are_decided_as_what_they_run(guarded: ProxyProcess) -> None:
    with psycopg.connect(guarded.dsn("copilot"), autocommit=True) as conn:
        conn.execute(b"PREPARE count_customers AS SELECT count(*) FROM customers")
        assert conn.execute(b"EXECUTE count_customers").fetchone() == (50,)
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(b"PREPARE wipe AS DELETE FROM order_items")
        # Never prepared through the proxy: the server says it does not exist.
        with pytest.raises(errors.InvalidSqlStatementName):
            conn.execute(b"EXECUTE wipe")
        conn.execute(b"DEALLOCATE count_customers")


def test_standard_conforming_strings_off_does_not_fool_the_analyser(guarded: ProxyProcess) -> None:
    trick = TRICK
    with psycopg.connect(guarded.dsn("copilot"), autocommit=True) as conn:
        assert conn.execute(trick).fetchone() == ("x\\' , pg_terminate_backend(pg_backend_pid()) --",)
        conn.execute(b"SET standard_conforming_strings = off")
        with pytest.raises(errors.InsufficientPrivilege) as caught:
            conn.execute(trick)
        assert "no-server-side-effects" in (caught.value.diag.message_primary or "")
        conn.execute(b"SET standard_conforming_strings = on")
        assert conn.execute(b"SELECT 1; SELECT 2").fetchone() == (1,)


def _pipeline(conn: psycopg.Connection[tuple[object, ...]], batches: list[list[bytes]]) -> list[str]:
    """Send every batch (statements, then a Sync) in one go with libpq's pipeline mode;
    return each statement's outcome: its command status, or its SQLSTATE."""
    pgconn = conn.pgconn
    pgconn.enter_pipeline_mode()
    for batch in batches:
        for statement in batch:
            pgconn.send_query_params(statement, None)
        pgconn.pipeline_sync()
    pgconn.flush()
    outcomes: list[str] = []
    syncs = 0
    while syncs < len(batches):
        result = pgconn.get_result()
        if result is None:
            continue
        if result.status == pq.ExecStatus.PIPELINE_SYNC:
            syncs += 1
        elif result.status in (pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.PIPELINE_ABORTED):
            code = result.error_field(pq.DiagnosticField.SQLSTATE)
            outcomes.append(code.decode() if code else "aborted")
        else:
            outcomes.append((result.command_status or b"").decode())
    pgconn.exit_pipeline_mode()
    return outcomes


def test_pipelined_statement_is_decided_after_a_setting_change_completed(guarded: ProxyProcess) -> None:
    """SET and the trick sent together: the trick must be decided under the new setting
    (were it decided at once, under the old one, the server would run the hidden call)."""
    with psycopg.connect(guarded.dsn("copilot"), autocommit=True) as conn:
        outcomes = _pipeline(conn, [[b"SET standard_conforming_strings = off"], [TRICK]])
        assert outcomes == ["SET", "42501"]
        assert conn.execute("SELECT 1").fetchone() == (1,)  # our own backend is still alive


def test_statement_after_a_setting_change_in_the_same_batch_fails_closed(guarded: ProxyProcess) -> None:
    with psycopg.connect(guarded.dsn("copilot"), autocommit=True) as conn:
        outcomes = _pipeline(conn, [[b"SET standard_conforming_strings = off", b"SELECT 1"]])
        assert outcomes == ["SET", "42501"]
        # The batch is one implicit transaction: the refusal rolled the SET back too.
        assert conn.execute("SHOW standard_conforming_strings").fetchone() == ("on",)


def test_sjis_client_encoding_cannot_hide_a_quote(guarded: ProxyProcess) -> None:
    # In SJIS, 0x95 0x5C is one character (表); read byte by byte, 0x5C would be a backslash
    # escaping the quote, and the call would look like part of a string.
    with psycopg.connect(guarded.dsn("copilot"), autocommit=True) as conn:
        conn.execute(b"SET client_encoding = 'SJIS'")
        assert conn.execute(b"SELECT E'\x95\x5c' || 'ok'").fetchone() == ("\u8868ok",)
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(b"SELECT E'\x95\x5c' , pg_terminate_backend(pg_backend_pid()) --'")
        assert conn.execute(b"SELECT 1").fetchone() == (1,)


def test_observe_only_rule_lets_the_statement_run_and_logs_it(guarded: ProxyProcess) -> None:
    with psycopg.connect(guarded.dsn("copilot"), autocommit=True) as conn:
        conn.execute("GRANT SELECT ON products TO PUBLIC")
        conn.execute("REVOKE SELECT ON products FROM PUBLIC")
    deadline = time.monotonic() + 5
    while "statement.observed" not in guarded.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "statement.observed" in guarded.log()
    assert "watch-grants" in guarded.log()


def test_psql_shows_the_refusal_and_recovers(guarded: ProxyProcess, guarded_server: ThrowawayPostgres) -> None:
    psql = guarded_server.client_binary("psql")
    result = subprocess.run(
        [psql, "-X", "-c", "DROP TABLE customers", "-c", "SELECT count(*) FROM customers"],
        env=guarded.libpq_env("copilot"), capture_output=True, text=True, timeout=60, check=False)
    assert "ERROR:  dbguard: blocked by rule no-drop" in result.stderr
    assert "DETAIL:  rule=no-drop" in result.stderr
    assert "HINT:  Ask a DBA to run it." in result.stderr
    assert " 50" in result.stdout


def _write_rules(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def test_rules_reload_on_change_and_keep_the_old_policy_when_broken(pg_server: ThrowawayPostgres) -> None:
    with tempfile.TemporaryDirectory(prefix="dbguard-reload-") as tmp:
        directory = Path(tmp)
        rules = directory / "rules.yaml"
        _write_rules(rules, "rules: []\n")
        proxy = start_proxy(directory, pg_server.dsn(sslmode="disable"), extra_yaml="rules: rules.yaml\n",
                            log_level="info")
        try:
            with psycopg.connect(proxy.dsn("copilot"), autocommit=True) as conn:
                assert conn.execute("SELECT count(*) FROM products").fetchone() == (20,)
                _write_rules(rules, "rules:\n  - id: no-products\n    when: {reads: [public.products]}\n"
                                    "    action: block\n")

                def blocked() -> bool:
                    try:
                        conn.execute("SELECT count(*) FROM products")
                    except errors.InsufficientPrivilege:
                        return True
                    return False

                deadline = time.monotonic() + 10
                while not blocked():
                    assert time.monotonic() < deadline, f"the changed rules were not applied:\n{proxy.log()}"
                    time.sleep(0.2)
                # A broken file: reported, and the previous policy stays in force.
                _write_rules(rules, "rules:\n  - id: broken\n    when: {statement: [dropp]}\n    action: block\n")
                deadline = time.monotonic() + 10
                while "rules.reload_failed" not in proxy.log():
                    assert time.monotonic() < deadline, proxy.log()
                    time.sleep(0.2)
                assert "dropp" in proxy.log()
                assert blocked()
                # SIGHUP reloads too.
                _write_rules(rules, "rules: []\n")
                proxy.reload()
                deadline = time.monotonic() + 10
                while blocked():
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
        finally:
            proxy.stop()


def test_a_broken_rules_file_stops_serve_with_file_line_and_key(tmp_path: Path, pg_server: ThrowawayPostgres) -> None:
    (tmp_path / "rules.yaml").write_text("rules:\n  - id: x\n    when: {statement: [dropp]}\n    action: block\n")
    config = tmp_path / "dbguard.yaml"
    config.write_text(
        "listeners:\n  - name: app-pg\n    protocol: postgres\n    listen: 127.0.0.1:0\n"
        f"    upstream: {pg_server.dsn(sslmode='disable')}\n"
        "identities:\n  - name: copilot\n    kind: agent\n    secret: s\n"
        "rules: rules.yaml\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "dbguard", "serve", "-c", str(config)],
                            capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 2
    assert f"{tmp_path / 'rules.yaml'}:3: rules[0].when.statement" in result.stderr


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_pgbench_under_the_sample_policy_has_no_failures(guarded_server: ThrowawayPostgres, mode: str) -> None:
    """The sample rules/ in force: an agent's select-only run and a human's TPC-B run (an
    agent's writes are held by that policy) complete with zero failed transactions."""
    pgbench = str(guarded_server.client_binary("pgbench"))
    direct = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    direct.update(PGHOST=guarded_server.host, PGPORT=str(guarded_server.port), PGUSER=guarded_server.app_user,
                  PGPASSWORD=guarded_server.app_password, PGDATABASE="app", PGPASSFILE=os.devnull)
    subprocess.run([pgbench, "-i", "-q", "-s", "1"], env=direct, check=True, capture_output=True, timeout=120)
    with tempfile.TemporaryDirectory(prefix="dbguard-pgbench-policy-") as tmp:
        proxy = start_proxy(Path(tmp), guarded_server.dsn(sslmode="disable"),
                            extra_yaml=f"rules: {REPO_ROOT / 'rules'}\n", log_level="warning")
        try:
            for identity, script in (("copilot", ["-S"]), ("alice", [])):
                env = {k: v for k, v in proxy.libpq_env(identity).items() if not k.startswith("PGSERVICE")}
                env["PGPASSFILE"] = os.devnull
                result = subprocess.run([pgbench, "-n", "-c", "4", "-j", "2", "-t", "100", "-M", mode, *script],
                                        env=env, capture_output=True, text=True, timeout=180, check=False)
                assert result.returncode == 0, result.stdout + result.stderr
                assert "number of failed transactions: 0" in result.stdout, result.stdout
                assert "number of transactions actually processed: 400/400" in result.stdout
            assert "statement.blocked" not in proxy.log()
        finally:
            proxy.stop()
        subprocess.run([pgbench, "-i", "-I", "d"], env=direct, check=True, capture_output=True, timeout=60)
