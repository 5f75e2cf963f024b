# bench.analysis_cost — what deciding one statement costs on the event loop, cold and cached.
# Owns: the representative statements (pgbench's select and TPC-B statements, an ORM-style join,
# a CTE with a delete, a DDL statement, in PostgreSQL and MySQL spelling), the timeit-style
# measurement (auto-ranged loops, repeats, medians), the rich table and the JSON output. It
# calls the analyser (`dbguard.sql.analyse`), the policy engine and the runtime gate
# (`dbguard.policy.gate.PolicyGate`) in process, exactly as a session does, with the repository's
# sample policy. Must not: change what it measures (no monkeypatching), or do I/O besides
# loading the rules and printing.
"""Per-statement cost of analysis and of the policy gate, cold and cached, for both dialects.

Run from the repository root:  python -m bench.analysis_cost [--quick] [--json] [--rules PATH]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

from rich.console import Console, JustifyMethod
from rich.markup import escape
from rich.table import Table

from dbguard.model import (
    MYSQL_DEFAULTS,
    POSTGRES_DEFAULTS,
    Identity,
    IdentityKind,
    SessionInfo,
    StatementInfo,
    StatementSource,
)
from dbguard.policy.engine import evaluate
from dbguard.policy.gate import MAX_CACHE_ENTRIES, PgSessionGate, PolicyGate, pg_shape
from dbguard.policy.rules import Policy, load_policy
from dbguard.sql import analyse

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
DEFAULT_RULES: Final = REPO_ROOT / "rules"
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)

# The server's session parameters a PostgreSQL session reports at login, fed to the gate as
# the session does (they select the decision caches).
PG_SERVER_PARAMETERS: Final = {"client_encoding": "UTF8", "standard_conforming_strings": "on"}


@dataclass(frozen=True)
class Statement:
    """One representative statement; `{n}` in a template is a literal that varies (a new text
    every time for the cold measurements, a new literal for the shape cache)."""

    name: str
    postgres: str
    mysql: str
    tpcb: bool = False  # one of the 7 statements of a pgbench TPC-B transaction


STATEMENTS: Final = (
    Statement("pgbench -S select",
              "SELECT abalance FROM pgbench_accounts WHERE aid = {n};",
              "SELECT abalance FROM pgbench_accounts WHERE aid = {n};", tpcb=True),
    Statement("TPC-B BEGIN", "BEGIN;", "BEGIN;", tpcb=True),
    Statement("TPC-B update accounts",
              "UPDATE pgbench_accounts SET abalance = abalance + {n} WHERE aid = 48213;",
              "UPDATE pgbench_accounts SET abalance = abalance + {n} WHERE aid = 48213;", tpcb=True),
    Statement("TPC-B update tellers",
              "UPDATE pgbench_tellers SET tbalance = tbalance + {n} WHERE tid = 7;",
              "UPDATE pgbench_tellers SET tbalance = tbalance + {n} WHERE tid = 7;", tpcb=True),
    Statement("TPC-B update branches",
              "UPDATE pgbench_branches SET bbalance = bbalance + {n} WHERE bid = 1;",
              "UPDATE pgbench_branches SET bbalance = bbalance + {n} WHERE bid = 1;", tpcb=True),
    Statement("TPC-B insert history",
              "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
              "VALUES (7, 1, 48213, {n}, CURRENT_TIMESTAMP);",
              "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
              "VALUES (7, 1, 48213, {n}, CURRENT_TIMESTAMP);", tpcb=True),
    Statement("TPC-B END", "END;", "COMMIT;", tpcb=True),
    Statement(
        "ORM select, 3 joins",
        "SELECT orders.id AS orders_id, orders.total AS orders_total, orders.status AS orders_status, "
        "orders.created_at AS orders_created_at, customers_1.id AS customers_1_id, "
        "customers_1.full_name AS customers_1_full_name, order_items_1.quantity AS order_items_1_quantity, "
        "products_1.name AS products_1_name, products_1.price AS products_1_price "
        "FROM orders JOIN customers AS customers_1 ON customers_1.id = orders.customer_id "
        "LEFT OUTER JOIN order_items AS order_items_1 ON orders.id = order_items_1.order_id "
        "LEFT OUTER JOIN products AS products_1 ON products_1.id = order_items_1.product_id "
        "WHERE orders.status = 'paid' AND orders.customer_id = {n} "
        "ORDER BY orders.created_at DESC LIMIT 20",
        "SELECT orders.id AS orders_id, orders.total AS orders_total, orders.status AS orders_status, "
        "orders.created_at AS orders_created_at, customers_1.id AS customers_1_id, "
        "customers_1.full_name AS customers_1_full_name, order_items_1.quantity AS order_items_1_quantity, "
        "products_1.name AS products_1_name, products_1.price AS products_1_price "
        "FROM orders INNER JOIN customers AS customers_1 ON customers_1.id = orders.customer_id "
        "LEFT OUTER JOIN order_items AS order_items_1 ON orders.id = order_items_1.order_id "
        "LEFT OUTER JOIN products AS products_1 ON products_1.id = order_items_1.product_id "
        "WHERE orders.status = 'paid' AND orders.customer_id = {n} "
        "ORDER BY orders.created_at DESC LIMIT 20",
    ),
    Statement(
        "CTE with a delete",
        "WITH stale AS (DELETE FROM scratch.notes WHERE id < {n} RETURNING id) "
        "SELECT count(*) FROM stale",
        # MySQL has no data-modifying CTE: the CTE selects, the DELETE uses it.
        "WITH stale AS (SELECT id FROM scratch.notes WHERE id < {n}) "
        "DELETE FROM scratch.notes WHERE id IN (SELECT id FROM stale)",
    ),
    Statement(
        "DDL: CREATE TABLE",
        "CREATE TABLE scratch.report_{n} (id bigint PRIMARY KEY, customer_id integer NOT NULL, "
        "total numeric(12,2) NOT NULL DEFAULT 0, created_at timestamptz NOT NULL DEFAULT now())",
        "CREATE TABLE scratch.report_{n} (id bigint PRIMARY KEY, customer_id integer NOT NULL, "
        "total decimal(12,2) NOT NULL DEFAULT 0, created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    ),
)


@dataclass
class Result:
    """Median µs per call of each measurement for one statement (None: not applicable)."""

    statement: str
    tpcb: bool
    action: str  # what the sample policy decides for it, for the measured identity
    rules: str  # the rules that matched, if any
    cached_by: str  # "exact+shape", "exact", or "none" (refused or stateful: decided each time)
    pg_analyse_cold_us: float | None = None
    pg_evaluate_us: float | None = None  # the policy engine alone, on the analysis
    pg_decide_miss_us: float | None = None  # the gate on a text it has never seen (Parse)
    pg_decide_exact_us: float | None = None  # the gate on a text it has seen (exact-text cache)
    pg_decide_shape_us: float | None = None  # simple protocol, new literal values (shape cache)
    pg_shape_us: float | None = None  # of which `pg_shape()`: the text with its literals replaced
    mysql_analyse_cold_us: float | None = None
    mysql_unparseable: bool = False


# ----------------------------------------------------------------------------- timing

LoopFactory = Callable[[int], Callable[[], None]]


@dataclass
class Measurement:
    """One timed quantity: `make_calls(number)` prepares a loop of `number` calls (new texts
    and all, outside the timing) and returns it."""

    statement: str
    key: str  # the Result field it fills
    make_calls: LoopFactory
    max_number: int = 1_000_000
    number: int = 1
    samples: list[float] = field(default_factory=list)  # µs per call, one per round


def calibrate(measurement: Measurement, min_time: float) -> None:
    """timeit's autorange: the loop count whose loop lasts at least `min_time` (the loops run
    here also warm the code up)."""
    number = 1
    while True:
        loop = measurement.make_calls(number)
        started = time.perf_counter()
        loop()
        elapsed = time.perf_counter() - started
        if elapsed >= min_time or number >= measurement.max_number:
            break
        number = min(measurement.max_number, number * (2 if elapsed > min_time / 10 else 10))
    measurement.number = number


def run_rounds(measurements: list[Measurement], repeats: int) -> None:
    """`repeats` rounds, each timing one loop of every measurement in turn: a burst of load
    from elsewhere on the machine then spreads over all of them instead of skewing one. GC
    stays enabled, as in the proxy: analysis allocates, and collections are part of its cost."""
    for _ in range(repeats):
        for measurement in measurements:
            loop = measurement.make_calls(measurement.number)
            gc.collect()
            started = time.perf_counter()
            loop()
            measurement.samples.append((time.perf_counter() - started) / measurement.number * 1e6)


_counter = itertools.count(100_000)


def fresh_texts(template: str, count: int) -> list[str]:
    """`count` texts never seen before in this process (a new value for `{n}` each)."""
    return [template.replace("{n}", str(next(_counter))) for _ in range(count)]


# ----------------------------------------------------------------------------- measurements


def session_info(kind: IdentityKind, roles: tuple[str, ...], protocol: str) -> SessionInfo:
    return SessionInfo(
        session_id="bench-1", listener="app-pg" if protocol == "postgres" else "app-mysql",
        protocol=protocol, identity=Identity("bench", kind, roles), client_address="127.0.0.1:50000",
        database="app", application_name="bench.analysis_cost",
    )


def open_session(gate: PolicyGate, info: SessionInfo) -> PgSessionGate:
    session = gate.open(info, {})
    for name, value in PG_SERVER_PARAMETERS.items():
        session.server_parameter(name, value)
    return session


def postgres_measurements(statement: Statement, policy: Policy, info: SessionInfo
                          ) -> tuple[Result, list[Measurement]]:
    """The statement's decision and caches (a Result with no timings yet), and what to time."""
    template = statement.postgres

    def analyse_cold(number: int) -> Callable[[], None]:
        texts = fresh_texts(template, number)

        def loop() -> None:
            for text in texts:
                analyse(text, POSTGRES_DEFAULTS)
        return loop

    infos: tuple[StatementInfo, ...] = analyse(fresh_texts(template, 1)[0], POSTGRES_DEFAULTS)

    def evaluate_only(number: int) -> Callable[[], None]:
        def loop() -> None:
            for _ in range(number):
                evaluate(policy, infos, info)
        return loop

    # One gate (as a listener has) and one session on it for the cache hits.
    gate = PolicyGate(policy, "postgres")
    session = open_session(gate, info)

    seen = fresh_texts(template, 1)[0].encode()
    decision = session.decide(seen, StatementSource.SIMPLE_QUERY, "")
    has_literal = "{n}" in template

    def decide_miss(number: int) -> Callable[[], None]:
        # A text the gate has never seen, on a gate of its own per loop: the misses fill its
        # caches, and must neither evict `seen` from the one measured below nor reach the
        # caches' bound (eviction has a cost of its own). Without a literal to vary (BEGIN),
        # a new gate for every call.
        if has_literal:
            fresh = open_session(PolicyGate(policy, "postgres"), info)
            pairs = [(fresh, text.encode()) for text in fresh_texts(template, number)]
        else:
            pairs = [(open_session(PolicyGate(policy, "postgres"), info), seen) for _ in range(number)]

        def loop() -> None:
            for each, sql in pairs:
                each.decide(sql, StatementSource.PARSE, "")
        return loop

    def decide_exact(number: int) -> Callable[[], None]:
        def loop() -> None:
            for _ in range(number):
                session.decide(seen, StatementSource.SIMPLE_QUERY, "")
        return loop

    def shape_only(number: int) -> Callable[[], None]:
        texts = [text.encode() for text in fresh_texts(template, number)]

        def loop() -> None:
            for sql in texts:
                pg_shape(sql)
        return loop

    def decide_shape(number: int) -> Callable[[], None]:
        # A shape hit stores nothing: the session's caches stay as they are.
        texts = [text.encode() for text in fresh_texts(template, number)]

        def loop() -> None:
            for sql in texts:
                session.decide(sql, StatementSource.SIMPLE_QUERY, "")
        return loop

    # Which caches hold this statement's decision: look, rather than assume.
    # (The bench reads the session's private caches; it never changes them.)
    exact_cached = seen in session._exact
    shape = pg_shape(seen)
    shape_cached = shape is not None and shape in session._shapes
    cached_by = "exact+shape" if shape_cached else "exact" if exact_cached else "none"
    result = Result(
        statement=statement.name, tpcb=statement.tpcb,
        action=decision.action.value + ("" if decision.enforced else " (observed)"),
        rules=",".join(decision.rule_ids), cached_by=cached_by,
    )
    name = statement.name
    measurements = [
        Measurement(name, "pg_analyse_cold_us", analyse_cold),
        Measurement(name, "pg_evaluate_us", evaluate_only),
        Measurement(name, "pg_decide_miss_us", decide_miss, max_number=MAX_CACHE_ENTRIES // 2),
        Measurement(name, "pg_decide_exact_us", decide_exact),
    ]
    if shape_cached and has_literal:
        measurements += [Measurement(name, "pg_decide_shape_us", decide_shape),
                         Measurement(name, "pg_shape_us", shape_only)]
    return result, measurements


def mysql_measurement(statement: Statement) -> tuple[bool, Measurement]:
    """Whether the MySQL analyser understands the statement, and its cold analysis to time."""
    template = statement.mysql
    settings = MYSQL_DEFAULTS

    def analyse_cold(number: int) -> Callable[[], None]:
        texts = fresh_texts(template, number)

        def loop() -> None:
            for text in texts:
                analyse(text, settings)
        return loop

    unparseable = any(info.unparseable for info in analyse(fresh_texts(template, 1)[0], settings))
    return unparseable, Measurement(statement.name, "mysql_analyse_cold_us", analyse_cold)


# ----------------------------------------------------------------------------- output


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def tpcb_totals(results: list[Result]) -> dict[str, float | None] | None:
    """Sums over the 7 statements of one TPC-B transaction (its SELECT is pgbench -S's); the
    shape column takes the exact hit for statements without a literal (BEGIN, END)."""
    tpcb = [result for result in results if result.tpcb]
    if len(tpcb) != 7:
        return None

    def total(values: list[float | None]) -> float | None:
        present = [value for value in values if value is not None]
        return sum(present) if len(present) == len(values) else None

    return {
        "pg_analyse_cold_us": total([r.pg_analyse_cold_us for r in tpcb]),
        "pg_evaluate_us": total([r.pg_evaluate_us for r in tpcb]),
        "pg_decide_miss_us": total([r.pg_decide_miss_us for r in tpcb]),
        "pg_decide_exact_us": total([r.pg_decide_exact_us for r in tpcb]),
        "pg_decide_shape_us": total([r.pg_decide_exact_us if r.pg_decide_shape_us is None
                                     else r.pg_decide_shape_us for r in tpcb]),
        "pg_shape_us": total([0.0 if r.pg_decide_shape_us is None else r.pg_shape_us for r in tpcb]),
        "mysql_analyse_cold_us": total([r.mysql_analyse_cold_us for r in tpcb]),
    }


def render(results: list[Result], *, rules: Path, identity: str, repeats: int) -> None:
    table = Table(
        title=escape(f"analysis and decision cost per statement, median µs over {repeats} repeats "
                     f"(policy {rules}, identity {identity})"),
        title_justify="left",
    )
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("statement", "left"), ("PG decision\n(sample policy)", "left"), ("cached\nby", "left"),
        ("PG analyse\ncold", "right"), ("PG\nevaluate", "right"), ("PG decide\nmiss", "right"),
        ("PG decide\nexact hit", "right"), ("PG decide\nshape hit", "right"),
        ("of which\npg_shape", "right"), ("MySQL analyse\ncold", "right"),
    )
    for header, justify in columns:
        table.add_column(header, justify=justify, no_wrap=True)
    for result in results:
        mysql = _fmt(result.mysql_analyse_cold_us) + (" [yellow](unparseable)[/]" if result.mysql_unparseable else "")
        action = result.action + (f" ({result.rules})" if result.rules else "")
        table.add_row(result.statement, action, result.cached_by, _fmt(result.pg_analyse_cold_us),
                      _fmt(result.pg_evaluate_us), _fmt(result.pg_decide_miss_us),
                      _fmt(result.pg_decide_exact_us), _fmt(result.pg_decide_shape_us),
                      _fmt(result.pg_shape_us), mysql)
    totals = tpcb_totals(results)
    if totals is not None:
        table.add_section()
        table.add_row("TPC-B transaction (7 statements)", "", "",
                      *(_fmt(totals[key]) + (" *" if key == "pg_decide_shape_us" else "") for key in (
                          "pg_analyse_cold_us", "pg_evaluate_us", "pg_decide_miss_us", "pg_decide_exact_us",
                          "pg_decide_shape_us", "pg_shape_us", "mysql_analyse_cold_us")))
    console.print(table)
    console.print(
        "[dim]analyse cold: dbguard.sql.analyse() on a text never seen. evaluate: the policy engine "
        "on that analysis. decide miss: the gate on a new text via Parse (analysis + engine + "
        "caching). exact hit: the same bytes again (extended protocol, or a repeated simple "
        "query). shape hit: simple protocol, new literal values, same shape; of which pg_shape: computing "
        "the shape key (two regular expressions). * shape hit where "
        "the statement has one, else exact hit (BEGIN/END have no literal).\n"
        "MySQL: analyse() only; the runtime gate and its caches are PostgreSQL-only for now.[/]")


# ----------------------------------------------------------------------------- main


def parse_identity(text: str) -> tuple[IdentityKind, tuple[str, ...]]:
    kind, _, roles = text.partition(":")
    try:
        identity_kind = IdentityKind(kind)
    except ValueError:
        raise argparse.ArgumentTypeError(f"identity kind must be agent, human or service, not {kind!r}") from None
    return identity_kind, tuple(role for role in roles.split(",") if role)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.analysis_cost",
        description="Per-statement cost of SQL analysis and of the policy gate, cold and cached.",
    )
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES, metavar="PATH",
                        help="the policy: a rules file or folder (default: the repository's rules/)")
    parser.add_argument("--identity", type=parse_identity, default=(IdentityKind.SERVICE, ("app",)),
                        metavar="KIND:ROLES",
                        help="the session's identity kind and roles (default service:app, as "
                             "bench.pgbench_compare logs pgbench in)")
    parser.add_argument("--repeats", type=int, default=7, help="timed loops per measurement (default 7)")
    parser.add_argument("--min-time", type=float, default=0.05,
                        help="seconds each timed loop lasts at least (default 0.05)")
    parser.add_argument("--quick", action="store_true", help="3 repeats of at least 0.02 s")
    parser.add_argument("--only", action="append", metavar="TEXT",
                        help="only statements whose name contains TEXT (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    repeats, min_time = (3, 0.02) if args.quick else (args.repeats, args.min_time)
    policy = load_policy(args.rules)
    kind, roles = args.identity
    identity = f"kind {kind.value}, roles [{', '.join(roles)}]"
    info = session_info(kind, roles, "postgres")
    statements = [statement for statement in STATEMENTS
                  if not args.only or any(text in statement.name for text in args.only)]
    results: list[Result] = []
    measurements: list[Measurement] = []
    for statement in statements:
        result, mine = postgres_measurements(statement, policy, info)
        result.mysql_unparseable, mysql = mysql_measurement(statement)
        results.append(result)
        measurements += [*mine, mysql]
    if not args.json:
        console.print(f"[dim]calibrating {len(measurements)} measurements, then {repeats} rounds of "
                      f"all of them (≥ {min_time} s per loop)[/]")
    for measurement in measurements:
        calibrate(measurement, min_time)
    run_rounds(measurements, repeats)
    by_name = {result.statement: result for result in results}
    for measurement in measurements:
        setattr(by_name[measurement.statement], measurement.key, statistics.median(measurement.samples))
    if args.json:
        document = {
            "python": platform.python_version(),
            "rules": str(args.rules),
            "identity": identity,
            "repeats": repeats,
            "min_time_s": min_time,
            "statements": {statement.name: {"postgres": statement.postgres, "mysql": statement.mysql}
                           for statement in statements},
            "results": [asdict(result) for result in results],
            "tpcb_transaction": tpcb_totals(results),
            "samples_us": {f"{m.statement} / {m.key}": [round(sample, 3) for sample in m.samples]
                           for m in measurements},
            "loop_calls": {f"{m.statement} / {m.key}": m.number for m in measurements},
        }
        print(json.dumps(document, indent=2))
    else:
        render(results, rules=args.rules, identity=identity, repeats=repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
