# bench.serve_memory — the resident memory of `dbguard serve`: after start, after traffic that
# needs no catalog, after masked results.
# Owns: a throwaway PostgreSQL (TLS on offer) loaded with fixtures/shop.sql and, for the MySQL
# listener, a throwaway MariaDB with a `customers` table; the configurations measured (a
# PostgreSQL listener with the sample rules `rules/`, journal off and on; the same with TLS on
# both sides; PostgreSQL and MySQL listeners together; the bare relay for reference); the
# traffic; the /proc readings (the proxy's VmRSS, its children's, the PSS of all of them) and
# their table / JSON.
# Must not: import the proxy's internals (it measures the process users run: `python -m
# dbguard serve` as a subprocess), touch a server it did not start, or judge the numbers (the
# structure is guarded by tests/unit/test_serve_imports.py, not by a threshold here).
"""The resident memory (VmRSS) of `dbguard serve`: after start, idle; after traffic whose
results need no catalog lookup; after masked results (the masking catalog's side connection).

Run from the repository root:  python -m bench.serve_memory [--rounds N] [--no-mysql] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import psycopg
import pymysql
from rich.console import Console
from rich.table import Table

from dbguard.devdb.certs import CertPair, make_self_signed_cert
from dbguard.devdb.mariadb import ThrowawayMariaDB
from dbguard.devdb.postgres import ThrowawayPostgres
from tests.integration.harness import DEFAULT_IDENTITIES, REPO_ROOT, free_port, wait_for_port

RULES: Final = REPO_ROOT / "rules"
SHOP: Final = REPO_ROOT / "fixtures" / "shop.sql"
SETTLE_SECONDS: Final = 1.0  # after start and after each kind of traffic, before reading /proc
MYSQL_SEED: Final = (
    "CREATE TABLE customers (id int PRIMARY KEY, full_name text, email text, phone text, ssn text,"
    " birth_date date)",
    "INSERT INTO customers VALUES (1, 'Ada Example', 'ada@example.com', '555-0100', '078-05-1120',"
    " '1990-01-02'), (2, 'Bo Example', 'bo@example.com', '555-0101', '219-09-9999', '1985-03-04')",
)
# Results with no table column: their plans need no catalog lookup.
PLAIN_STATEMENTS: Final = ("SELECT 1", "SELECT now(), current_user", "SELECT 'a' || 'b' AS c")
# Results from the shop's tables and views, masked for copilot (not for alice, a dba).
MASKED_STATEMENTS: Final = (
    "SELECT full_name, email, phone, ssn FROM customers",
    "SELECT id, birth_date FROM customers",  # the `null` strategy
    "SELECT * FROM customer_contacts",  # a view: its definition read through the catalog
    "SELECT o.id, p.card_number, p.card_holder FROM payments p JOIN orders o ON o.id = p.order_id",
    "SELECT upper(email) AS e FROM customers WHERE id < 10",  # lineage through an expression
)
MYSQL_STATEMENTS: Final = (
    "SELECT full_name, email, phone, ssn FROM customers",
    "SELECT id, birth_date FROM customers",
    "SELECT upper(email) AS e FROM customers WHERE id < 10",
)
IDENTITIES: Final = (("copilot", "copilot-secret"), ("alice", "alice-secret"))


@dataclass(frozen=True)
class Target:
    name: str
    journal: bool
    tls: bool = False  # TLS towards clients and the upstream (SCRAM-SHA-256-PLUS both ways)
    mysql: bool = False
    relay_only: bool = False  # bench.relay_only instead of `dbguard serve` (no policy, no masks)


TARGETS: Final = (
    Target("postgres, rules, journal off", journal=False),
    Target("postgres, rules, journal on", journal=True),
    Target("postgres, rules, journal on, TLS both sides", journal=True, tls=True),
    Target("postgres + mysql, rules, journal on", journal=True, mysql=True),
    Target("postgres, bare relay (bench.relay_only)", journal=False, relay_only=True),
)


@dataclass(frozen=True)
class Memory:
    """KiB. The proxy's /proc/PID/status: VmRSS, its anonymous and file-backed parts, VmHWM
    (peak); its child processes' VmRSS (with the journal on, the journal appender); and the
    proportional set size (smaps_rollup's Pss) of the proxy and its children together, which
    counts pages they share once."""

    rss: int
    anon: int
    file: int
    peak: int
    children_rss: int
    total_pss: int

    @staticmethod
    def read(pid: int) -> Memory:
        fields = _status(pid)
        children = _children(pid)
        return Memory(fields["VmRSS"], fields["RssAnon"], fields["RssFile"], fields["VmHWM"],
                      sum(_status(child).get("VmRSS", 0) for child in children),
                      sum(_pss(process) for process in (pid, *children)))


def _status(pid: int) -> dict[str, int]:
    fields: dict[str, int] = {}
    with contextlib.suppress(OSError):  # a child may have exited meanwhile
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                fields[key] = int(value.split()[0])
    return fields


def _pss(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def _children(pid: int) -> list[int]:
    """Direct children (the journal appender), from /proc/PID/task/*/children."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


@dataclass(frozen=True)
class Result:
    target: str
    idle: Memory
    after_plain: Memory  # logins, plain results, a refused statement: no catalog lookup
    after_masked: Memory  # then masked results, COPY, views: the catalog's side connection
    statements: int


def _config(directory: Path, target: Target, pg_dsn: str, pg_port: int, my_dsn: str | None, my_port: int,
            certs: CertPair) -> Path:
    lines = ["listeners:",
             "  - name: app-pg", "    protocol: postgres", f"    listen: 127.0.0.1:{pg_port}",
             f"    upstream: {pg_dsn}"]
    if target.tls:
        lines.append(f"    tls: {{cert: {certs.cert_path}, key: {certs.key_path}}}")
    if target.mysql and my_dsn is not None:
        lines += ["  - name: app-mysql", "    protocol: mysql", f"    listen: 127.0.0.1:{my_port}",
                  f"    upstream: {my_dsn}"]
    lines.append("identities:")
    for name, kind, secret, roles in DEFAULT_IDENTITIES:
        lines.append(f"  - {{name: {name}, kind: {kind}, secret: {secret}, roles: [{', '.join(roles)}]}}")
    lines.append(f"rules: {RULES}")
    lines.append(f"store: sqlite:///{directory / 'dbguard.db'}")
    if not target.journal:
        lines.append("journal: {enabled: false}")
    path = directory / "dbguard.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@contextlib.contextmanager
def _running(config: Path, target: Target, ports: list[int], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    command = ([sys.executable, "-m", "bench.relay_only"] if target.relay_only
               else [sys.executable, "-m", "dbguard", "serve"])
    command += ["-c", str(config), "--log-level", "warning"]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        for port in ports:
            wait_for_port("127.0.0.1", port, 30.0, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _pg_traffic(port: int, rounds: int, statements: tuple[str, ...], *, masked: bool, tls: bool) -> int:
    """`rounds` connections per identity, each running `statements` as simple queries and
    prepared, and a refused DROP; with `masked`, also a parameter and COPY TO STDOUT."""
    done = 0
    for round_ in range(rounds):
        for identity, secret in IDENTITIES:
            with psycopg.connect(host="127.0.0.1", port=port, user=identity, password=secret, dbname="app",
                                 sslmode="require" if tls else "disable", autocommit=True) as conn:
                for sql in statements:
                    conn.execute(sql).fetchall()  # text format, simple query
                    conn.execute(sql, prepare=True).fetchall()  # extended protocol, prepared
                    done += 2
                with contextlib.suppress(psycopg.Error):
                    conn.execute("DROP TABLE customers")  # refused, for alice too (no-drop-truncate)
                done += 1
                if masked:
                    conn.execute("SELECT id, email FROM customers WHERE id = %s", [round_ + 1]).fetchall()
                    with conn.cursor().copy("COPY customers TO STDOUT") as copy:
                        for _ in copy:
                            pass
                    done += 2
    return done


def _mysql_traffic(port: int, rounds: int, statements: tuple[str, ...]) -> int:
    done = 0
    for _ in range(rounds):
        for identity, secret in IDENTITIES:
            conn = pymysql.connect(host="127.0.0.1", port=port, user=identity, password=secret, database="app",
                                   autocommit=True)
            try:
                with conn.cursor() as cur:
                    for sql in statements:
                        cur.execute(sql)
                        cur.fetchall()
                        done += 1
                    with contextlib.suppress(pymysql.MySQLError):
                        cur.execute("DROP TABLE customers")
                    done += 1
            finally:
                conn.close()
    return done


def measure(target: Target, pg: ThrowawayPostgres, mariadb: ThrowawayMariaDB | None, certs: CertPair,
            rounds: int, tmp: Path) -> Result:
    directory = Path(tempfile.mkdtemp(prefix="target-", dir=tmp))
    pg_port, my_port = free_port(), free_port()
    upstream = pg.dsn(sslmode="require" if target.tls else "disable")
    config = _config(directory, target, upstream, pg_port, mariadb.dsn() if mariadb is not None else None,
                     my_port, certs)
    ports = [pg_port, my_port] if target.mysql else [pg_port]
    with _running(config, target, ports, directory / "dbguard.log") as proc:
        time.sleep(SETTLE_SECONDS)
        idle = Memory.read(proc.pid)
        statements = _pg_traffic(pg_port, rounds, PLAIN_STATEMENTS, masked=False, tls=target.tls)
        if target.mysql:
            statements += _mysql_traffic(my_port, rounds, ("SELECT 1", "SELECT now()"))
        time.sleep(SETTLE_SECONDS)
        after_plain = Memory.read(proc.pid)
        statements += _pg_traffic(pg_port, rounds, MASKED_STATEMENTS, masked=True, tls=target.tls)
        if target.mysql:
            statements += _mysql_traffic(my_port, rounds, MYSQL_STATEMENTS)
        time.sleep(SETTLE_SECONDS)
        after_masked = Memory.read(proc.pid)
    return Result(target.name, idle, after_plain, after_masked, statements)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="connections per identity and listener (5)")
    parser.add_argument("--no-mysql", action="store_true", help="skip the PostgreSQL + MySQL target")
    parser.add_argument("--out", type=Path, help="write the readings as JSON")
    args = parser.parse_args(argv)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    targets = [t for t in TARGETS if not (t.mysql and args.no_mysql)]
    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dbguard-serve-memory-")))
        certs = make_self_signed_cert(tmp / "certs")
        pg = stack.enter_context(ThrowawayPostgres(ssl_cert=certs.cert_path, ssl_key=certs.key_path))
        pg.run_sql_file(SHOP)
        mariadb = None
        if any(t.mysql for t in targets):
            mariadb = stack.enter_context(ThrowawayMariaDB())
            for sql in MYSQL_SEED:
                mariadb.run_sql(sql, "app")
        for target in targets:
            results.append(measure(target, pg, mariadb, certs, args.rounds, tmp))
            console.print(f"measured: {target.name}")
    table = Table(title=f"dbguard serve, memory in MiB: {args.rounds} connections per identity and listener for "
                        "each kind of traffic")
    for column in ("target", "idle", "after plain results", "after masked results", "peak",
                   "children (idle / end)", "total PSS (idle / end)", "statements"):
        table.add_column(column, justify="left" if column == "target" else "right")

    def mib(kib: int) -> str:
        return f"{kib / 1024:.1f}"

    def rss(memory: Memory) -> str:
        return f"{mib(memory.rss)} ({mib(memory.anon)} + {mib(memory.file)})"

    for result in results:
        idle, end = result.idle, result.after_masked
        table.add_row(result.target, rss(idle), rss(result.after_plain), rss(end), mib(end.peak),
                      f"{mib(idle.children_rss)} / {mib(end.children_rss)}",
                      f"{mib(idle.total_pss)} / {mib(end.total_pss)}", str(result.statements))
    console.print(table)
    console.print("VmRSS of the proxy process in MiB (anonymous + file-backed); children: the VmRSS of its child "
                  "processes (the journal appender); total PSS: the proxy and its children, shared pages counted once.")
    if args.out:
        args.out.write_text(json.dumps({"machine": platform.platform(), "python": sys.version,
                                        "cpus": os.cpu_count(), "rounds": args.rounds,
                                        "results": [asdict(r) for r in results]}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
