"""sysbench oltp_read_write through a real `dbguard serve` (`protocol: mysql`, the repository's
sample rules) in front of a throwaway MariaDB.

Covers: sysbench's prepare (CREATE TABLE, bulk INSERT, CREATE INDEX) and its run with prepared
statements (the default: COM_STMT_PREPARE once, COM_STMT_EXECUTE per statement) and with text
queries (--db-ps-mode=disable: every literal inline, the gate's shape cache) from 2 threads
without a reconnect or any error but the server's own deadlocks; the tables' invariants
afterwards (oltp_read_write deletes and re-inserts the same ids); the same seeded single-thread
workload run through the proxy and directly ending in identical table contents (CHECKSUM TABLE);
sysbench's cleanup (DROP TABLE) refused by the sample rules.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dbguard.devdb.mariadb import ThrowawayMariaDB
from tests.integration.harness import REPO_ROOT, ProxyProcess, free_port, wait_for_port

pytestmark = pytest.mark.integration

IDENTITY = ("sysbench", "service", "sysbench-secret", ("app",))
RULES = REPO_ROOT / "rules"
TABLES, TABLE_SIZE = 2, 500
DIRECT_DB = "sbdirect"
SYSBENCH = os.environ.get("DBGUARD_SYSBENCH") or shutil.which("sysbench") or "sysbench"


def _write_config(directory: Path, upstream_dsn: str, port: int) -> Path:
    name, kind, secret, roles = IDENTITY
    text = "\n".join([
        "listeners:",
        "  - name: app-mysql",
        "    protocol: mysql",
        f"    listen: 127.0.0.1:{port}",
        f"    upstream: {upstream_dsn}",
        "identities:",
        f"  - name: {name}",
        f"    kind: {kind}",
        f"    secret: {secret}",
        f"    roles: [{', '.join(roles)}]",
        f"rules: {json.dumps(str(RULES))}",
    ]) + "\n"
    path = directory / "dbguard.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sysbench_proxy(mariadb_server: ThrowawayMariaDB) -> Iterator[ProxyProcess]:
    if shutil.which(SYSBENCH) is None:
        raise RuntimeError("sysbench is not installed: apt-get install sysbench (scripts/ensure-server-binaries)")
    mariadb_server.run_sql(f"CREATE DATABASE {DIRECT_DB}; GRANT ALL ON {DIRECT_DB}.* TO "
                           f"'{mariadb_server.app_user}'@'%'")
    with tempfile.TemporaryDirectory(prefix="dbguard-sysbench-") as tmp:
        directory = Path(tmp)
        port = free_port()
        config = _write_config(directory, mariadb_server.dsn(), port)
        log_path = directory / "dbguard.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dbguard", "serve", "-c", str(config), "--log-level", "info"],
                cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        proxy = ProxyProcess(config, port, proc, log_path, {IDENTITY[0]: IDENTITY[2]})
        try:
            wait_for_port("127.0.0.1", port, 20.0, proc)
            yield proxy
        finally:
            status = proxy.stop()
            # The shared server is left as found.
            mariadb_server.run_sql(f"DROP DATABASE IF EXISTS {DIRECT_DB}; "
                                   + "; ".join(f"DROP TABLE IF EXISTS app.sbtest{n}" for n in range(1, TABLES + 1)))
        assert status == 0, proxy.log()[-3000:]
        assert "Traceback" not in proxy.log(), proxy.log()[-5000:]


def sysbench(target: tuple[str, int, str, str, str], *args: str) -> str:
    host, port, user, password, database = target
    command = [SYSBENCH, "oltp_read_write", "--db-driver=mysql", f"--mysql-host={host}", f"--mysql-port={port}",
               f"--mysql-user={user}", f"--mysql-password={password}", f"--mysql-db={database}",
               "--mysql-ssl=off", f"--tables={TABLES}", f"--table-size={TABLE_SIZE}", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def test_sysbench_cleanup_is_refused_by_the_sample_rules(sysbench_proxy: ProxyProcess) -> None:
    with pytest.raises(AssertionError, match=r"error 1227 \(dbguard: blocked by rule no-drop-truncate"):
        sysbench(through(sysbench_proxy), "cleanup")


def counter(output: str, name: str) -> int:
    found = re.search(rf"{name}:\s+(\d+)", output)
    assert found is not None, output
    return int(found.group(1))


def through(proxy: ProxyProcess) -> tuple[str, int, str, str, str]:
    return (proxy.host, proxy.port, IDENTITY[0], IDENTITY[2], "app")


def direct(server: ThrowawayMariaDB) -> tuple[str, int, str, str, str]:
    return (server.host, server.port, server.app_user, server.app_password, DIRECT_DB)


def deadlock_count(server: ThrowawayMariaDB) -> int:
    rows = server.run_sql("SHOW GLOBAL STATUS LIKE 'Innodb_deadlocks'")
    return int(rows[0][1])


def contents(server: ThrowawayMariaDB, database: str) -> list[tuple[object, ...]]:
    """Per table: row count, the sum and range of ids, and the server's checksum of every row."""
    rows: list[tuple[object, ...]] = []
    for n in range(1, TABLES + 1):
        table = f"{database}.sbtest{n}"
        rows += server.run_sql(f"SELECT COUNT(*), SUM(id), MIN(id), MAX(id) FROM {table}")
        rows += [row[1:] for row in server.run_sql(f"CHECKSUM TABLE {table}")]
    return rows


@pytest.mark.parametrize("ps_mode", ["auto", "disable"])
def test_sysbench_read_write_through_the_proxy(sysbench_proxy: ProxyProcess, mariadb_server: ThrowawayMariaDB,
                                               ps_mode: str) -> None:
    proxied, straight = through(sysbench_proxy), direct(mariadb_server)
    seeded = ("--rand-seed=7", "--threads=1")
    drop = "; ".join(f"DROP TABLE IF EXISTS {database}.sbtest{n}"
                     for database in ("app", DIRECT_DB) for n in range(1, TABLES + 1))
    mariadb_server.run_sql(drop)  # sysbench cleanup is a DROP TABLE: the sample rules refuse it
    sysbench(proxied, "--threads=2", "prepare")
    # The same rows directly (sysbench's prepare draws its random strings unseeded).
    mariadb_server.run_sql("; ".join(
        f"CREATE TABLE {DIRECT_DB}.sbtest{n} LIKE app.sbtest{n}; "
        f"INSERT INTO {DIRECT_DB}.sbtest{n} SELECT * FROM app.sbtest{n}" for n in range(1, TABLES + 1)))
    assert contents(mariadb_server, "app") == contents(mariadb_server, DIRECT_DB)

    # The same seeded single-thread workload through the proxy and directly: same rows after.
    for target in (proxied, straight):
        output = sysbench(target, *seeded, f"--db-ps-mode={ps_mode}", "--events=150", "--time=0", "run")
        assert counter(output, "ignored errors") == 0, output
        assert counter(output, "reconnects") == 0, output
        assert counter(output, "transactions") == 150, output
    assert contents(mariadb_server, "app") == contents(mariadb_server, DIRECT_DB)

    # Two threads for a few seconds: no error, no reconnect, and the tables keep every id (each
    # transaction deletes one row and inserts it again).
    deadlocks = deadlock_count(mariadb_server)
    output = sysbench(proxied, "--threads=2", f"--db-ps-mode={ps_mode}", "--time=3", "run")
    # Two threads on the same rows can deadlock on the server, which sysbench retries (its default
    # --mysql-ignore-errors=1213,1020,1205); any other error fails the run. Every error it ignored
    # must be one the server counted: none comes from the proxy.
    assert counter(output, "ignored errors") <= deadlock_count(mariadb_server) - deadlocks, output
    assert counter(output, "reconnects") == 0, output
    assert counter(output, "transactions") > 0, output
    for n in range(1, TABLES + 1):
        rows = mariadb_server.run_sql(f"SELECT COUNT(*), SUM(id), MIN(id), MAX(id) FROM app.sbtest{n}")
        assert rows == [(TABLE_SIZE, TABLE_SIZE * (TABLE_SIZE + 1) // 2, 1, TABLE_SIZE)]
    assert sysbench_proxy.alive
