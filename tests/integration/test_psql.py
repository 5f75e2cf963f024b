"""psql through the proxy prints exactly what it prints when connected directly.

Covers meta-commands (\\dt, \\d, \\l, …), a multi-statement -c, \\copy to a file and back,
an error inside a transaction (25P02 until ROLLBACK, then the session recovers) and an
ON_ERROR_STOP script. Output is compared byte for byte: psql shows nothing that should differ
between the two paths (same server, same upstream role), so nothing is normalised.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from dbguard.devdb.postgres import ThrowawayPostgres
from tests.integration.harness import ProxyProcess

PSQL_TIMEOUT = 60


def psql_binary(server: ThrowawayPostgres) -> str:
    return str(server.client_binary("psql"))


def clean_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGCONNECT_TIMEOUT="10", PGAPPNAME="psql-compat", PGPASSFILE=os.devnull,
               PGCLIENTENCODING="UTF8", LC_ALL="C.UTF-8", LANG="C.UTF-8", PAGER="cat",
               PSQL_PAGER="cat", COLUMNS="200", **values)
    return env


@pytest.fixture
def envs(proxy: ProxyProcess, pg_server: ThrowawayPostgres) -> dict[str, dict[str, str]]:
    """libpq environments for the same database through the proxy and directly."""
    return {
        "proxy": clean_env(PGHOST=proxy.host, PGPORT=str(proxy.port), PGUSER="copilot",
                           PGPASSWORD=proxy.secrets["copilot"], PGDATABASE="app"),
        "direct": clean_env(PGHOST=pg_server.host, PGPORT=str(pg_server.port),
                            PGUSER=pg_server.app_user, PGPASSWORD=pg_server.app_password,
                            PGDATABASE=pg_server.app_database),
    }


def psql(server: ThrowawayPostgres, env: dict[str, str], *args: str, stdin: str | None = None,
         cwd: Path | None = None) -> tuple[int, str]:
    """Run psql; return its exit status and stdout+stderr as one interleaved text."""
    result = subprocess.run(
        [psql_binary(server), "--no-psqlrc", "--pset=pager=off", *args],
        input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        cwd=cwd, timeout=PSQL_TIMEOUT, check=False,
    )
    return result.returncode, result.stdout


def psql_both(server: ThrowawayPostgres, envs: dict[str, dict[str, str]], *args: str,
              stdin: str | None = None) -> tuple[tuple[int, str], tuple[int, str]]:
    return (psql(server, envs["proxy"], *args, stdin=stdin),
            psql(server, envs["direct"], *args, stdin=stdin))


@pytest.mark.parametrize("command", [
    "\\dt", "\\d customers", "\\d+ orders", "\\l", "\\dn", "\\dv", "\\di", "\\du app_owner",
    "\\df", "\\dT", "\\sv customer_contacts", "\\dp customers",
])
def test_meta_commands(pg_server: ThrowawayPostgres, envs: dict[str, dict[str, str]],
                       command: str) -> None:
    through_proxy, direct = psql_both(pg_server, envs, "-c", command)
    assert through_proxy == direct
    assert through_proxy[0] == 0


def test_meta_commands_show_the_shop(pg_server: ThrowawayPostgres,
                                     envs: dict[str, dict[str, str]]) -> None:
    status, tables = psql(pg_server, envs["proxy"], "-c", "\\dt")
    assert status == 0
    for table in ("customers", "orders", "order_items", "payments", "products"):
        assert f" {table} " in tables
    status, described = psql(pg_server, envs["proxy"], "-c", "\\d customers")
    assert 'Table "public.customers"' in described
    assert "customers_email_key" in described
    status, databases = psql(pg_server, envs["proxy"], "-c", "\\l")
    assert " app " in databases


def test_multi_statement_command_prints_both_results(
        pg_server: ThrowawayPostgres, envs: dict[str, dict[str, str]]) -> None:
    command = ("SELECT count(*) AS customers FROM customers; "
               "SELECT 'two' AS second, 2 + 2 AS four; SELECT id FROM products ORDER BY id LIMIT 3")
    through_proxy, direct = psql_both(pg_server, envs, "-c", command)
    assert through_proxy == direct
    status, output = through_proxy
    assert status == 0
    assert " customers \n-----------\n        50\n" in output
    assert " second | four \n--------+------\n two    |    4\n" in output
    assert "(3 rows)" in output


def test_copy_to_a_file_and_back(pg_server: ThrowawayPostgres, envs: dict[str, dict[str, str]],
                                 tmp_path: Path) -> None:
    table = f"psql_copy_{uuid.uuid4().hex[:10]}"
    export = ("\\copy (SELECT g AS id, md5(g::text) || E' tab\\t nl\\n bs\\\\ ü' AS body, "
              "now()::date - g AS day FROM generate_series(1, 20000) g) TO 'rows.txt'\n"
              "\\copy orders TO 'orders.csv' WITH (FORMAT csv, HEADER)\n")
    dirs = {where: tmp_path / where for where in envs}
    outputs = {}
    for where, directory in dirs.items():
        directory.mkdir()
        outputs[where] = psql(pg_server, envs[where], "-v", "ON_ERROR_STOP=1", stdin=export,
                              cwd=directory)
    assert outputs["proxy"] == outputs["direct"]
    assert outputs["proxy"] == (0, "COPY 20000\nCOPY 200\n")
    for name in ("rows.txt", "orders.csv"):
        assert (dirs["proxy"] / name).read_bytes() == (dirs["direct"] / name).read_bytes()
    assert (dirs["proxy"] / "rows.txt").read_bytes().count(b"\n") == 20000

    with psycopg.connect(pg_server.dsn(), autocommit=True) as direct:
        direct.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, body text, day date)")
                       .format(sql.Identifier(table)))
        direct.execute(sql.SQL("CREATE TABLE {} (LIKE orders)")
                       .format(sql.Identifier(table + "_orders")))
        try:
            load = (f"\\copy {table} FROM 'rows.txt'\n"
                    f"\\copy {table}_orders FROM 'orders.csv' WITH (FORMAT csv, HEADER)\n"
                    f"SELECT count(*), sum(id) FROM {table};\n")
            status, output = psql(pg_server, envs["proxy"], "-v", "ON_ERROR_STOP=1", "-At",
                                  stdin=load, cwd=dirs["proxy"])
            assert (status, output) == (0, f"COPY 20000\nCOPY 200\n20000|{20000 * 20001 // 2}\n")
            differences = direct.execute(sql.SQL(
                "SELECT (SELECT count(*) FROM (TABLE orders EXCEPT TABLE {o}) a)"
                " + (SELECT count(*) FROM (TABLE {o} EXCEPT TABLE orders) b)")
                .format(o=sql.Identifier(table + "_orders"))).fetchone()
            assert differences == (0,)
            body = direct.execute(sql.SQL("SELECT body FROM {} WHERE id = 7")
                                  .format(sql.Identifier(table))).fetchone()
            assert body is not None
            assert body[0].endswith(" tab\t nl\n bs\\ ü")
        finally:
            direct.execute(sql.SQL("DROP TABLE {}, {}").format(
                sql.Identifier(table), sql.Identifier(table + "_orders")))


def test_error_inside_a_transaction_then_recovery(
        pg_server: ThrowawayPostgres, envs: dict[str, dict[str, str]]) -> None:
    script = "\n".join([
        "\\set VERBOSITY verbose",
        "BEGIN;",
        "SELECT 1 AS before_error;",
        "SELECT 1/0;",
        "SELECT 1 AS ignored;",
        "\\echo :LAST_ERROR_SQLSTATE",
        "ROLLBACK;",
        "SELECT 'recovered' AS state;",
        "BEGIN;",
        "SAVEPOINT sp;",
        "SELECT nosuchcolumn FROM customers;",
        "ROLLBACK TO SAVEPOINT sp;",
        "SELECT count(*) AS after_savepoint FROM customers;",
        "COMMIT;",
    ]) + "\n"
    through_proxy, direct = psql_both(pg_server, envs, stdin=script)
    assert through_proxy == direct
    status, output = through_proxy
    assert status == 0
    assert "ERROR:  22012: division by zero" in output
    assert ("ERROR:  25P02: current transaction is aborted, commands ignored until end of "
            "transaction block") in output
    assert "\n25P02\nROLLBACK\n" in output
    assert " recovered\n" in output
    assert "ERROR:  42703: column \"nosuchcolumn\" does not exist" in output
    assert " after_savepoint \n-----------------\n              50\n" in output
    assert output.rstrip().endswith("COMMIT")


def test_on_error_stop_script(pg_server: ThrowawayPostgres, envs: dict[str, dict[str, str]],
                              tmp_path: Path) -> None:
    script = tmp_path / "script.sql"
    script.write_text("\n".join([
        "CREATE TABLE :\"tbl\" (id int PRIMARY KEY, note text);",
        "INSERT INTO :\"tbl\" VALUES (1, 'first');",
        "\\echo inserted the first row",
        "INSERT INTO :\"tbl\" VALUES (1, 'duplicate');",
        "INSERT INTO :\"tbl\" VALUES (3, 'never');",
        "\\echo never printed",
    ]) + "\n", encoding="utf-8")
    # One table name for both runs (it shows in the error), made and dropped by each run.
    table = f"psql_stop_{uuid.uuid4().hex[:10]}"
    results = {}
    with psycopg.connect(pg_server.dsn(), autocommit=True) as direct:
        for where, env in envs.items():
            try:
                results[where] = psql(pg_server, env, "-v", "ON_ERROR_STOP=1",
                                      "-v", f"tbl={table}", "-f", str(script), cwd=tmp_path)
                rows = direct.execute(sql.SQL("SELECT id, note FROM {} ORDER BY id")
                                      .format(sql.Identifier(table))).fetchall()
                assert rows == [(1, "first")], where
            finally:
                direct.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
    status, output = results["proxy"]
    assert results["proxy"] == results["direct"]
    assert status == 3
    assert "inserted the first row" in output
    assert "duplicate key value violates unique constraint" in output
    assert "never" not in output


def test_variables_gset_and_output_formats(
        pg_server: ThrowawayPostgres, envs: dict[str, dict[str, str]]) -> None:
    script = "\n".join([
        "SELECT count(*) AS n, max(id) AS top FROM orders \\gset",
        "\\echo orders: :n top: :top",
        "SELECT id, email FROM customers WHERE id <= 3 ORDER BY id \\gx",
        "\\x off",
        "\\pset format csv",
        "SELECT id, full_name FROM customers ORDER BY id LIMIT 2;",
        "\\pset format aligned",
        "SELECT 'done' AS status;",
    ]) + "\n"
    through_proxy, direct = psql_both(pg_server, envs, stdin=script)
    assert through_proxy == direct
    status, output = through_proxy
    assert status == 0
    assert "orders: 200 top: 200" in output
    assert "-[ RECORD 3 ]" in output
    assert "id,full_name\n1," in output


def test_reconnect_with_backslash_c(pg_server: ThrowawayPostgres,
                                    envs: dict[str, dict[str, str]]) -> None:
    script = ("\\c postgres\nSELECT current_database();\n"
              "\\c app\nSELECT count(*) AS customers FROM customers;\n")
    through_proxy, direct = psql_both(pg_server, envs, stdin=script)
    status, output = through_proxy
    assert status == 0
    assert 'You are now connected to database "postgres" as user "copilot".' in output
    assert " postgres\n" in output
    # The one thing that truly differs: psql names the user it logged in as, which is the
    # dbguard identity through the proxy and the database role directly.
    assert output.replace('as user "copilot"', f'as user "{pg_server.app_user}"') == direct[1]
    assert direct[0] == 0


def test_copy_inside_a_multi_statement_command(
        pg_server: ThrowawayPostgres, envs: dict[str, dict[str, str]]) -> None:
    command = ("CREATE TEMP TABLE t (a int); COPY t FROM STDIN; COPY t FROM STDIN; "
               "COPY (SELECT sum(a) FROM t) TO STDOUT; SELECT count(*) AS rows FROM t")
    data = "1\n2\n\\.\n3\n\\.\n"
    through_proxy = psql(pg_server, envs["proxy"], "-c", command, stdin=data)
    direct = psql(pg_server, envs["direct"], "-c", command, stdin=data)
    assert through_proxy == direct
    assert through_proxy == (0, "CREATE TABLE\nCOPY 2\nCOPY 1\n6\n rows \n------\n    3\n(1 row)\n\n")
