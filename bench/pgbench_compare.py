# bench.pgbench_compare — pgbench throughput, latency, CPU and memory: direct vs the bare relay vs
# dbguard with the sample policy vs PgBouncer.
# Owns: a throwaway PostgreSQL for the run, `dbguard serve` with the repository's sample rules (a
# real subprocess, as users run it), the same configuration run by `bench.relay_only` (no
# analysis, no policy: the relay's own cost) and, when installed, a PgBouncer in front of the
# same server; the workloads, the alternating run order, the CPU (/proc stat) and memory
# (/proc status) readings, the policy's cost (dbguard vs relay), the rich tables and the JSON
# file of raw runs. Must not touch the machine's own database services nor dbguard's code: it
# measures what `dbguard serve` does, it never imports the proxy's internals.
"""Compare pgbench through dbguard (sample policy) with pgbench direct, through dbguard's bare
relay (no analysis, no policy) and through PgBouncer.

Run from the repository root:  python -m bench.pgbench_compare [--quick] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import pwd
import re
import resource
import shutil
import signal
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

from dbguard.devdb.postgres import ThrowawayPostgres
from tests.integration.harness import (
    DEFAULT_IDENTITIES,
    REPO_ROOT,
    ProxyProcess,
    free_port,
    start_proxy,
    wait_for_port,
    write_config,
)

# Wide enough for the table when the output is a file or a pipe (rich assumes 80 columns then).
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)

CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
DIRECT, RELAY, DBGUARD, PGBOUNCER = "direct", "relay", "dbguard", "pgbouncer"
# dbguard with the same policy and `journal: {enabled: false}`: the baseline of the journal's cost.
NO_JOURNAL = "dbguard-nojournal"
# The target: with the journal on, at least this share of the throughput without it.
JOURNAL_GOAL: Final = 0.90
DEFAULT_RULES: Final = REPO_ROOT / "rules"
# Who pgbench logs in as through both dbguard targets (name, kind, secret, roles). pgbench
# plays an application's service account: the sample policy's agent rules (holds on writes)
# would refuse TPC-B's UPDATEs for an agent, and a hold fails closed while approvals are not
# built. The pre-flight check (`check_policy_allows`) proves the policy allows every workload's
# statements for this identity before anything is measured.
BENCH_IDENTITY: Final = ("pgbench", "service", "pgbench-secret", ("app",))
# The target for the policy on the hot path: dbguard's throughput at most 5% below the
# bare relay's, on every workload (cached decisions).
POLICY_COST_GOAL: Final = 0.05
# The log level `dbguard serve` runs at: warnings only (debug would log per connection and
# more), so logging does not weigh on what is measured.
PROXY_LOG_LEVEL: Final = "warning"
# Above the idle-connection count plus pgbench's clients plus PgBouncer's leftover pool.
SERVER_MAX_CONNECTIONS: Final = 300
# Scale 10 is ~160 MB: keep it in shared buffers so the server reads no file while measured.
SERVER_SETTINGS: Final[dict[str, str | int | float | bool]] = {
    "shared_buffers": "256MB",
    "autovacuum": False,
}


# ----------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Workload:
    """One pgbench invocation shape."""

    name: str
    title: str
    args: tuple[str, ...]
    clients: int
    threads: int
    writes: bool  # the TPC-B mix: history is truncated and tables vacuumed before each run
    # Runs per target per repeat, each `duration * duration_factor` long (at least 2 s). A
    # single client's latency swings 2x from run to run on a 2-vCPU VM (it depends on whether
    # the processes share a core), so the -c 1 probe takes more, shorter samples.
    samples: int = 1
    duration_factor: float = 1.0

    def seconds(self, duration: int) -> int:
        if self.duration_factor == 1:
            return duration
        return max(2, round(duration * self.duration_factor))


@dataclass(frozen=True)
class Goal:
    """A target from the issue: a minimum ratio of direct's tps, or a maximum of something."""

    text: str
    minimum_ratio: float | None = None
    maximum_added_ms: float | None = None

    def met(self, ratio: float | None, added_ms: float | None) -> bool | None:
        if self.minimum_ratio is not None:
            return None if ratio is None else ratio >= self.minimum_ratio
        if self.maximum_added_ms is not None:
            return None if added_ms is None else added_ms < self.maximum_added_ms
        return None


IDLE_CONNECTION_GOAL_KIB: Final = 100.0

GOALS: Final[dict[str, Goal]] = {
    "select-simple": Goal("≥ 0.50", minimum_ratio=0.50),
    "select-prepared": Goal("≥ 0.40", minimum_ratio=0.40),
    "tpcb-simple": Goal("≥ 0.60", minimum_ratio=0.60),
    "latency-c1": Goal("added < 0.15 ms", maximum_added_ms=0.15),
}


def workloads(clients: int, threads: int) -> list[Workload]:
    return [
        Workload("select-simple", "-S -M simple", ("-S", "-M", "simple"), clients, threads, False),
        Workload("select-extended", "-S -M extended", ("-S", "-M", "extended"), clients, threads,
                 False),
        Workload("select-prepared", "-S -M prepared", ("-S", "-M", "prepared"), clients, threads,
                 False),
        Workload("tpcb-simple", "TPC-B -M simple", ("-M", "simple"), clients, threads, True),
        Workload("tpcb-prepared", "TPC-B -M prepared", ("-M", "prepared"), clients, threads, True),
        Workload("latency-c1", "-S -M simple -c 1", ("-S", "-M", "simple"), 1, 1, False,
                 samples=3, duration_factor=0.5),
    ]


@dataclass
class Target:
    """Somewhere pgbench can connect: the server itself or a proxy in front of it."""

    name: str
    host: str
    port: int
    user: str
    password: str
    database: str
    pid: int | None  # the proxy process whose CPU and memory are read; None for direct


@dataclass
class Run:
    """One pgbench run, raw."""

    repeat: int
    workload: str
    target: str
    ok: bool
    tps: float | None
    latency_ms: float | None
    transactions: int | None
    failed_transactions: int | None
    wall_s: float
    proxy_cpu_s: float | None
    server_cpu_s: float | None
    pgbench_cpu_s: float
    steal_s: float  # CPU time the hypervisor gave to someone else during the run (noise)
    error: str | None = None
    # The machine's busy CPU time during the run minus what pgbench, the server and the
    # measured proxy used: other processes (noise; idle proxies add a little).
    others_cpu_s: float | None = None
    sample: int = 0  # which of the workload's samples in this repeat (pairs dbguard with relay)

    def per_tx_us(self, seconds: float | None) -> float | None:
        if seconds is None or not self.transactions:
            return None
        return seconds / self.transactions * 1e6


@dataclass
class Summary:
    """Medians over the repeats of one (workload, target)."""

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
    pgbench_cpu_us_per_tx: float | None
    failed_transactions: int = 0  # pgbench's "number of failed transactions", summed over runs
    ratio_vs_direct: float | None = None
    ratio_vs_relay: float | None = None
    ratio_vs_pgbouncer: float | None = None
    added_latency_ms: float | None = None
    goal: str | None = None
    goal_met: bool | None = None


@dataclass
class PolicyCost:
    """What the policy costs on one workload: dbguard (sample rules) against the bare relay."""

    workload: str
    relay_tps: float | None
    dbguard_tps: float | None
    # 1 - dbguard tps / relay tps, from the medians (the headline figure) ...
    cost: float | None
    # ... and the median of the same ratio over runs paired by repeat (adjacent in time).
    cost_paired: float | None
    relay_cpu_us_per_tx: float | None
    dbguard_cpu_us_per_tx: float | None
    cpu_delta_us_per_tx: float | None  # dbguard - relay: the policy path's own CPU per tx
    # 1 - relay's total CPU per tx / dbguard's (proxy + server + pgbench): the throughput the
    # policy costs when the machine is CPU-bound, from CPU times, which other load on the
    # machine disturbs far less than tps.
    cost_cpu: float | None = None
    goal_met: bool | None = None


@dataclass
class MemoryResult:
    target: str
    connections: int
    rss_before_kib: int
    rss_after_kib: int
    kib_per_connection: float
    goal_met: bool | None = None
    error: str | None = None


@dataclass
class Settings:
    scale: int
    duration: int
    repeats: int
    clients: int
    threads: int
    idle_connections: int
    quick: bool
    rules: str = ""
    identity: str = ""  # "name (kind, roles ...)" pgbench logs in as through dbguard and relay
    workloads: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- /proc readings


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (index 0 is field 3, the state)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) and of its children, in seconds: dbguard's
    journal appender is a child process of `dbguard serve`, and its CPU is the proxy's cost."""
    return server_cpu_seconds(pid)


def server_cpu_seconds(postmaster_pid: int) -> float:
    """CPU of a process tree, e.g. the whole PostgreSQL server: the postmaster, its live
    children, and (through the postmaster's cutime/cstime) every child that has exited and
    been reaped. Deltas of this count a backend's time whether it lives on (PgBouncer's pool)
    or ended with pgbench's run."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry.name))
        except (OSError, IndexError):
            continue
        if fields[1] == str(postmaster_pid):
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    fields = _stat_fields(postmaster_pid)
    total += sum(int(value) for value in fields[11:15]) / CLOCK_TICKS
    return total


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def steal_seconds() -> float:
    """The machine's total steal time so far (/proc/stat), in seconds."""
    with Path("/proc/stat").open() as stat:
        fields = stat.readline().split()
    return int(fields[8]) / CLOCK_TICKS if len(fields) > 8 else 0.0


def busy_seconds() -> float:
    """The machine's total busy CPU time so far (/proc/stat: user, nice, system, irq, softirq)."""
    with Path("/proc/stat").open() as stat:
        fields = stat.readline().split()
    return sum(int(value) for value in fields[1:4] + fields[6:8]) / CLOCK_TICKS


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ----------------------------------------------------------------------------- pgbench

_TPS = re.compile(r"^tps = ([\d.]+) \((?:without initial connection time|excluding)", re.MULTILINE)
_LATENCY = re.compile(r"^latency average = ([\d.]+) ms", re.MULTILINE)
_TRANSACTIONS = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.MULTILINE)


def _libpq_env(target: Target) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env.update(PGHOST=target.host, PGPORT=str(target.port), PGUSER=target.user,
               PGPASSWORD=target.password, PGDATABASE=target.database, PGSSLMODE="disable",
               PGPASSFILE=os.devnull, PGAPPNAME="dbguard-bench")
    return env


def pgbench_binary(server: ThrowawayPostgres) -> str:
    beside = server.bindir / "pgbench"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("pgbench")
    if found is None:
        raise SystemExit("pgbench not found: apt-get install postgresql-contrib (or postgresql)")
    return found


def run_pgbench(
    pgbench: str,
    target: Target,
    workload: Workload,
    *,
    duration: int,
    repeat: int,
    postmaster_pid: int,
    sample: int = 0,
) -> Run:
    command = [pgbench, "--no-vacuum", *workload.args, "-c", str(workload.clients),
               "-j", str(workload.threads), "-T", str(duration)]
    proxy_before = None
    if target.pid is not None:
        with contextlib.suppress(OSError):  # the proxy died: the run will fail and say so
            proxy_before = process_cpu_seconds(target.pid)
    server_before = server_cpu_seconds(postmaster_pid)
    pgbench_before = children_cpu_seconds()
    steal_before = steal_seconds()
    busy_before = busy_seconds()
    started = time.monotonic()
    try:
        result = subprocess.run(command, env=_libpq_env(target), capture_output=True, text=True,
                                timeout=duration + 120, check=False)
        output, code = result.stdout + result.stderr, result.returncode
    except subprocess.TimeoutExpired as exc:
        output, code = f"pgbench timed out: {exc}", -1
    wall = time.monotonic() - started
    # Let the postmaster reap the run's backends, so their CPU shows in its cutime.
    time.sleep(0.2)
    proxy_cpu = None
    if target.pid is not None and proxy_before is not None:
        with contextlib.suppress(OSError):
            proxy_cpu = process_cpu_seconds(target.pid) - proxy_before
    server_cpu = server_cpu_seconds(postmaster_pid) - server_before
    pgbench_cpu = children_cpu_seconds() - pgbench_before
    steal = steal_seconds() - steal_before
    others = busy_seconds() - busy_before - server_cpu - pgbench_cpu - (proxy_cpu or 0.0)

    def number(pattern: re.Pattern[str]) -> float | None:
        found = pattern.search(output)
        return float(found.group(1)) if found else None

    tps, latency = number(_TPS), number(_LATENCY)
    transactions, failed = number(_TRANSACTIONS), number(_FAILED)
    # A failed transaction (a refusal, a serialization error) fails the run: the benchmark
    # must measure what the policy allows, not how fast errors come back.
    ok = code == 0 and tps is not None and bool(transactions) and not failed
    error = None if ok else f"pgbench exit {code}: " + " | ".join(_error_lines(output))
    return Run(
        repeat=repeat, workload=workload.name, target=target.name, ok=ok,
        tps=tps if ok else None, latency_ms=latency if ok else None,
        transactions=int(transactions) if transactions is not None else None,
        failed_transactions=int(failed) if failed is not None else None,
        wall_s=round(wall, 3),
        proxy_cpu_s=proxy_cpu, server_cpu_s=server_cpu, pgbench_cpu_s=pgbench_cpu,
        steal_s=round(steal, 2), error=error, sample=sample, others_cpu_s=round(others, 2),
    )


def _error_lines(output: str) -> list[str]:
    """The lines that say why a run failed: pgbench's errors first, else its last lines."""
    lines = output.strip().splitlines()
    errors = [line for line in lines if "error" in line.lower() or "abort" in line.lower()
              or "failed" in line.lower()]
    return (errors or lines)[-6:]


def reset_tpcb_tables(server: ThrowawayPostgres) -> None:
    """What pgbench's own pre-run vacuum does, done directly so it is never measured."""
    server.run_sql("TRUNCATE pgbench_history; VACUUM pgbench_branches; VACUUM pgbench_tellers;",
                   as_superuser=False)


# ----------------------------------------------------------------------------- dbguard


BenchIdentity = tuple[str, str, str, tuple[str, ...]]  # name, kind, secret, roles


def parse_identity(text: str) -> BenchIdentity:
    """`--identity KIND[:ROLE,ROLE...]` -> the identity pgbench logs in as through the proxies."""
    kind, _, roles = text.partition(":")
    if kind not in ("agent", "human", "service"):
        raise argparse.ArgumentTypeError(f"identity kind must be agent, human or service, not {kind!r}")
    return ("pgbench", kind, "pgbench-secret", tuple(role for role in roles.split(",") if role))


def describe_identity(identity: BenchIdentity) -> str:
    name, kind, _secret, roles = identity
    return f"{name} (kind {kind}, roles [{', '.join(roles)}])"


def _rules_yaml(rules: Path) -> str:
    return f"rules: {json.dumps(str(rules.resolve()))}\n"  # a JSON string is a YAML string


@contextlib.contextmanager
def running_dbguard(server: ThrowawayPostgres, directory: Path, rules: Path, identity: BenchIdentity,
                    journal: bool = True) -> Iterator[ProxyProcess]:
    """`dbguard serve` in front of `server` with the policy in `rules`, upstream as the app
    owner, at PROXY_LOG_LEVEL; pgbench's identity added to the usual test identities. The
    journal goes to the default store (sqlite, next to the configuration), or nowhere."""
    extra = _rules_yaml(rules) + ("" if journal else "journal: {enabled: false}\n")
    try:
        proxy = start_proxy(directory, server.dsn(sslmode="disable"), log_level=PROXY_LOG_LEVEL,
                            identities=(*DEFAULT_IDENTITIES, identity), extra_yaml=extra)
    except RuntimeError as exc:
        raise SystemExit(str(exc)) from exc
    try:
        yield proxy
    finally:
        proxy.stop()


@contextlib.contextmanager
def running_relay(server: ThrowawayPostgres, directory: Path, rules: Path, identity: BenchIdentity,
                  timeout: float = 20.0) -> Iterator[ProxyProcess]:
    """The same configuration as `running_dbguard` (rules included, though unused) run by
    `python -m bench.relay_only`: dbguard's listeners with the allow-all gate."""
    port = free_port()
    config = write_config(directory, server.dsn(sslmode="disable"), port=port,
                          identities=(*DEFAULT_IDENTITIES, identity), extra_yaml=_rules_yaml(rules))
    log_path = directory / "dbguard.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.relay_only", "-c", str(config), "--log-level", PROXY_LOG_LEVEL],
            cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    relay = ProxyProcess(config, port, proc, log_path,
                         {name: secret for name, _, secret, _ in (*DEFAULT_IDENTITIES, identity)})
    try:
        try:
            wait_for_port("127.0.0.1", port, timeout, proc)
        except (RuntimeError, TimeoutError) as exc:
            raise SystemExit(f"bench.relay_only did not start: {exc}\n{relay.log()}") from exc
        yield relay
    finally:
        relay.stop()


# ----------------------------------------------------------------------------- PgBouncer


def _pgbouncer_os_user() -> pwd.struct_passwd | None:
    """PgBouncer refuses to run as root ("should not run as root"): drop to postgres/nobody."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise SystemExit("running as root and no 'postgres' or 'nobody' user to run pgbouncer as")


@contextlib.contextmanager
def running_pgbouncer(binary: str, server: ThrowawayPostgres, pool_size: int
                      ) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """PgBouncer in session mode in front of `server`, for the app owner with SCRAM."""
    user = _pgbouncer_os_user()
    directory = Path(tempfile.mkdtemp(prefix="dbguard-bench-pgbouncer-", dir="/tmp"))
    port = free_port()
    password = server.app_password
    (directory / "userlist.txt").write_text(f'"{server.app_user}" "{password}"\n')
    (directory / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"{server.app_database} = host={server.host} port={server.port} "
        f"dbname={server.app_database}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = scram-sha-256\n"
        f"auth_file = {directory / 'userlist.txt'}\n"
        "pool_mode = session\n"
        f"default_pool_size = {pool_size}\n"
        f"max_client_conn = {pool_size * 2}\n"
        f"max_db_connections = {pool_size}\n"
        # Idle server connections go after 2 s: the idle-connection reading leaves none behind.
        "server_idle_timeout = 2\n"
        "ignore_startup_parameters = extra_float_digits,options\n"
        f"logfile = {directory / 'pgbouncer.log'}\n"
        f"pidfile = {directory / 'pgbouncer.pid'}\n"
        "log_connections = 0\nlog_disconnections = 0\nlog_pooler_errors = 1\n"
        "stats_period = 3600\n"
    )
    extra: dict[str, Any] = {}
    if user is not None:
        for path in (directory, *directory.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid)
        extra = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    proc = subprocess.Popen([binary, str(directory / "pgbouncer.ini")], cwd=directory,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, **extra)
    try:
        try:
            wait_for_port("127.0.0.1", port, 20.0, proc)
        except (RuntimeError, TimeoutError) as exc:
            log = (directory / "pgbouncer.log")
            text = log.read_text(errors="replace") if log.exists() else ""
            raise SystemExit(f"pgbouncer did not start: {exc}\n{text[-2000:]}") from exc
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # immediate shutdown
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(directory, ignore_errors=True)


# ----------------------------------------------------------------------------- memory


def idle_connection_memory(target: Target, count: int) -> MemoryResult:
    """RSS growth of the proxy process per idle, authenticated, ready client connection."""
    import psycopg  # imported here so `--help` works without it
    from psycopg.conninfo import make_conninfo

    assert target.pid is not None
    conninfo = make_conninfo(host=target.host, port=target.port, user=target.user,
                             password=target.password, dbname=target.database, sslmode="disable")
    # Warm the proxy's first-connection paths (imports, caches) before the baseline.
    with psycopg.connect(conninfo, autocommit=True) as warm:
        warm.execute("SELECT 1").fetchall()
    time.sleep(0.3)
    before = rss_kib(target.pid)
    connections: list[psycopg.Connection[Any]] = []
    try:
        for _ in range(count):
            conn = psycopg.connect(conninfo, autocommit=True)
            connections.append(conn)
        for conn in connections:  # every session has run one statement: fully set up
            conn.execute("SELECT 1").fetchall()
        time.sleep(1.0)
        after = rss_kib(target.pid)
    except psycopg.Error as exc:
        return MemoryResult(target.name, len(connections), before, rss_kib(target.pid), 0.0,
                            error=f"{type(exc).__name__}: {exc}")
    finally:
        for conn in connections:
            with contextlib.suppress(psycopg.Error):
                conn.close()
    per_connection = (after - before) / count
    return MemoryResult(target.name, count, before, after, round(per_connection, 1),
                        goal_met=(per_connection < IDLE_CONNECTION_GOAL_KIB
                                  if target.name == DBGUARD else None))


# ----------------------------------------------------------------------------- summary


def _median(values: Sequence[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def summarise(runs: list[Run], plan: list[Workload], targets: list[str]) -> list[Summary]:
    summaries: list[Summary] = []
    for workload in plan:
        by_target: dict[str, Summary] = {}
        for target in targets:
            mine = [run for run in runs if run.workload == workload.name and run.target == target]
            good = [run for run in mine if run.ok]
            by_target[target] = Summary(
                workload=workload.name, target=target, runs=len(mine),
                failures=len(mine) - len(good),
                tps=_median([run.tps for run in good]),
                tps_min=min((run.tps for run in good if run.tps is not None), default=None),
                tps_max=max((run.tps for run in good if run.tps is not None), default=None),
                latency_ms=_median([run.latency_ms for run in good]),
                proxy_cpu_us_per_tx=_median([run.per_tx_us(run.proxy_cpu_s) for run in good]),
                server_cpu_us_per_tx=_median([run.per_tx_us(run.server_cpu_s) for run in good]),
                pgbench_cpu_us_per_tx=_median([run.per_tx_us(run.pgbench_cpu_s) for run in good]),
                failed_transactions=sum(run.failed_transactions or 0 for run in mine),
            )
        direct = by_target.get(DIRECT)
        relay = by_target.get(RELAY)
        bouncer = by_target.get(PGBOUNCER)
        for target, summary in by_target.items():
            if direct is not None and direct.tps and summary.tps is not None:
                summary.ratio_vs_direct = summary.tps / direct.tps
            if relay is not None and relay.tps and summary.tps is not None and target == DBGUARD:
                summary.ratio_vs_relay = summary.tps / relay.tps
            if bouncer is not None and bouncer.tps and summary.tps is not None and target != PGBOUNCER:
                summary.ratio_vs_pgbouncer = summary.tps / bouncer.tps
            if (direct is not None and direct.latency_ms is not None
                    and summary.latency_ms is not None and target != DIRECT):
                summary.added_latency_ms = summary.latency_ms - direct.latency_ms
            goal = GOALS.get(workload.name)
            if goal is not None and target == DBGUARD:
                summary.goal = goal.text
                summary.goal_met = goal.met(summary.ratio_vs_direct, summary.added_latency_ms)
            summaries.append(summary)
    return summaries


def _total_cpu(row: Summary) -> float | None:
    parts = (row.proxy_cpu_us_per_tx, row.server_cpu_us_per_tx, row.pgbench_cpu_us_per_tx)
    return None if any(part is None for part in parts) else sum(part or 0.0 for part in parts)


def policy_costs(runs: list[Run], summaries: list[Summary], plan: list[Workload]) -> list[PolicyCost]:
    """dbguard with the policy against the bare relay, per workload (empty without a relay)."""
    by_key = {(row.workload, row.target): row for row in summaries}
    costs: list[PolicyCost] = []
    for workload in plan:
        relay, guarded = by_key.get((workload.name, RELAY)), by_key.get((workload.name, DBGUARD))
        if relay is None or guarded is None:
            continue
        cost = (1 - guarded.tps / relay.tps) if relay.tps and guarded.tps is not None else None
        paired: list[float | None] = []
        relay_runs = {(run.repeat, run.sample): run for run in runs
                      if run.workload == workload.name and run.target == RELAY and run.ok}
        for run in runs:
            if run.workload != workload.name or run.target != DBGUARD or not run.ok:
                continue
            partner = relay_runs.get((run.repeat, run.sample))
            if partner is not None and partner.tps and run.tps is not None:
                paired.append(1 - run.tps / partner.tps)
        delta = None
        if guarded.proxy_cpu_us_per_tx is not None and relay.proxy_cpu_us_per_tx is not None:
            delta = guarded.proxy_cpu_us_per_tx - relay.proxy_cpu_us_per_tx
        relay_total, guarded_total = _total_cpu(relay), _total_cpu(guarded)
        cost_cpu = (1 - relay_total / guarded_total) if relay_total and guarded_total else None
        costs.append(PolicyCost(
            workload=workload.name, relay_tps=relay.tps, dbguard_tps=guarded.tps, cost=cost,
            cost_paired=_median(paired), relay_cpu_us_per_tx=relay.proxy_cpu_us_per_tx,
            dbguard_cpu_us_per_tx=guarded.proxy_cpu_us_per_tx, cpu_delta_us_per_tx=delta, cost_cpu=cost_cpu,
            goal_met=None if cost is None else cost < POLICY_COST_GOAL,
        ))
    return costs


@dataclass
class JournalCost:
    """dbguard with the journal on against the same without it, on one workload."""

    workload: str
    off_tps: float | None
    on_tps: float | None
    ratio: float | None  # on / off, from the medians
    ratio_paired: float | None  # the median of on / off over runs of one repeat
    goal_met: bool | None


def journal_costs(runs: list[Run], summaries: list[Summary], plan: list[Workload]) -> list[JournalCost]:
    by_key = {(row.workload, row.target): row for row in summaries}
    costs: list[JournalCost] = []
    for workload in plan:
        off, on = by_key.get((workload.name, NO_JOURNAL)), by_key.get((workload.name, DBGUARD))
        if off is None or on is None:
            continue
        ratio = on.tps / off.tps if on.tps is not None and off.tps else None
        partners = {(run.repeat, run.sample): run for run in runs
                    if run.workload == workload.name and run.target == NO_JOURNAL and run.ok}
        paired = [run.tps / partner.tps for run in runs
                  if run.workload == workload.name and run.target == DBGUARD and run.ok
                  and (partner := partners.get((run.repeat, run.sample))) is not None
                  and partner.tps and run.tps is not None]
        costs.append(JournalCost(workload.name, off.tps, on.tps, ratio, _median(list(paired)),
                                 None if ratio is None else ratio >= JOURNAL_GOAL))
    return costs


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _spread(row: Summary) -> str:
    """± half the (max - min) range of the repeats' tps, relative to the median."""
    if row.tps is None or row.tps_min is None or row.tps_max is None or row.runs < 2:
        return "—"
    return f"±{(row.tps_max - row.tps_min) / row.tps / 2:.0%}"


def _verdict(goal: str | None, met: bool | None) -> str:
    if goal is None:
        return ""
    mark = {True: "[green]✓[/]", False: "[red]✗[/]", None: "[yellow]?[/]"}[met]
    return f"{mark} {goal}"


def render(summaries: list[Summary], costs: list[PolicyCost], memory: list[MemoryResult],
           plan: list[Workload], settings: Settings, journal: Sequence[JournalCost] = ()) -> None:
    titles = {workload.name: workload.title for workload in plan}
    table = Table(
        title=(f"pgbench, scale {settings.scale}, {settings.duration}s x {settings.repeats} "
               f"repeats, -c {settings.clients} -j {settings.threads} (medians)"),
        title_justify="left",
    )
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("workload", "left"), ("target", "left"), ("tps", "right"), ("spread", "right"),
        ("vs direct", "right"), ("vs relay", "right"),
        ("vs pgb", "right"), ("goal (dbguard)", "left"), ("latency ms", "right"),
        ("added ms", "right"), ("proxy µs/tx", "right"), ("server µs/tx", "right"),
    )
    for header, justify in columns:
        table.add_column(header, justify=justify, no_wrap=True)
    previous = ""
    for row in summaries:
        if previous and row.workload != previous:
            table.add_section()
        previous = row.workload
        failed = f" [red]({row.failures} failed runs)[/]" if row.failures else ""
        if row.failed_transactions:
            failed += f" [red]({row.failed_transactions} failed tx)[/]"
        table.add_row(
            titles[row.workload], row.target + failed, _fmt(row.tps, ",.0f"), _spread(row),
            _fmt(row.ratio_vs_direct, ".2f"), _fmt(row.ratio_vs_relay, ".2f"),
            _fmt(row.ratio_vs_pgbouncer, ".2f"),
            _verdict(row.goal, row.goal_met), _fmt(row.latency_ms, ".3f"),
            _fmt(row.added_latency_ms, "+.3f"), _fmt(row.proxy_cpu_us_per_tx, ".1f"),
            _fmt(row.server_cpu_us_per_tx, ".1f"),
        )
    console.print(table)
    if costs:
        policy = Table(
            title=escape(f"the policy's cost: dbguard with {settings.rules} vs the bare relay "
                         f"(pgbench as {settings.identity})"),
            title_justify="left",
        )
        for header, justify in (
            ("workload", "left"), ("relay tps", "right"), ("dbguard tps", "right"),
            ("policy cost", "right"), ("paired", "right"), (f"< {POLICY_COST_GOAL:.0%}", "left"),
            ("CPU cost", "right"),
            ("relay µs/tx", "right"), ("dbguard µs/tx", "right"), ("policy µs/tx", "right"),
        ):
            policy.add_column(header, justify=justify, no_wrap=True)
        for cost in costs:
            mark = {True: "[green]✓[/]", False: "[red]✗[/]", None: "[yellow]?[/]"}[cost.goal_met]
            policy.add_row(
                titles[cost.workload], _fmt(cost.relay_tps, ",.0f"), _fmt(cost.dbguard_tps, ",.0f"),
                _fmt(cost.cost, ".1%"), _fmt(cost.cost_paired, ".1%"), mark, _fmt(cost.cost_cpu, ".1%"),
                _fmt(cost.relay_cpu_us_per_tx, ".1f"), _fmt(cost.dbguard_cpu_us_per_tx, ".1f"),
                _fmt(cost.cpu_delta_us_per_tx, "+.1f"),
            )
        console.print(policy)
        console.print("[dim]policy cost = 1 - dbguard tps / relay tps (medians); paired = median of "
                      "the same over runs of one repeat; CPU cost = 1 - relay / dbguard total CPU per "
                      "tx (proxy + server + pgbench: the tps lost when CPU-bound, less disturbed by "
                      "other load); policy µs/tx = dbguard - relay proxy CPU[/]")
    if journal:
        table = Table(title="the journal's cost: dbguard with the journal (sqlite store, write-ahead) vs without",
                      title_justify="left")
        for header, justify in (("workload", "left"), ("journal off tps", "right"), ("journal on tps", "right"),
                                ("on / off", "right"), ("paired", "right"), (f"≥ {JOURNAL_GOAL:.2f}", "left")):
            table.add_column(header, justify=justify, no_wrap=True)
        for jcost in journal:
            mark = {True: "[green]✓[/]", False: "[red]✗[/]", None: "[yellow]?[/]"}[jcost.goal_met]
            table.add_row(titles[jcost.workload], _fmt(jcost.off_tps, ",.0f"), _fmt(jcost.on_tps, ",.0f"),
                          _fmt(jcost.ratio, ".2f"), _fmt(jcost.ratio_paired, ".2f"), mark)
        console.print(table)
    if memory:
        mem = Table(title="idle connections: proxy RSS growth", title_justify="left")
        for header in ("target", "connections", "RSS before KiB", "RSS after KiB",
                       "KiB / connection", "goal"):
            mem.add_column(header)
        for result in memory:
            goal = f"< {IDLE_CONNECTION_GOAL_KIB:.0f} KiB" if result.target == DBGUARD else None
            mem.add_row(result.target, str(result.connections), str(result.rss_before_kib),
                        str(result.rss_after_kib),
                        result.error or f"{result.kib_per_connection:.1f}",
                        _verdict(goal, result.goal_met))
        console.print(mem)


# ----------------------------------------------------------------------------- main


def machine_info(server: ThrowawayPostgres, pgbench: str, pgbouncer: str | None) -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def version(command: list[str]) -> str:
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
        except OSError:
            return ""
        return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""

    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgres": version([str(server.bindir / "postgres"), "--version"]),
        "pgbench": version([pgbench, "--version"]),
        "pgbouncer": version([pgbouncer, "--version"]) if pgbouncer else None,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pgbench_compare",
        description=("pgbench direct vs through dbguard with the sample policy, dbguard's bare relay "
                     "(no analysis, no policy) and PgBouncer when installed."),
    )
    parser.add_argument("--quick", action="store_true",
                        help="scale 1, 3 s runs, 1 repeat, 50 idle connections (~1-2 minutes)")
    parser.add_argument("--duration", type=int, help="seconds per pgbench run (default 5; quick 3)")
    parser.add_argument("--repeats", type=int, help="repeats of every run (default 3; quick 1)")
    parser.add_argument("--scale", type=int, help="pgbench -i scale (default 10; quick 1)")
    parser.add_argument("--clients", type=int, default=8, help="pgbench -c (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="pgbench -j (default 2)")
    parser.add_argument("--idle-connections", type=int,
                        help="idle connections for the memory reading (default 200; quick 50)")
    parser.add_argument("--only", action="append", metavar="WORKLOAD",
                        help="run only this workload (repeatable): " + ", ".join(
                            workload.name for workload in workloads(8, 2)))
    parser.add_argument("--no-pgbouncer", action="store_true", help="skip PgBouncer even if installed")
    parser.add_argument("--no-relay", action="store_true",
                        help="skip the bare relay (no policy cost is reported then)")
    parser.add_argument("--no-journal-baseline", action="store_true",
                        help="skip dbguard with the journal off (no journal cost is reported then)")
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES, metavar="PATH",
                        help="the policy dbguard enforces: a rules file or folder (default: the "
                             "repository's rules/)")
    parser.add_argument("--identity", type=parse_identity, default=BENCH_IDENTITY, metavar="KIND:ROLES",
                        help="kind and roles pgbench logs in with through dbguard and the relay, e.g. "
                             "service:app or agent:readers (default service:app)")
    parser.add_argument("--out", type=Path, metavar="FILE.json", help="write every raw run as JSON")
    return parser.parse_args(argv)


def client_backends(server: ThrowawayPostgres) -> int:
    return int(server.run_sql(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
    ) or 0)


def wait_for_idle_server(server: ThrowawayPostgres, timeout: float = 30.0) -> None:
    """Wait until the idle-connection reading's backends are gone (PgBouncer keeps its server
    connections for server_idle_timeout), so they do not weigh on the throughput runs."""
    deadline = time.monotonic() + timeout
    while client_backends(server) > 1 and time.monotonic() < deadline:  # 1: this psql
        time.sleep(0.5)


def measure_memory(targets: list[Target], settings: Settings) -> list[MemoryResult]:
    memory: list[MemoryResult] = []
    for target in targets:
        if target.pid is not None and settings.idle_connections > 0:
            console.print(f"[dim]opening {settings.idle_connections} idle connections "
                          f"through {target.name}[/]")
            memory.append(idle_connection_memory(target, settings.idle_connections))
    return memory


def measure_throughput(
    pgbench: str,
    server: ThrowawayPostgres,
    targets: list[Target],
    plan: list[Workload],
    settings: Settings,
    proxies: dict[str, ProxyProcess],
) -> list[Run]:
    assert server.pid is not None
    postmaster = server.pid
    # Warm-up: caches, the proxy's first-connection paths, PgBouncer's pool.
    warm = Workload("warm-up", "warm-up", ("-S",), settings.clients, settings.threads, False)
    for target in targets:
        run_pgbench(pgbench, target, warm, duration=1, repeat=0, postmaster_pid=postmaster)
    runs: list[Run] = []
    total = settings.repeats * len(targets) * sum(workload.samples for workload in plan)
    for repeat in range(settings.repeats):
        # Alternate targets run by run, and rotate who goes first in each repeat, so that a
        # drift of the machine (a neighbour on the host, table growth) is shared out evenly.
        order = targets[repeat % len(targets):] + targets[: repeat % len(targets)]
        for workload in plan:
            for sample in range(workload.samples):
                for target in order:
                    if workload.writes:
                        reset_tpcb_tables(server)
                    run = run_pgbench(pgbench, target, workload,
                                      duration=workload.seconds(settings.duration),
                                      repeat=repeat, postmaster_pid=postmaster, sample=sample)
                    runs.append(run)
                    _print_run(run, workload, len(runs), total)
        dead = {name: proxy for name, proxy in proxies.items() if not proxy.alive}
        for name, proxy in dead.items():
            console.print(f"[red]{name} exited ({proxy.proc.returncode}):[/]\n{proxy.log()[-3000:]}")
        if dead:
            break
    return runs


def check_policy_allows(pgbench: str, server: ThrowawayPostgres, target: Target, plan: list[Workload],
                        identity: BenchIdentity, rules: Path) -> None:
    """Run every workload's statements a few times through dbguard before measuring: a policy
    that refuses any of them for pgbench's identity would make the benchmark measure refusals."""
    assert server.pid is not None
    for workload in plan:
        probe = Workload(workload.name, workload.title, workload.args, 1, 1, workload.writes)
        command = [pgbench, "--no-vacuum", *probe.args, "-c", "1", "-j", "1", "-t", "5"]
        result = subprocess.run(command, env=_libpq_env(target), capture_output=True, text=True,
                                timeout=60, check=False)
        failed = _FAILED.search(result.stdout + result.stderr)
        if result.returncode != 0 or (failed is not None and int(failed.group(1)) > 0):
            lines = " | ".join(_error_lines(result.stdout + result.stderr))
            raise SystemExit(
                f"the policy in {rules} does not let {describe_identity(identity)} run pgbench's "
                f"{workload.title} through dbguard: {lines}\n"
                "choose another identity with --identity KIND:ROLES (or other rules with --rules)")
    if any(workload.writes for workload in plan):
        reset_tpcb_tables(server)


def _print_run(run: Run, workload: Workload, number: int, total: int) -> None:
    head = f"[dim]{number:3d}/{total} repeat {run.repeat + 1} {workload.title:<18} {run.target:<9}[/] "
    if not run.ok or run.tps is None or run.latency_ms is None:
        console.print(head + f"[red]failed: {run.error}[/]")
        return
    per_tx = run.per_tx_us(run.proxy_cpu_s)
    proxy = f"  proxy {per_tx:5.1f} µs/tx" if per_tx is not None else ""
    steal = f"  [yellow]steal {run.steal_s:.2f} s[/]" if run.steal_s >= 0.05 else ""
    if run.others_cpu_s is not None and run.others_cpu_s >= 0.1 * run.wall_s:
        steal += f"  [yellow]others {run.others_cpu_s:.1f} s CPU[/]"
    console.print(head + f"{run.tps:>9,.0f} tps  {run.latency_ms:.3f} ms{proxy}{steal}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quick = bool(args.quick)
    settings = Settings(
        scale=args.scale or (1 if quick else 10),
        duration=args.duration or (3 if quick else 5),
        repeats=args.repeats or (1 if quick else 3),
        clients=args.clients,
        threads=args.threads,
        idle_connections=args.idle_connections if args.idle_connections is not None
        else (50 if quick else 200),
        quick=quick,
        rules=str(args.rules),
        identity=describe_identity(args.identity),
    )
    rules: Path = args.rules
    identity: BenchIdentity = args.identity
    if not (rules.is_file() or (rules.is_dir() and any(rules.glob("*.y*ml")))):
        raise SystemExit(f"no rules at {rules}: give a rules file or folder with --rules")
    plan = [workload for workload in workloads(settings.clients, settings.threads)
            if not args.only or workload.name in args.only]
    if not plan:
        raise SystemExit(f"no workload matches {args.only}")
    settings.workloads = [workload.name for workload in plan]
    pgbouncer = None if args.no_pgbouncer else shutil.which("pgbouncer")
    if pgbouncer is None and not args.no_pgbouncer:
        console.print("[yellow]pgbouncer not installed (apt-get install pgbouncer): "
                      "comparing direct and dbguard only[/]")
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        console.print(f"[bold]starting a throwaway PostgreSQL, pgbench -i -s {settings.scale}[/]")
        server = stack.enter_context(ThrowawayPostgres(
            max_connections=SERVER_MAX_CONNECTIONS, settings=SERVER_SETTINGS))
        pgbench = pgbench_binary(server)
        direct = Target(DIRECT, server.host, server.port, server.app_user, server.app_password,
                        server.app_database, None)
        init = subprocess.run([pgbench, "-i", "-q", "-s", str(settings.scale)],
                              env=_libpq_env(direct), capture_output=True, text=True, check=False)
        if init.returncode != 0:
            raise SystemExit(f"pgbench -i failed:\n{init.stdout}\n{init.stderr}")
        server.run_sql("CHECKPOINT")

        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dbguard-bench-")))
        (workdir / "dbguard").mkdir()
        name = identity[0]
        proxy = stack.enter_context(running_dbguard(server, workdir / "dbguard", rules, identity))
        guarded = Target(DBGUARD, proxy.host, proxy.port, name, proxy.secrets[name],
                         server.app_database, proxy.proc.pid)
        proxies = {"dbguard serve": proxy}
        targets = [direct]
        if not args.no_relay:
            (workdir / "relay").mkdir()
            relay = stack.enter_context(running_relay(server, workdir / "relay", rules, identity))
            proxies["bench.relay_only"] = relay
            targets.append(Target(RELAY, relay.host, relay.port, name, relay.secrets[name],
                                  server.app_database, relay.proc.pid))
        targets.append(guarded)
        if not args.no_journal_baseline:
            (workdir / "nojournal").mkdir()
            unjournaled = stack.enter_context(running_dbguard(server, workdir / "nojournal", rules, identity,
                                                              journal=False))
            proxies["dbguard serve (journal off)"] = unjournaled
            targets.append(Target(NO_JOURNAL, unjournaled.host, unjournaled.port, name, unjournaled.secrets[name],
                                  server.app_database, unjournaled.proc.pid))
        console.print("[bold]" + escape(
            f"dbguard enforces {rules}; pgbench logs in through the proxies as "
            f"{describe_identity(identity)}; checking that the policy allows every workload's "
            "statements") + "[/]")
        check_policy_allows(pgbench, server, guarded, plan, identity, rules)
        if pgbouncer is not None:
            bouncer, bouncer_port = stack.enter_context(running_pgbouncer(
                pgbouncer, server, pool_size=max(settings.idle_connections, settings.clients) + 10))
            targets.append(Target(PGBOUNCER, "127.0.0.1", bouncer_port, server.app_user,
                                  server.app_password, server.app_database, bouncer.pid))
        info = machine_info(server, pgbench, pgbouncer)
        console.print(f"[dim]{info['cpus']} CPUs ({info['cpu_model']}), {info['postgres']}, "
                      f"targets: {', '.join(t.name for t in targets)}[/]")

        # Memory first, on freshly started proxies (after one warm-up connection each), so that
        # memory freed by earlier sessions cannot hide what a new connection costs.
        memory = measure_memory(targets, settings)
        wait_for_idle_server(server)
        runs = measure_throughput(pgbench, server, targets, plan, settings, proxies)

        summaries = summarise(runs, plan, [target.name for target in targets])
        costs = policy_costs(runs, summaries, plan)
        journal = journal_costs(runs, summaries, plan)
        render(summaries, costs, memory, plan, settings, journal)
        failed_tx = sum(summary.failed_transactions for summary in summaries)
        failed_runs = sum(not run.ok for run in runs)
        colour = "red" if failed_tx or failed_runs else "green"
        console.print(f"[{colour}]failed transactions: {failed_tx}; failed runs: {failed_runs}[/]")
        elapsed = time.monotonic() - started
        console.print(f"[dim]finished in {elapsed:.0f} s[/]")
        if args.out is not None:
            document = {
                "machine": info,
                "settings": asdict(settings),
                "elapsed_s": round(elapsed, 1),
                "goals": {name: goal.text for name, goal in GOALS.items()}
                | {"idle-connection": f"< {IDLE_CONNECTION_GOAL_KIB:.0f} KiB",
                   "policy-cost": f"< {POLICY_COST_GOAL:.0%} of the relay's tps"},
                "summary": [asdict(summary) for summary in summaries],
                "policy_cost": [asdict(cost) for cost in costs],
                "journal_cost": [asdict(cost) for cost in journal],
                "memory": [asdict(result) for result in memory],
                "runs": [asdict(run) for run in runs],
            }
            args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
            console.print(f"raw runs written to {args.out}")
    return 1 if failed_runs or failed_tx else 0


if __name__ == "__main__":
    sys.exit(main())
