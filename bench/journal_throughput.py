# bench.journal_throughput — how many journal events per second group commit sustains.
# Owns: the workload (a realistic statement event per append, each submitter waiting for its
# event to be durable before the next, as a session waits before forwarding), the store setups
# (a sqlite file in a temporary directory; a throwaway PostgreSQL from dbguard.devdb), the
# concurrency sweep, and the rich table / JSON output. Submitters are asyncio tasks on one
# event loop calling `JournalWriter.append`, exactly as sessions will. Must not: touch a server
# or file it did not create.
"""Journal throughput with group commit, sqlite and PostgreSQL stores, several concurrency levels.

Run from the repository root:  python -m bench.journal_throughput [--seconds S] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Final

from rich.console import Console
from rich.table import Table

from dbguard.journal import ChainHasher, JournalStore, JournalWriter, StatementEvent, now_us
from dbguard.journal.store_postgres import PostgresJournalStore
from dbguard.journal.store_sqlite import SqliteJournalStore

DEFAULT_CONCURRENCY: Final = (1, 8, 64)
KEY: Final = b"bench-key-bench-key-bench-key-00"
TEXT: Final = "SELECT abalance FROM pgbench_accounts WHERE aid = 4711"


@dataclass(frozen=True)
class Result:
    store: str
    concurrency: int
    events: int
    seconds: float
    events_per_second: float
    transactions: int
    mean_batch: float
    p50_ms: float
    p99_ms: float
    max_ms: float


def _event(session: int, seq: int) -> StatementEvent:
    return StatementEvent(f"bench-{session}", now_us(), seq, TEXT, "allow", kinds=("select",),
                          reads=("public.pgbench_accounts",))


async def _drive(writer: JournalWriter, concurrency: int, seconds: float) -> list[float]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def submitter(n: int) -> None:
        seq = 0
        while time.perf_counter() < deadline:
            seq += 1
            started = time.perf_counter()
            await writer.append(_event(n, seq))
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(submitter(n) for n in range(concurrency)))
    return latencies


def run_one(name: str, factory: Callable[[], JournalStore], concurrency: int, seconds: float,
            hasher: ChainHasher) -> Result:
    writer = JournalWriter(factory, hasher)
    try:
        started = time.perf_counter()
        latencies = asyncio.run(_drive(writer, concurrency, seconds))
        elapsed = time.perf_counter() - started
    finally:
        writer.close()
    stats = writer.stats
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return Result(name, concurrency, stats.events, elapsed, stats.events / elapsed, stats.transactions,
                  stats.events / max(1, stats.transactions), quantiles[49] * 1000, quantiles[98] * 1000,
                  max(latencies, default=0.0) * 1000)


def best_of(runs: list[Result]) -> Result:
    """The median run by throughput (runs on a shared machine are noisy)."""
    return sorted(runs, key=lambda r: r.events_per_second)[len(runs) // 2]


@contextmanager
def _postgres() -> Iterator[str]:
    from dbguard.devdb import ThrowawayPostgres

    with ThrowawayPostgres() as server:
        server.start()
        yield server.dsn()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each run (default 3)")
    parser.add_argument("--concurrency", type=int, action="append",
                        help="concurrent submitters (repeatable; default 1, 8, 64)")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), action="append",
                        help="which stores (repeatable; default both)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell; the median is shown (default 3)")
    parser.add_argument("--keyed", action="store_true", help="HMAC-SHA256 chain instead of SHA-256")
    parser.add_argument("--out", metavar="FILE.json", help="write the results as JSON")
    args = parser.parse_args(argv)
    levels = tuple(args.concurrency or DEFAULT_CONCURRENCY)
    stores = tuple(args.store or ("sqlite", "postgresql"))
    hasher = ChainHasher(KEY if args.keyed else None)
    results: list[Result] = []
    all_runs: list[Result] = []
    console = Console(highlight=False)
    with tempfile.TemporaryDirectory(prefix="dbguard-journal-bench-") as tmp:
        if "sqlite" in stores:
            for level in levels:
                runs = []
                for repeat in range(args.repeats):
                    path = Path(tmp) / f"journal-{level}-{repeat}.db"
                    runs.append(run_one("sqlite", partial(SqliteJournalStore, path), level, args.seconds, hasher))
                    all_runs.append(runs[-1])
                results.append(best_of(runs))
                console.print(f"sqlite c={level}: {results[-1].events_per_second:,.0f} events/s", style="dim")
        if "postgresql" in stores:
            with _postgres() as dsn:
                for level in levels:
                    runs = []
                    for _ in range(args.repeats):
                        runs.append(run_one("postgresql", partial(PostgresJournalStore, dsn), level, args.seconds,
                                            hasher))
                        all_runs.append(runs[-1])
                    results.append(best_of(runs))
                    console.print(f"postgresql c={level}: {results[-1].events_per_second:,.0f} events/s",
                                  style="dim")
    table = Table(title=f"journal throughput, group commit ({hasher.algorithm.value}, {args.seconds:g} s runs, "
                        f"median of {args.repeats})")
    for column in ("store", "submitters", "events/s", "commits", "events/commit", "p50 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="left" if column == "store" else "right")
    for r in results:
        table.add_row(r.store, str(r.concurrency), f"{r.events_per_second:,.0f}", f"{r.transactions:,}",
                      f"{r.mean_batch:.1f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.max_ms:.1f}")
    console.print(table)
    if args.out:
        Path(args.out).write_text(json.dumps({
            "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                        "cpus": os.cpu_count()},
            "algorithm": hasher.algorithm.value,
            "seconds": args.seconds,
            "repeats": args.repeats,
            "results": [asdict(r) for r in results],
            "runs": [asdict(r) for r in all_runs],
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
