# bench.masking_fetch — the cost of masking on a large result, and memory under a slow reader.
# Owns: the data set (a `people` table of id, email, name), the three targets (direct; dbguard
# whose masks cover no column of the result; dbguard masking `email`), the two clients (psycopg:
# text format; asyncpg: binary format), alternating runs, and the slow-reader memory check.
# Must not: touch a server it did not start.
"""Fetching a large result through dbguard, masked and not, against a direct connection.

Run from the repository root:  python -m bench.masking_fetch [--rows N] [--repeats R] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import asyncpg
import psycopg
from rich.console import Console
from rich.table import Table

from bench.pgbench_compare import rss_kib
from dbguard.devdb.postgres import ThrowawayPostgres
from tests.integration.harness import ProxyProcess, start_proxy

# The masks of the "unmasked" target cover a column the result does not have: the session
# runs with masking on, and the plan of this result set finds nothing to rewrite.
NO_MASKED_COLUMN: Final = """
masks:
  - id: other-secret
    columns: [secrets.token]
    strategy: full
"""
EMAIL_MASKED: Final = """
masks:
  - id: people-email
    columns: [people.email]
    strategy: email
"""
QUERY: Final = "SELECT id, email, name FROM people"


@dataclass(frozen=True)
class Run:
    client: str
    target: str
    seconds: float
    rows: int


def _psycopg_fetch(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return len(conn.execute(QUERY).fetchall())


def _asyncpg_fetch(dsn: str) -> int:
    async def run() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return len(await conn.fetch(QUERY))
        finally:
            await conn.close()

    return asyncio.run(run())


CLIENTS: Final[dict[str, Callable[[str], int]]] = {"psycopg": _psycopg_fetch, "asyncpg": _asyncpg_fetch}


def seed(server: ThrowawayPostgres, rows: int) -> None:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS people")
        conn.execute("CREATE TABLE people (id int PRIMARY KEY, email text NOT NULL, name text NOT NULL)")
        conn.execute("INSERT INTO people SELECT g, 'person' || g || '@example.com', 'Person number ' || g "
                     "FROM generate_series(1, %s) g", [rows])
        conn.execute("VACUUM ANALYZE people")


def slow_reader_rss(proxy: ProxyProcess, seconds: float) -> tuple[int, int]:
    """Start the full query through the proxy with a client that reads 64 KiB every 50 ms;
    the proxy's RSS (KiB) before, and its peak while the reader lags."""
    before = rss_kib(proxy.proc.pid)
    peak = before

    async def run() -> None:
        nonlocal peak
        conn = await asyncpg.connect(proxy.dsn())
        await conn.close()  # proves the login; the slow read below speaks the protocol itself
        with socket.create_connection((proxy.host, proxy.port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            _startup(sock, proxy)
            body = QUERY.encode() + b"\x00"
            sock.sendall(b"Q" + (len(body) + 4).to_bytes(4, "big") + body)
            deadline = time.monotonic() + seconds
            sock.settimeout(5.0)  # a result smaller than `seconds` of reading ends before the deadline
            while time.monotonic() < deadline:
                try:
                    if not sock.recv(65536):
                        break
                except TimeoutError:
                    break
                peak = max(peak, rss_kib(proxy.proc.pid))
                await asyncio.sleep(0.05)

    asyncio.run(run())
    return before, peak


def _startup(sock: socket.socket, proxy: ProxyProcess) -> None:
    """A cleartext-free login: SCRAM via psycopg's pq is not reachable from a raw socket, so
    the bench identity logs in over the listener's SCRAM with the scramp library."""
    import scramp

    params = b"user\x00copilot\x00database\x00app\x00\x00"
    body = (196608).to_bytes(4, "big") + params
    sock.sendall((len(body) + 4).to_bytes(4, "big") + body)
    client = scramp.ScramClient(["SCRAM-SHA-256"], "copilot", proxy.secrets["copilot"])
    _expect(sock, b"R")
    first = client.get_client_first().encode()
    payload = b"SCRAM-SHA-256\x00" + len(first).to_bytes(4, "big") + first
    sock.sendall(b"p" + (len(payload) + 4).to_bytes(4, "big") + payload)
    client.set_server_first(_expect(sock, b"R")[4:].decode())
    final = client.get_client_final().encode()
    sock.sendall(b"p" + (len(final) + 4).to_bytes(4, "big") + final)
    _expect(sock, b"R")
    while _read_message(sock)[0] != b"Z":
        pass


def _read_message(sock: socket.socket) -> tuple[bytes, bytes]:
    header = _recv_exact(sock, 5)
    return header[:1], _recv_exact(sock, int.from_bytes(header[1:], "big") - 4)


def _expect(sock: socket.socket, kind: bytes) -> bytes:
    msg_type, body = _read_message(sock)
    if msg_type != kind:
        raise RuntimeError(f"expected {kind!r}, got {msg_type!r}: {body[:200]!r}")
    return body


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise RuntimeError("connection closed")
        data += chunk
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slow-seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    console = Console()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="dbguard-mask-bench-") as tmp, ThrowawayPostgres() as server:
        console.print(f"seeding {args.rows:,} rows ...")
        seed(server, args.rows)
        proxies: dict[str, ProxyProcess] = {}
        for name, rules in (("no masked column", NO_MASKED_COLUMN), ("email masked", EMAIL_MASKED)):
            directory = Path(tmp) / name.replace(" ", "-")
            directory.mkdir()
            (directory / "rules.yaml").write_text(rules, encoding="utf-8")
            proxies[name] = start_proxy(directory, server.dsn(sslmode="disable"), log_level="warning",
                                        extra_yaml=f"rules: {directory / 'rules.yaml'}\njournal: {{enabled: false}}\n")
        try:
            targets = {"direct": server.dsn(sslmode="disable"), **{n: p.dsn() for n, p in proxies.items()}}
            for client, fetch in CLIENTS.items():
                for dsn in targets.values():  # warm-up: caches, catalog, first connections
                    fetch(dsn)
                for repeat in range(args.repeats):
                    order = list(targets)[repeat % len(targets):] + list(targets)[: repeat % len(targets)]
                    for target in order:
                        start = time.perf_counter()
                        rows = fetch(targets[target])
                        runs.append(Run(client, target, time.perf_counter() - start, rows))
                        if rows != args.rows:
                            raise SystemExit(f"{client} via {target}: {rows} rows, expected {args.rows}")
            before, peak = slow_reader_rss(proxies["email masked"], args.slow_seconds)
        finally:
            for proxy in proxies.values():
                proxy.stop()
    table = Table(title=f"Fetching {args.rows:,} rows (id, email, name): median of {args.repeats}")
    for column in ("client", "target", "seconds", "rows/s", "ratio to direct"):
        table.add_column(column, justify="right" if column != "target" else "left")
    summary: dict[str, dict[str, float]] = {}
    for client in CLIENTS:
        direct = statistics.median(r.seconds for r in runs if r.client == client and r.target == "direct")
        for target in ("direct", "no masked column", "email masked"):
            seconds = statistics.median(r.seconds for r in runs if r.client == client and r.target == target)
            ratio = direct / seconds
            summary.setdefault(client, {})[target] = ratio
            table.add_row(client, target, f"{seconds:.2f}", f"{args.rows / seconds:,.0f}", f"{ratio:.2f}")
    console.print(table)
    console.print(f"slow reader ({args.slow_seconds:.0f} s at 64 KiB / 50 ms): proxy RSS {before / 1024:.1f} MiB "
                  f"before, {peak / 1024:.1f} MiB peak (+{(peak - before) / 1024:.1f} MiB)")
    if args.out:
        args.out.write_text(json.dumps({
            "machine": platform.platform(), "rows": args.rows, "runs": [asdict(r) for r in runs],
            "ratios": summary, "slow_reader_rss_kib": {"before": before, "peak": peak},
        }, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
