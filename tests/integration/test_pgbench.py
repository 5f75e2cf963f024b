"""pgbench through the proxy: initialisation and runs in every query mode, without failures.

`pgbench -i -s 1` through the proxy (COPY-heavy) must build the same tables as a direct
initialisation; then runs of 4 clients x 200 transactions with -M simple / extended / prepared,
both the default TPC-B mix and select-only (-S), must exit 0 with no failed transactions and
leave the TPC-B balances consistent (every transaction's delta applied exactly once).
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from dbguard.devdb.postgres import ThrowawayPostgres
from tests.integration.harness import ProxyProcess

CLIENTS, THREADS, TRANSACTIONS = 4, 2, 200
PGBENCH_TIMEOUT = 120
SCRIPT_TITLES = {"tpcb-like": "<builtin: TPC-B (sort of)>", "select-only": "<builtin: select only>"}
TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history")


@dataclass(frozen=True)
class BenchDatabases:
    through_proxy: str  # initialised with pgbench -i through the proxy
    direct: str  # initialised with pgbench -i directly, for comparison


def pgbench_binary(server: ThrowawayPostgres) -> str:
    return str(server.client_binary("pgbench"))


def pgbench(server: ThrowawayPostgres, env: dict[str, str], *args: str) -> tuple[int, str]:
    result = subprocess.run([pgbench_binary(server), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env,
                            timeout=PGBENCH_TIMEOUT, check=False)
    return result.returncode, result.stdout


def direct_env(server: ThrowawayPostgres, database: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGHOST=server.host, PGPORT=str(server.port), PGUSER=server.app_user,
               PGPASSWORD=server.app_password, PGDATABASE=database, PGPASSFILE=os.devnull)
    return env


def proxy_env(proxy: ProxyProcess, database: str) -> dict[str, str]:
    env = {k: v for k, v in proxy.libpq_env("copilot", database).items()
           if not k.startswith("PG") or k in ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD",
                                             "PGDATABASE")}
    env["PGPASSFILE"] = os.devnull
    return env


def table_digest(dsn: str) -> dict[str, tuple[int, str]]:
    """Row count and an order-independent digest of every pgbench table."""
    digests = {}
    with psycopg.connect(dsn) as conn:
        for table in TABLES:
            row = conn.execute(sql.SQL(
                "SELECT count(*), coalesce(md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))),"
                " '') FROM {} t").format(sql.Identifier(table))).fetchone()
            assert row is not None
            digests[table] = (row[0], row[1])
    return digests


@pytest.fixture(scope="module")
def bench_databases(proxy: ProxyProcess, pg_server: ThrowawayPostgres) -> Iterator[BenchDatabases]:
    """Two databases owned by the app owner, made by the superuser and dropped afterwards."""
    names = BenchDatabases(f"bench_{uuid.uuid4().hex[:8]}", f"bench_{uuid.uuid4().hex[:8]}")
    with psycopg.connect(pg_server.superuser_dsn(), autocommit=True) as su:
        for name in (names.through_proxy, names.direct):
            su.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(pg_server.app_user)))
        try:
            status, output = pgbench(pg_server, proxy_env(proxy, names.through_proxy),
                                     "-i", "-s", "1")
            assert status == 0, output
            status, direct_output = pgbench(pg_server, direct_env(pg_server, names.direct),
                                            "-i", "-s", "1")
            assert status == 0, direct_output
            yield names
        finally:
            for name in (names.through_proxy, names.direct):
                su.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                           .format(sql.Identifier(name)))


def test_initialisation_through_the_proxy_matches_direct(
        bench_databases: BenchDatabases, pg_server: ThrowawayPostgres) -> None:
    through_proxy = table_digest(pg_server.dsn(database=bench_databases.through_proxy))
    direct = table_digest(pg_server.dsn(database=bench_databases.direct))
    assert through_proxy["pgbench_accounts"][0] == 100_000
    assert through_proxy["pgbench_branches"][0] == 1
    assert through_proxy["pgbench_tellers"][0] == 10
    assert through_proxy == direct


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
@pytest.mark.parametrize("script", ["tpcb-like", "select-only"])
def test_run(bench_databases: BenchDatabases, proxy: ProxyProcess,
             pg_server: ThrowawayPostgres, mode: str, script: str) -> None:
    database = bench_databases.through_proxy
    dsn = pg_server.dsn(database=database)
    with psycopg.connect(dsn) as conn:
        history_before = conn.execute("SELECT count(*) FROM pgbench_history").fetchone()
    options = ["-S"] if script == "select-only" else []
    status, output = pgbench(pg_server, proxy_env(proxy, database), "-M", mode, *options,
                             "-c", str(CLIENTS), "-j", str(THREADS), "-t", str(TRANSACTIONS),
                             "--no-vacuum")
    assert status == 0, output
    expected = CLIENTS * TRANSACTIONS
    assert f"transaction type: {SCRIPT_TITLES[script]}" in output
    assert f"query mode: {mode}" in output
    assert f"number of transactions actually processed: {expected}/{expected}" in output
    assert re.search(r"^number of failed transactions: 0 \(0\.000%\)$", output, re.M), output

    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM pgbench_history),"
            " (SELECT sum(abalance) FROM pgbench_accounts),"
            " (SELECT sum(bbalance) FROM pgbench_branches),"
            " (SELECT sum(tbalance) FROM pgbench_tellers),"
            " (SELECT coalesce(sum(delta), 0) FROM pgbench_history)").fetchone()
    assert row is not None
    assert history_before is not None
    history, accounts, branches, tellers, deltas = row
    added = expected if script == "tpcb-like" else 0
    assert history == history_before[0] + added
    assert accounts == branches == tellers == deltas


def test_new_connection_per_transaction(bench_databases: BenchDatabases, proxy: ProxyProcess,
                                        pg_server: ThrowawayPostgres) -> None:
    """pgbench -C: every transaction logs in again (SCRAM to the proxy, then upstream)."""
    status, output = pgbench(pg_server, proxy_env(proxy, bench_databases.through_proxy),
                             "-C", "-S", "-c", str(CLIENTS), "-j", str(THREADS), "-t", "25",
                             "--no-vacuum")
    assert status == 0, output
    assert "number of transactions actually processed: 100/100" in output
    assert re.search(r"^number of failed transactions: 0 \(0\.000%\)$", output, re.M), output
