# bench.sysbench_compare — sysbench OLTP throughput through dbguard's MySQL listener: direct vs a
# bare asyncio byte pipe vs dbguard's bare relay vs dbguard with the sample policy.
# Owns: a throwaway MariaDB for the run, the sysbench tables (prepared directly), `dbguard serve`
# with a `protocol: mysql` listener and the repository's sample rules (a real subprocess, as users
# run it), the same configuration run by `bench.relay_only` (allow-all gate: the relay's own cost),
# `bench.byte_pipe` (no protocol at all: the floor of any asyncio proxy here); the workloads, the
# alternating run order, CPU readings, the tables and the JSON file of raw runs. Must not touch the
# machine's own database services nor import the proxy's internals: it measures what
# `dbguard serve` does.
"""Compare sysbench oltp_point_select / oltp_read_only through dbguard's MySQL listener (sample
policy) with sysbench direct, through a bare byte pipe and through dbguard's bare relay, with
prepared statements (sysbench's default) and with text queries (--db-ps-mode=disable).

Run from the repository root:  python -m bench.sysbench_compare [--quick] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from rich.console import Console, JustifyMethod
from rich.markup import escape
from rich.table import Table

from bench.pgbench_compare import (
    BenchIdentity,
    busy_seconds,
    children_cpu_seconds,
    describe_identity,
    parse_identity,
    process_cpu_seconds,
    steal_seconds,
)
from dbguard.devdb.mariadb import ThrowawayMariaDB
from tests.integration.harness import REPO_ROOT, ProxyProcess, free_port, wait_for_port

console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)

DIRECT, PIPE, RELAY, DBGUARD = "direct", "pipe", "relay", "dbguard"
# dbguard with the same policy and `journal: {enabled: false}`: the baseline of the journal's cost.
NO_JOURNAL = "dbguard-nojournal"
DEFAULT_RULES: Final = REPO_ROOT / "rules"
# sysbench plays an application's service account, as pgbench does in bench.pgbench_compare (the
# agent rules would hold oltp's writes); the pre-flight check proves the policy allows every
# workload's statements for this identity before anything is measured.
BENCH_IDENTITY: Final = ("pgbench", "service", "pgbench-secret", ("app",))
PROXY_LOG_LEVEL: Final = "warning"
SYSBENCH_ENV: Final = "DBGUARD_SYSBENCH"
# Server options beyond ThrowawayMariaDB's: room for the tables in memory, no fsync per commit.
SERVER_SETTINGS: Final = (
    "SET GLOBAL innodb_flush_log_at_trx_commit = 2",
)


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    script: str  # sysbench's built-in Lua test
    args: tuple[str, ...]


@dataclass(frozen=True)
class Goal:
    text: str
    minimum_ratio: float


# The targets, as ratios of direct's throughput (tps) for dbguard with the sample policy.
GOALS: Final[dict[str, Goal]] = {
    "point-select-ps": Goal("≥ 0.45", 0.45),
    "read-only-ps": Goal("≥ 0.55", 0.55),
    "point-select-text": Goal("≥ 0.35", 0.35),
}

WORKLOADS: Final = (
    Workload("point-select-ps", "point_select prepared", "oltp_point_select", ()),
    Workload("point-select-text", "point_select text", "oltp_point_select", ("--db-ps-mode=disable",)),
    Workload("read-only-ps", "read_only prepared", "oltp_read_only", ()),
    Workload("read-only-text", "read_only text", "oltp_read_only", ("--db-ps-mode=disable",)),
)


@dataclass
class Target:
    name: str
    host: str
    port: int
    user: str
    password: str
    database: str
    pid: int | None  # the proxy process whose CPU is read; None for direct


@dataclass
class Run:
    repeat: int
    workload: str
    target: str
    ok: bool
    tps: float | None
    qps: float | None
    latency_ms: float | None
    transactions: int | None
    errors: int | None  # sysbench's "ignored errors"
    reconnects: int | None
    wall_s: float
    proxy_cpu_s: float | None
    server_cpu_s: float | None
    sysbench_cpu_s: float
    steal_s: float
    others_cpu_s: float | None = None
    error: str | None = None

    def per_tx_us(self, seconds: float | None) -> float | None:
        if seconds is None or not self.transactions:
            return None
        return seconds / self.transactions * 1e6


@dataclass
class Summary:
    workload: str
    target: str
    runs: int
    failures: int
    tps: float | None
    tps_min: float | None
    tps_max: float | None
    latency_ms: float | None
    proxy_cpu_us_per_tx: float | None
    server_cpu_us_per_tx: float | None
    sysbench_cpu_us_per_tx: float | None
    ratio_vs_direct: float | None = None  # of the medians
    ratio_vs_direct_paired: float | None = None  # median over repeats of the same ratio
    ratio_vs_relay: float | None = None
    ratio_vs_pipe: float | None = None
    goal: str | None = None
    goal_met: bool | None = None


@dataclass
class Settings:
    tables: int
    table_size: int
    duration: int
    repeats: int
    threads: int
    quick: bool
    rules: str = ""
    identity: str = ""
    workloads: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- sysbench

_TPS = re.compile(r"transactions:\s+(\d+)\s+\(([\d.]+) per sec\.\)")
_QPS = re.compile(r"queries:\s+\d+\s+\(([\d.]+) per sec\.\)")
_ERRORS = re.compile(r"ignored errors:\s+(\d+)")
_RECONNECTS = re.compile(r"reconnects:\s+(\d+)")
_LATENCY = re.compile(r"avg:\s+([\d.]+)")


def sysbench_binary() -> str:
    found = os.environ.get(SYSBENCH_ENV) or shutil.which("sysbench")
    if found is None:
        raise SystemExit("sysbench not found: apt-get install sysbench (or set $DBGUARD_SYSBENCH)")
    return found


def sysbench_command(sysbench: str, target: Target, script: str, *args: str) -> list[str]:
    return [sysbench, script, "--db-driver=mysql", f"--mysql-host={target.host}",
            f"--mysql-port={target.port}", f"--mysql-user={target.user}",
            f"--mysql-password={target.password}", f"--mysql-db={target.database}",
            "--mysql-ssl=off", *args]


def _error_lines(output: str) -> list[str]:
    lines = output.strip().splitlines()
    errors = [line for line in lines if "error" in line.lower() or "fatal" in line.lower()]
    return (errors or lines)[-6:]


def run_sysbench(sysbench: str, target: Target, workload: Workload, settings: Settings, *,
                 repeat: int, server_pid: int, duration: int | None = None) -> Run:
    seconds = duration if duration is not None else settings.duration
    command = sysbench_command(
        sysbench, target, workload.script, *workload.args, f"--tables={settings.tables}",
        f"--table-size={settings.table_size}", f"--threads={settings.threads}", f"--time={seconds}",
        "--report-interval=0", "--rand-type=uniform", "run")
    proxy_before = None
    if target.pid is not None:
        with contextlib.suppress(OSError):
            proxy_before = process_cpu_seconds(target.pid)
    server_before = process_cpu_seconds(server_pid)
    own_before = children_cpu_seconds()
    steal_before, busy_before = steal_seconds(), busy_seconds()
    started = time.monotonic()
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120, check=False)
        output, code = result.stdout + result.stderr, result.returncode
    except subprocess.TimeoutExpired as exc:
        output, code = f"sysbench timed out: {exc}", -1
    wall = time.monotonic() - started
    proxy_cpu = None
    if target.pid is not None and proxy_before is not None:
        with contextlib.suppress(OSError):
            proxy_cpu = process_cpu_seconds(target.pid) - proxy_before
    server_cpu = process_cpu_seconds(server_pid) - server_before
    own_cpu = children_cpu_seconds() - own_before
    steal = steal_seconds() - steal_before
    others = busy_seconds() - busy_before - server_cpu - own_cpu - (proxy_cpu or 0.0)

    def number(pattern: re.Pattern[str], group: int = 1) -> float | None:
        found = pattern.search(output)
        return float(found.group(group)) if found else None

    transactions, tps = number(_TPS), number(_TPS, 2)
    errors, reconnects = number(_ERRORS), number(_RECONNECTS)
    # An error or a reconnect fails the run: the benchmark measures what the policy allows.
    ok = code == 0 and bool(transactions) and tps is not None and not errors and not reconnects
    return Run(
        repeat=repeat, workload=workload.name, target=target.name, ok=ok,
        tps=tps if ok else None, qps=number(_QPS) if ok else None,
        latency_ms=number(_LATENCY) if ok else None,
        transactions=int(transactions) if transactions is not None else None,
        errors=int(errors) if errors is not None else None,
        reconnects=int(reconnects) if reconnects is not None else None,
        wall_s=round(wall, 3), proxy_cpu_s=proxy_cpu, server_cpu_s=server_cpu, sysbench_cpu_s=own_cpu,
        steal_s=round(steal, 2), others_cpu_s=round(others, 2),
        error=None if ok else f"sysbench exit {code}: " + " | ".join(_error_lines(output)),
    )


# ----------------------------------------------------------------------------- proxies


def write_mysql_config(directory: Path, upstream_dsn: str, port: int, rules: Path,
                       identity: BenchIdentity, journal: bool = True) -> Path:
    name, kind, secret, roles = identity
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
        f"rules: {json.dumps(str(rules.resolve()))}",
        *([] if journal else ["journal: {enabled: false}"]),
    ]) + "\n"
    path = directory / "dbguard.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@contextlib.contextmanager
def running_process(directory: Path, command: list[str], port: int, secrets: dict[str, str],
                    what: str, config: Path | None = None) -> Iterator[ProxyProcess]:
    log_path = directory / "process.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    process = ProxyProcess(config or directory, port, proc, log_path, secrets)
    try:
        try:
            wait_for_port("127.0.0.1", port, 20.0, proc)
        except (RuntimeError, TimeoutError) as exc:
            raise SystemExit(f"{what} did not start: {exc}\n{process.log()}") from exc
        yield process
    finally:
        process.stop()


@contextlib.contextmanager
def running_proxy(module: str, server: ThrowawayMariaDB, directory: Path, rules: Path,
                  identity: BenchIdentity, journal: bool = True) -> Iterator[ProxyProcess]:
    """`python -m dbguard serve` or `python -m bench.relay_only` with a mysql listener (the
    journal in the default sqlite store next to the configuration, or off)."""
    directory.mkdir()
    port = free_port()
    config = write_mysql_config(directory, server.dsn(), port, rules, identity, journal)
    command = [sys.executable, "-m", *module.split(), "-c", str(config), "--log-level", PROXY_LOG_LEVEL]
    with running_process(directory, command, port, {identity[0]: identity[2]}, module, config) as proc:
        yield proc


@contextlib.contextmanager
def running_pipe(server: ThrowawayMariaDB, directory: Path) -> Iterator[ProxyProcess]:
    directory.mkdir()
    port = free_port()
    command = [sys.executable, "-m", "bench.byte_pipe", "--listen", f"127.0.0.1:{port}",
               "--upstream", f"{server.host}:{server.port}"]
    with running_process(directory, command, port, {}, "bench.byte_pipe") as proc:
        yield proc


# ----------------------------------------------------------------------------- summary


def _median(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def summarise(runs: list[Run], plan: Sequence[Workload], targets: list[str]) -> list[Summary]:
    summaries: list[Summary] = []
    for workload in plan:
        rows: dict[str, Summary] = {}
        for target in targets:
            mine = [run for run in runs if run.workload == workload.name and run.target == target]
            good = [run for run in mine if run.ok]
            rows[target] = Summary(
                workload=workload.name, target=target, runs=len(mine), failures=len(mine) - len(good),
                tps=_median([run.tps for run in good]),
                tps_min=min((run.tps for run in good if run.tps is not None), default=None),
                tps_max=max((run.tps for run in good if run.tps is not None), default=None),
                latency_ms=_median([run.latency_ms for run in good]),
                proxy_cpu_us_per_tx=_median([run.per_tx_us(run.proxy_cpu_s) for run in good]),
                server_cpu_us_per_tx=_median([run.per_tx_us(run.server_cpu_s) for run in good]),
                sysbench_cpu_us_per_tx=_median([run.per_tx_us(run.sysbench_cpu_s) for run in good]),
            )
        direct_tps = {run.repeat: run.tps for run in runs
                      if run.workload == workload.name and run.target == DIRECT and run.ok and run.tps}
        for target, row in rows.items():
            for base, attribute in ((DIRECT, "ratio_vs_direct"), (RELAY, "ratio_vs_relay"),
                                    (PIPE, "ratio_vs_pipe")):
                other = rows.get(base)
                if target != base and other is not None and other.tps and row.tps is not None:
                    setattr(row, attribute, row.tps / other.tps)
            paired: list[float | None] = []
            for run in runs:
                base_tps = direct_tps.get(run.repeat)
                if run.workload == workload.name and run.target == target and run.tps is not None and base_tps:
                    paired.append(run.tps / base_tps)
            if target != DIRECT:
                row.ratio_vs_direct_paired = _median(paired)
            goal = GOALS.get(workload.name)
            if goal is not None and target == DBGUARD:
                row.goal = goal.text
                row.goal_met = None if row.ratio_vs_direct is None else row.ratio_vs_direct >= goal.minimum_ratio
            summaries.append(row)
    return summaries


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _spread(row: Summary) -> str:
    if row.tps is None or row.tps_min is None or row.tps_max is None or row.runs < 2:
        return "—"
    return f"±{(row.tps_max - row.tps_min) / row.tps / 2:.0%}"


def render(summaries: list[Summary], plan: Sequence[Workload], settings: Settings) -> None:
    titles = {workload.name: workload.title for workload in plan}
    table = Table(
        title=(f"sysbench 1.0 through the MySQL listener, {settings.tables} tables x "
               f"{settings.table_size} rows, {settings.duration}s x {settings.repeats} repeats, "
               f"--threads {settings.threads} (medians)"),
        title_justify="left",
    )
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("workload", "left"), ("target", "left"), ("tps", "right"), ("spread", "right"),
        ("vs direct", "right"), ("paired", "right"), ("vs pipe", "right"), ("vs relay", "right"),
        ("goal (dbguard)", "left"), ("latency ms", "right"), ("proxy µs/tx", "right"),
        ("server µs/tx", "right"),
    )
    for header, justify in columns:
        table.add_column(header, justify=justify, no_wrap=True)
    previous = ""
    for row in summaries:
        if previous and row.workload != previous:
            table.add_section()
        previous = row.workload
        failed = f" [red]({row.failures} failed runs)[/]" if row.failures else ""
        verdict = ""
        if row.goal is not None:
            mark = {True: "[green]✓[/]", False: "[red]✗[/]", None: "[yellow]?[/]"}[row.goal_met]
            verdict = f"{mark} {row.goal}"
        table.add_row(
            titles[row.workload], row.target + failed, _fmt(row.tps, ",.0f"), _spread(row),
            _fmt(row.ratio_vs_direct, ".2f"), _fmt(row.ratio_vs_direct_paired, ".2f"),
            _fmt(row.ratio_vs_pipe, ".2f"), _fmt(row.ratio_vs_relay, ".2f"), verdict,
            _fmt(row.latency_ms, ".3f"), _fmt(row.proxy_cpu_us_per_tx, ".1f"),
            _fmt(row.server_cpu_us_per_tx, ".1f"),
        )
    console.print(table)
    console.print(escape(
        f"[dim]dbguard enforces {settings.rules}, sysbench logs in as {settings.identity}; pipe = "
        "bench.byte_pipe (bytes only), relay = dbguard's listener with the allow-all gate; paired = "
        "median over repeats of tps / direct's tps in the same repeat[/]"))


# ----------------------------------------------------------------------------- main


def _print_run(run: Run, workload: Workload, number: int, total: int) -> None:
    head = f"[dim]{number:3d}/{total} repeat {run.repeat + 1} {workload.title:<22} {run.target:<8}[/] "
    if not run.ok or run.tps is None:
        console.print(head + f"[red]failed: {escape(run.error or '')}[/]")
        return
    per_tx = run.per_tx_us(run.proxy_cpu_s)
    proxy = f"  proxy {per_tx:6.1f} µs/tx" if per_tx is not None else ""
    steal = f"  [yellow]steal {run.steal_s:.2f} s[/]" if run.steal_s >= 0.05 else ""
    if run.others_cpu_s is not None and run.others_cpu_s >= 0.1 * run.wall_s:
        # Other processes on the machine took CPU during the run: its numbers are disturbed.
        steal += f"  [yellow]others {run.others_cpu_s:.1f} s CPU[/]"
    console.print(head + f"{run.tps:>9,.0f} tps  {run.latency_ms or 0:.3f} ms{proxy}{steal}")


def check_policy_allows(sysbench: str, target: Target, plan: Sequence[Workload], settings: Settings) -> None:
    """A few transactions of every workload through dbguard before measuring: a policy that
    refuses any statement would make the benchmark measure refusals."""
    for workload in plan:
        command = sysbench_command(
            sysbench, target, workload.script, *workload.args, f"--tables={settings.tables}",
            f"--table-size={settings.table_size}", "--threads=1", "--events=20", "--time=0", "run")
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        output = result.stdout + result.stderr
        errors = _ERRORS.search(output)
        if result.returncode != 0 or errors is None or int(errors.group(1)) > 0:
            raise SystemExit(
                f"the policy in {settings.rules} does not let {settings.identity} run sysbench's "
                f"{workload.title} through dbguard: {' | '.join(_error_lines(output))}\n"
                "choose another identity with --identity KIND:ROLES (or other rules with --rules)")


def machine_info(sysbench: str, server: ThrowawayMariaDB) -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    version = subprocess.run([sysbench, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mariadb": str(server.run_sql("SELECT VERSION()")[0][0]),
        "sysbench": version,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sysbench_compare",
        description=("sysbench oltp_point_select / oltp_read_only, prepared and text, direct vs through a "
                     "byte pipe, dbguard's bare relay and dbguard with the sample policy (MySQL listener)."),
    )
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 repeat (~1 minute)")
    parser.add_argument("--duration", type=int, help="seconds per sysbench run (default 5; quick 3)")
    parser.add_argument("--repeats", type=int, help="repeats of every run (default 3; quick 1)")
    parser.add_argument("--threads", type=int, default=8, help="sysbench --threads (default 8)")
    parser.add_argument("--tables", type=int, default=4, help="sysbench --tables (default 4)")
    parser.add_argument("--table-size", type=int, default=10_000, help="rows per table (default 10000)")
    parser.add_argument("--only", action="append", metavar="WORKLOAD",
                        help="run only this workload (repeatable): " + ", ".join(w.name for w in WORKLOADS))
    parser.add_argument("--no-pipe", action="store_true", help="skip the bare byte pipe")
    parser.add_argument("--no-relay", action="store_true", help="skip dbguard's bare relay")
    parser.add_argument("--no-journal-baseline", action="store_true",
                        help="skip dbguard with the journal off (no journal cost is reported then)")
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES, metavar="PATH",
                        help="the policy dbguard enforces (default: the repository's rules/)")
    parser.add_argument("--identity", type=parse_identity, default=BENCH_IDENTITY, metavar="KIND:ROLES",
                        help="kind and roles sysbench logs in with through dbguard (default service:app)")
    parser.add_argument("--out", type=Path, metavar="FILE.json", help="write every raw run as JSON")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quick = bool(args.quick)
    rules: Path = args.rules
    identity: BenchIdentity = args.identity
    settings = Settings(
        tables=args.tables, table_size=args.table_size,
        duration=args.duration or (3 if quick else 5), repeats=args.repeats or (1 if quick else 3),
        threads=args.threads, quick=quick, rules=str(rules), identity=describe_identity(identity),
    )
    if not (rules.is_file() or (rules.is_dir() and any(rules.glob("*.y*ml")))):
        raise SystemExit(f"no rules at {rules}: give a rules file or folder with --rules")
    plan = [workload for workload in WORKLOADS if not args.only or workload.name in args.only]
    if not plan:
        raise SystemExit(f"no workload matches {args.only}")
    settings.workloads = [workload.name for workload in plan]
    sysbench = sysbench_binary()
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        console.print(f"[bold]starting a throwaway MariaDB, sysbench prepare ({settings.tables} tables x "
                      f"{settings.table_size} rows)[/]")
        server = stack.enter_context(ThrowawayMariaDB())
        for statement in SERVER_SETTINGS:
            server.run_sql(statement)
        assert server.pid is not None
        direct = Target(DIRECT, server.host, server.port, server.app_user, server.app_password,
                        server.app_database, None)
        prepare = subprocess.run(
            sysbench_command(sysbench, direct, "oltp_read_only", f"--tables={settings.tables}",
                             f"--table-size={settings.table_size}", "--threads=2", "prepare"),
            capture_output=True, text=True, check=False)
        if prepare.returncode != 0:
            raise SystemExit(f"sysbench prepare failed:\n{prepare.stdout}\n{prepare.stderr}")
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dbguard-sysbench-")))
        name, _kind, secret, _roles = identity
        targets = [direct]
        if not args.no_pipe:
            pipe = stack.enter_context(running_pipe(server, workdir / "pipe"))
            targets.append(Target(PIPE, pipe.host, pipe.port, server.app_user, server.app_password,
                                  server.app_database, pipe.proc.pid))
        if not args.no_relay:
            relay = stack.enter_context(running_proxy("bench.relay_only", server, workdir / "relay",
                                                      rules, identity))
            targets.append(Target(RELAY, relay.host, relay.port, name, secret, server.app_database,
                                  relay.proc.pid))
        proxy = stack.enter_context(running_proxy("dbguard serve", server, workdir / "dbguard", rules, identity))
        guarded = Target(DBGUARD, proxy.host, proxy.port, name, secret, server.app_database, proxy.proc.pid)
        targets.append(guarded)
        if not args.no_journal_baseline:
            unjournaled = stack.enter_context(running_proxy("dbguard serve", server, workdir / "nojournal",
                                                            rules, identity, journal=False))
            targets.append(Target(NO_JOURNAL, unjournaled.host, unjournaled.port, name, secret,
                                  server.app_database, unjournaled.proc.pid))
        console.print("[bold]" + escape(f"dbguard enforces {rules}; sysbench logs in as "
                                        f"{settings.identity}; checking that the policy allows every "
                                        "workload's statements") + "[/]")
        check_policy_allows(sysbench, guarded, plan, settings)
        info = machine_info(sysbench, server)
        console.print(f"[dim]{info['cpus']} CPUs ({info['cpu_model']}), MariaDB {info['mariadb']}, "
                      f"{info['sysbench']}, targets: {', '.join(t.name for t in targets)}[/]")
        server_pid = server.pid
        assert server_pid is not None
        # Warm-up: the server's buffer pool, the proxies' first-connection paths and caches.
        for target in targets:
            for workload in plan:
                run_sysbench(sysbench, target, workload, settings, repeat=0, server_pid=server_pid, duration=1)
        runs: list[Run] = []
        total = settings.repeats * len(targets) * len(plan)
        for repeat in range(settings.repeats):
            order = targets[repeat % len(targets):] + targets[: repeat % len(targets)]
            for workload in plan:
                for target in order:
                    run = run_sysbench(sysbench, target, workload, settings, repeat=repeat, server_pid=server_pid)
                    runs.append(run)
                    _print_run(run, workload, len(runs), total)
            if not proxy.alive:
                console.print(f"[red]dbguard serve exited:[/]\n{escape(proxy.log()[-3000:])}")
                break
        summaries = summarise(runs, plan, [target.name for target in targets])
        render(summaries, plan, settings)
        by_key = {(row.workload, row.target): row for row in summaries}
        for workload in plan:
            on, off = by_key.get((workload.name, DBGUARD)), by_key.get((workload.name, NO_JOURNAL))
            if on is not None and off is not None and on.tps is not None and off.tps:
                console.print(f"the journal's cost, {workload.name}: journal on / off = {on.tps / off.tps:.2f} "
                              f"({on.tps:,.0f} / {off.tps:,.0f} tps; goal ≥ 0.90)")
        failed_runs = sum(not run.ok for run in runs)
        colour = "red" if failed_runs else "green"
        console.print(f"[{colour}]failed runs: {failed_runs}[/]")
        elapsed = time.monotonic() - started
        console.print(f"[dim]finished in {elapsed:.0f} s[/]")
        if args.out is not None:
            document = {
                "machine": info,
                "settings": asdict(settings),
                "elapsed_s": round(elapsed, 1),
                "goals": {name: goal.text for name, goal in GOALS.items()},
                "summary": [asdict(summary) for summary in summaries],
                "runs": [asdict(run) for run in runs],
            }
            args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
            console.print(f"raw runs written to {args.out}")
    return 1 if failed_runs else 0


if __name__ == "__main__":
    sys.exit(main())
