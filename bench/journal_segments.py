# bench.journal_segments — the local journal's two halves, in process: what the event loop spends
# per statement (a session's statement and outcome events built, encoded and framed as segment
# records: `SessionJournal` and `LoopJournal`'s record builder) and what the appender spends per
# event (a segment of such records chained and inserted into a fresh sqlite store in the
# appender's batches: `segments.append_segment`). CPU time in one process, so the numbers do not
# depend on what else the machine runs; the same work costs 2-3x as much inside a running proxy
# (docs/performance.md, "The journal's cost"). Must not: touch a file it did not create.
"""The local journal's cost per statement on the event loop and per event in the appender.

Run from the repository root:  python -m bench.journal_segments [--statements N] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from rich.console import Console
from rich.table import Table

from dbguard.journal import ChainHasher
from dbguard.journal.appender import MAX_BATCH, READ_BYTES
from dbguard.journal.segments import append_segment
from dbguard.journal.store_sqlite import SqliteJournalStore
from dbguard.model import Action, Decision, StatementInfo, StatementKind
from dbguard.runtime.loop_journal import record_bytes
from dbguard.session.journal import SessionJournal

KEY: Final = b"bench-key-bench-key-bench-key-00"
SESSIONS: Final = 8  # pgbench -c 8
# What the gate hands the journal for pgbench -S: one cached decision per statement shape.
DECISION: Final = Decision(Action.ALLOW, analysis=(StatementInfo(
    text="SELECT abalance FROM pgbench_accounts WHERE aid = $1", command="SELECT",
    kinds=frozenset({StatementKind.SELECT}), reads=frozenset({"public.pgbench_accounts"})),))


@dataclass(frozen=True)
class Result:
    part: str
    unit: str
    count: int
    cpu_us_each: float


def _journals() -> list[SessionJournal]:
    return [SessionJournal(f"3f2a9c0e-1111-2222-3333-{n:012d}") for n in range(SESSIONS)]


def _statement(journal: SessionJournal, n: int, parameters: bool) -> list[bytes]:
    """One statement and its outcome as the hot path records them; the segment records."""
    if parameters:
        journal.statement(b"SELECT abalance FROM pgbench_accounts WHERE aid = $1;", DECISION,
                          parameters=(str(n),))
    else:
        journal.statement(b"SELECT abalance FROM pgbench_accounts WHERE aid = %d;" % n, DECISION, absorbs=True)
    journal.client_cycle_end()
    records = [record_bytes(event) for event in journal.take()[0]]
    journal.result(1)
    journal.server_cycle_end()
    records += [record_bytes(event) for event in journal.take()[0]]
    return records


def loop_cost(statements: int, parameters: bool) -> Result:
    """CPU per statement on the loop: both events built, encoded and framed (best of 3)."""
    best = float("inf")
    for _ in range(3):
        journals = _journals()
        started = time.process_time()
        for n in range(statements):
            _statement(journals[n % SESSIONS], n, parameters)
        best = min(best, time.process_time() - started)
    part = "loop: a prepared execution (one parameter)" if parameters else "loop: a simple query"
    return Result(part, "statement (2 events)", statements, best / statements * 1e6)


def appender_cost(statements: int, key: bytes | None, directory: Path) -> Result:
    """CPU per event appending a segment of `statements` statement/outcome pairs to a new store."""
    journals = _journals()
    segment = directory / f"bench-{'keyed' if key else 'plain'}.seg"
    segment.write_bytes(b"".join(record for n in range(statements)
                                 for record in _statement(journals[n % SESSIONS], n, False)))
    store = SqliteJournalStore(directory / f"bench-{'keyed' if key else 'plain'}.db", fsync=False)
    hasher = ChainHasher(key)
    store.check_hasher(hasher)
    size, position, events = segment.stat().st_size, 0, 0
    started = time.process_time()
    while position < size:  # in the appender's slices and batches
        appended, position = append_segment(store, hasher, segment, position, min(size, position + READ_BYTES),
                                            MAX_BATCH)
        events += appended
    cpu = time.process_time() - started
    store.close()
    chain = "HMAC-SHA256" if key else "SHA-256"
    return Result(f"appender: sqlite, {chain} chain", "event", events, cpu / events * 1e6)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.journal_segments", description=__doc__)
    parser.add_argument("--statements", type=int, default=50_000, help="statements per measurement (50,000)")
    parser.add_argument("--out", type=Path, help="write the results as JSON")
    args = parser.parse_args(argv)
    console = Console(highlight=False)
    with tempfile.TemporaryDirectory(prefix="dbguard-bench-") as temp:
        measures: list[Callable[[], Result]] = [
            lambda: loop_cost(args.statements, parameters=False),
            lambda: loop_cost(args.statements, parameters=True),
            lambda: appender_cost(args.statements, None, Path(temp)),
            lambda: appender_cost(args.statements, KEY, Path(temp)),
        ]
        results = [measure() for measure in measures]
    table = Table(title=f"the local journal in process ({args.statements:,} statements, {SESSIONS} sessions)")
    for column in ("part", "per", "CPU µs each"):
        table.add_column(column, justify="right" if column.startswith("CPU") else "left")
    for result in results:
        table.add_row(result.part, result.unit, f"{result.cpu_us_each:.2f}")
    console.print(table)
    console.print("[dim]CPU time of this process; inside a running proxy the same work costs 2-3x as much "
                  "(docs/performance.md, \"The journal's cost\")[/]")
    if args.out is not None:
        args.out.write_text(json.dumps({"python": sys.version, "machine": platform.machine(),
                                        "results": [asdict(r) for r in results]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
