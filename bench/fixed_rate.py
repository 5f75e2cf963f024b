# bench.fixed_rate — the proxy's CPU per transaction at a fixed offered rate (pgbench -R, sysbench
# --rate), which resolves changes of a few percent that the saturated benchmarks' tps ratios
# (bench.pgbench_compare, bench.sysbench_compare: ±0.05 from run to run on a shared 2-core
# machine) cannot. Owns: a throwaway PostgreSQL and/or MariaDB, dbguard's bare relay and
# `dbguard serve` with the sample rules (journal on and off) as real subprocesses, runs that
# alternate the targets, and per run the CPU of the proxy's own process (its event loop) and of
# its children (the journal's appender) per transaction, read from /proc. `--pause-appender`
# stops the appender (SIGSTOP) for the measured run, so that the loop's own journal work is
# measured alone. Must not: judge the ratio goals (at a fixed rate every target reaches
# the same tps), touch a server it did not start, or import the proxy's internals.
"""The proxy's CPU per transaction at a fixed rate: loop and journal appender, per target.

Run from the repository root:  python -m bench.fixed_rate [--engine postgres|mysql|both] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from rich.console import Console
from rich.table import Table

from bench import pgbench_compare as pgb
from bench import sysbench_compare as sb
from dbguard.devdb.mariadb import ThrowawayMariaDB
from dbguard.devdb.postgres import ThrowawayPostgres
from tests.integration.harness import ProxyProcess

console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)

RELAY, DBGUARD, NO_JOURNAL = "relay", "dbguard", "dbguard-nojournal"
TARGETS: Final = (RELAY, DBGUARD, NO_JOURNAL)
# A run whose achieved rate falls short of the offered one by more than this measured a
# saturated proxy: its CPU per transaction is not comparable with the others'.
SHORTFALL: Final = 0.05


@dataclass(frozen=True)
class Workload:
    name: str
    engine: str  # "postgres" or "mysql"
    rate: int  # transactions per second offered (the default; --rate overrides)
    args: tuple[str, ...]  # pgbench's options, or sysbench's script and options


WORKLOADS: Final = (
    Workload("select-simple", "postgres", 5000, ("-S", "-M", "simple")),
    Workload("select-prepared", "postgres", 5000, ("-S", "-M", "prepared")),
    Workload("point-select-ps", "mysql", 3000, ("oltp_point_select",)),
    Workload("point-select-text", "mysql", 3000, ("oltp_point_select", "--db-ps-mode=disable")),
    Workload("read-only-ps", "mysql", 200, ("oltp_read_only",)),
    Workload("read-only-text", "mysql", 200, ("oltp_read_only", "--db-ps-mode=disable")),
)


@dataclass(frozen=True)
class Run:
    workload: str
    target: str
    repeat: int
    offered_tps: int
    tps: float
    transactions: int
    loop_us_per_tx: float
    appender_us_per_tx: float
    appender_paused: bool

    @property
    def saturated(self) -> bool:
        return self.tps < self.offered_tps * (1 - SHORTFALL)


def _cpu(pid: int) -> float:
    """utime + stime of one process (all its threads, not its children), in seconds."""
    fields = pgb._stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / pgb.CLOCK_TICKS


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as file:
            found += [int(child) for child in file.read().split()]
    return found


@contextlib.contextmanager
def _appender_paused(children: Sequence[int], pause: bool) -> Iterator[None]:
    """SIGSTOP the proxy's children for the block (events wait in the segment), SIGCONT after."""
    stopped = []
    try:
        if pause:
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGSTOP)
                    stopped.append(child)
        yield
    finally:
        for child in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGCONT)


def measure(command: list[str], env: dict[str, str] | None, proxy: ProxyProcess, workload: Workload,
            target: str, repeat: int, rate: int, pause: bool,
            parse: re.Pattern[str]) -> Run:
    """One run of `command` (the client at the offered rate) against `proxy`."""
    pid = proxy.proc.pid
    children = _children(pid)
    with _appender_paused(children, pause):
        loop_before = _cpu(pid)
        child_before = sum(_cpu(child) for child in children)
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        loop_cpu = _cpu(pid) - loop_before
        child_cpu = sum(_cpu(child) for child in children) - child_before
    output = result.stdout + result.stderr
    found = parse.search(output)
    if result.returncode != 0 or found is None:
        raise SystemExit(f"{workload.name} through {target} failed (exit {result.returncode}):\n{output[-2000:]}")
    transactions, tps = int(found.group(1)), float(found.group(2))
    if transactions == 0:
        raise SystemExit(f"{workload.name} through {target}: no transaction completed")
    return Run(workload.name, target, repeat, rate, tps, transactions, loop_cpu / transactions * 1e6,
               child_cpu / transactions * 1e6, pause)


# pgbench: "number of transactions actually processed: N" ... "tps = X (without initial connection time)"
_PGBENCH: Final = re.compile(r"actually processed: (\d+)(?:/\d+)?.*?tps = ([\d.]+)", re.S)
_SYSBENCH: Final = re.compile(r"transactions:\s+(\d+)\s+\(([\d.]+) per sec\.\)")


def postgres_runs(plan: Sequence[Workload], args: argparse.Namespace, workdir: Path) -> list[Run]:
    runs: list[Run] = []
    with ThrowawayPostgres(max_connections=pgb.SERVER_MAX_CONNECTIONS, settings=pgb.SERVER_SETTINGS) as server:
        pgbench = pgb.pgbench_binary(server)
        direct = pgb.Target("direct", server.host, server.port, server.app_user, server.app_password,
                            server.app_database, None)
        init = subprocess.run([pgbench, "-i", "-q", "-s", str(args.scale)], env=pgb._libpq_env(direct),
                              capture_output=True, text=True, check=False)
        if init.returncode != 0:
            raise SystemExit(f"pgbench -i failed:\n{init.stdout}\n{init.stderr}")
        with contextlib.ExitStack() as stack:
            proxies: dict[str, ProxyProcess] = {}
            for target in args.targets:
                (workdir / target).mkdir()
                if target == RELAY:
                    proxies[target] = stack.enter_context(
                        pgb.running_relay(server, workdir / target, args.rules, args.identity))
                else:
                    proxies[target] = stack.enter_context(pgb.running_dbguard(
                        server, workdir / target, args.rules, args.identity, journal=target == DBGUARD))
            name = args.identity[0]
            for repeat in range(args.repeats):
                for workload in plan:
                    rate = args.rate or workload.rate
                    for target in _rotated(args.targets, repeat):
                        proxy = proxies[target]
                        env = pgb._libpq_env(pgb.Target(target, proxy.host, proxy.port, name, proxy.secrets[name],
                                                        server.app_database, proxy.proc.pid))
                        base = [pgbench, "--no-vacuum", *workload.args, "-c", str(args.clients), "-j", "2"]
                        subprocess.run([*base, "-T", "1"], env=env, capture_output=True, check=False)  # warm
                        run = measure([*base, "-T", str(args.duration), "-R", str(rate)], env, proxy, workload,
                                      target, repeat, rate, args.pause_appender and target == DBGUARD, _PGBENCH)
                        runs.append(run)
                        _print_run(run)
    return runs


def mysql_runs(plan: Sequence[Workload], args: argparse.Namespace, workdir: Path) -> list[Run]:
    runs: list[Run] = []
    sysbench = sb.sysbench_binary()
    tables = ("--tables=4", "--table-size=10000")
    with ThrowawayMariaDB() as server:
        for statement in sb.SERVER_SETTINGS:
            server.run_sql(statement)
        direct = sb.Target("direct", server.host, server.port, server.app_user, server.app_password,
                           server.app_database, None)
        prepare = subprocess.run(sb.sysbench_command(sysbench, direct, "oltp_read_only", *tables, "--threads=2",
                                                     "prepare"), capture_output=True, text=True, check=False)
        if prepare.returncode != 0:
            raise SystemExit(f"sysbench prepare failed:\n{prepare.stdout}\n{prepare.stderr}")
        with contextlib.ExitStack() as stack:
            proxies: dict[str, ProxyProcess] = {}
            for target in args.targets:
                module = "bench.relay_only" if target == RELAY else "dbguard serve"
                proxies[target] = stack.enter_context(sb.running_proxy(
                    module, server, workdir / target, args.rules, args.identity, journal=target == DBGUARD))
            name, _kind, secret, _roles = args.identity
            for repeat in range(args.repeats):
                for workload in plan:
                    rate = args.rate or workload.rate
                    script, *options = workload.args
                    for target in _rotated(args.targets, repeat):
                        proxy = proxies[target]
                        client = sb.Target(target, proxy.host, proxy.port, name, secret, server.app_database,
                                           proxy.proc.pid)
                        base = [*options, *tables, f"--threads={args.clients}", "--report-interval=0",
                                "--rand-type=uniform"]
                        subprocess.run(sb.sysbench_command(sysbench, client, script, *base, "--time=1", "run"),
                                       capture_output=True, check=False)  # warm
                        command = sb.sysbench_command(sysbench, client, script, *base, f"--time={args.duration}",
                                                      f"--rate={rate}", "run")
                        run = measure(command, None, proxy, workload, target, repeat, rate,
                                      args.pause_appender and target == DBGUARD, _SYSBENCH)
                        runs.append(run)
                        _print_run(run)
    return runs


def _rotated(targets: Sequence[str], repeat: int) -> list[str]:
    """The targets in turn, starting one further each repeat (a drifting machine is shared out)."""
    shift = repeat % len(targets)
    return [*targets[shift:], *targets[:shift]]


def _print_run(run: Run) -> None:
    flag = "  [yellow]saturated: below the offered rate[/]" if run.saturated else ""
    console.print(f"[dim]repeat {run.repeat + 1} {run.workload:<18} {run.target:<18}[/] {run.tps:>8,.0f} tps  "
                  f"loop {run.loop_us_per_tx:7.1f} µs/tx  appender {run.appender_us_per_tx:6.1f} µs/tx{flag}")


@dataclass(frozen=True)
class Summary:
    workload: str
    target: str
    offered_tps: int
    runs: int
    saturated_runs: int
    loop_us_per_tx: float
    appender_us_per_tx: float
    total_us_per_tx: float


def summarise(runs: Sequence[Run]) -> list[Summary]:
    """Medians per workload and target, of the runs that kept up with the offered rate (all
    runs, flagged, when none did)."""
    out: list[Summary] = []
    keys = list(dict.fromkeys((run.workload, run.target) for run in runs))
    for workload, target in keys:
        mine = [run for run in runs if run.workload == workload and run.target == target]
        kept = [run for run in mine if not run.saturated] or mine
        loop = statistics.median(run.loop_us_per_tx for run in kept)
        appender = statistics.median(run.appender_us_per_tx for run in kept)
        total = statistics.median(run.loop_us_per_tx + run.appender_us_per_tx for run in kept)
        out.append(Summary(workload, target, mine[0].offered_tps, len(mine), sum(run.saturated for run in mine),
                           loop, appender, total))
    return out


def render(summaries: Sequence[Summary], paused: bool) -> None:
    table = Table(title="proxy CPU per transaction at a fixed rate (medians)")
    for column in ("workload", "target", "offered tps", "loop µs/tx", "appender µs/tx", "total µs/tx",
                   "saturated runs"):
        table.add_column(column, justify="left" if column in ("workload", "target") else "right")
    for row in summaries:
        table.add_row(row.workload, row.target, f"{row.offered_tps:,}", f"{row.loop_us_per_tx:.1f}",
                      f"{row.appender_us_per_tx:.1f}", f"{row.total_us_per_tx:.1f}",
                      f"{row.saturated_runs}/{row.runs}" if row.saturated_runs else "0")
    console.print(table)
    note = ("the appender was paused during dbguard's runs: its loop column is the event loop's own work"
            if paused else "total = the event loop's process + its children (the journal's appender)")
    console.print(f"[dim]{note}; a saturated run (below the offered rate by more than {SHORTFALL:.0%}) is "
                  "left out of the medians when others kept up; compare CPU per transaction only between "
                  "runs of one invocation[/]")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fixed_rate", description=__doc__)
    parser.add_argument("--engine", choices=("postgres", "mysql", "both"), default="both")
    parser.add_argument("--only", action="append", metavar="WORKLOAD",
                        help="run only this workload (repeatable): " + ", ".join(w.name for w in WORKLOADS))
    parser.add_argument("--target", action="append", dest="targets", choices=TARGETS, metavar="TARGET",
                        help="measure only this target (repeatable): " + ", ".join(TARGETS))
    parser.add_argument("--rate", type=int, help="offered tps for every workload (default: each workload's own)")
    parser.add_argument("--duration", type=int, default=8, help="seconds per run (default 8)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per target and workload (default 3)")
    parser.add_argument("--clients", type=int, default=8, help="pgbench -c / sysbench --threads (default 8)")
    parser.add_argument("--scale", type=int, default=5, help="pgbench -i -s (default 5)")
    parser.add_argument("--pause-appender", action="store_true",
                        help="SIGSTOP dbguard's journal appender during its runs: the loop's own cost")
    parser.add_argument("--rules", type=Path, default=pgb.DEFAULT_RULES, metavar="PATH",
                        help="the policy dbguard enforces (default: the repository's rules/)")
    parser.add_argument("--identity", type=pgb.parse_identity, default=pgb.BENCH_IDENTITY, metavar="KIND:ROLES",
                        help="kind and roles the clients log in with (default service:app)")
    parser.add_argument("--out", type=Path, metavar="FILE.json", help="write every run and the medians as JSON")
    args = parser.parse_args(argv)
    args.targets = list(dict.fromkeys(args.targets or TARGETS))
    if args.rate is not None and args.rate < 1:
        parser.error("--rate must be at least 1")
    if args.duration < 1 or args.repeats < 1 or args.clients < 1:
        parser.error("--duration, --repeats and --clients must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    engines = ("postgres", "mysql") if args.engine == "both" else (args.engine,)
    plan = [w for w in WORKLOADS if w.engine in engines and (not args.only or w.name in args.only)]
    if not plan:
        raise SystemExit(f"no workload matches --engine {args.engine} and --only {args.only}")
    started = time.monotonic()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="dbguard-fixed-rate-") as temp:
        workdir = Path(temp)
        if any(w.engine == "postgres" for w in plan):
            (workdir / "pg").mkdir()
            runs += postgres_runs([w for w in plan if w.engine == "postgres"], args, workdir / "pg")
        if any(w.engine == "mysql" for w in plan):
            (workdir / "my").mkdir()
            runs += mysql_runs([w for w in plan if w.engine == "mysql"], args, workdir / "my")
    summaries = summarise(runs)
    render(summaries, args.pause_appender)
    console.print(f"[dim]finished in {time.monotonic() - started:.0f} s[/]")
    if args.out is not None:
        args.out.write_text(json.dumps({
            "settings": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
                         if key != "out"},
            "summary": [asdict(row) for row in summaries],
            "runs": [asdict(run) for run in runs],
        }, indent=2) + "\n", encoding="utf-8")
        console.print(f"raw runs written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
