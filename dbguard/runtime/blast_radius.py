"""The blast-radius preview of a statement held for approval (docs/approvals.md).

Owns: measuring, on a connection of its own to the upstream (the listener's credentials and
TLS mode, the session's database), what a held statement would touch: the planner's row
estimate, and where that is safe the exact number of rows, always inside a transaction that is
rolled back, under statement and lock timeouts, within about 3 * `timeout` in all.

- PostgreSQL DML: `EXPLAIN (FORMAT JSON, VERBOSE)`, then the statement itself, and ROLLBACK.
  It runs only when the plan writes plain tables the analysis named, with no user triggers (on
  them, their partitions or the tables their cascading foreign keys reach) and no rules.
- PostgreSQL DROP / TRUNCATE / ALTER: never run (ACCESS EXCLUSIVE); the rows of the tables they
  name are counted, and pg_class.reltuples gives the estimate.
- MySQL / MariaDB DML: `EXPLAIN`, then the statement (prepared statements' `?` replaced by the
  escaped values) between START TRANSACTION and ROLLBACK, only on InnoDB tables without
  triggers.
- Never run: several statements, unparseable text, transaction control, anything but
  SELECT/INSERT/UPDATE/DELETE/MERGE, or a statement that calls user code, touches files or
  programs, builds SQL dynamically, administers the server or changes privileges.

Must not: raise (every failure is a BlastRadius whose note says why, with an SQLSTATE or errno
and a generic text, never the server's message, which may quote data), commit anything, run
DDL, log SQL, parameters or credentials, or wait without a bound.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import selectors
import ssl
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from dbguard.approvals.model import BlastRadius
from dbguard.model import Feature, StatementInfo, StatementKind
from dbguard.runtime.libpq import connection_params
from dbguard.session.pg_actions import UpstreamSettings, UpstreamTlsMode

__all__ = ["measure"]

log = logging.getLogger("dbguard.approvals")

K = StatementKind
_PLANNABLE: Final = frozenset({K.SELECT, K.INSERT, K.UPDATE, K.DELETE, K.MERGE})
_CHANGES_ROWS: Final = frozenset({K.INSERT, K.UPDATE, K.DELETE, K.MERGE})
_PG_DML_COMMANDS: Final = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE"})
# DDL whose rows are counted instead of running it (PostgreSQL), in the order the note names.
_COUNTED_DDL: Final = (K.DROP, K.TRUNCATE, K.ALTER)

# Never run a statement with these (user code, files, programs, dynamic SQL...): estimate only.
_NEVER_RUN: Final = {
    Feature.PROGRAM_EXECUTION: "runs a program",
    Feature.FILE_ACCESS: "touches files",
    Feature.DYNAMIC_SQL: "builds SQL dynamically",
    Feature.UNTRUSTED_CODE: "runs untrusted code",
    Feature.USER_CODE_CALL: "calls user code",
    Feature.SYSTEM_ADMIN: "administers the server",
    Feature.PRIVILEGE_CHANGE: "changes privileges",
}
# Not even planned: PostgreSQL's planner pre-evaluates immutable and stable function calls,
# MySQL's optimizer constant subqueries and stored functions.
_PG_NOT_PLANNED: Final = frozenset({Feature.PROGRAM_EXECUTION, Feature.FILE_ACCESS, Feature.UNTRUSTED_CODE,
                                    Feature.SYSTEM_ADMIN})
_MYSQL_NOT_PLANNED: Final = frozenset(_NEVER_RUN)

_LOCK_MARGIN = 0.25  # MySQL: the statement time limit past the lock wait timeout (whole seconds)
_GRACE = 0.5  # past a step's server-side timeout, how long the client still waits for its answer
_MAX_COUNTED_TABLES = 50  # DROP SCHEMA: tables counted at most
_APPLICATION = "dbguard blast radius"
_COUNTED = "exact: counted in a rolled-back transaction"

_PG_REASONS: Final = {
    "57014": "statement timeout",
    "55P03": "waited too long for a lock",
    "40P01": "deadlock",
    "40001": "serialization failure",
    "25P02": "transaction aborted",
    "42501": "permission denied",
    "42P01": "table not found",
    "42883": "function not found",
    "42P02": "parameter missing",
    "08P01": "parameters do not match",
    "28P01": "authentication failed",
    "28000": "authorization failed",
    "3D000": "database not found",
    "53300": "too many connections",
    "57P03": "server not accepting connections",
}
_MYSQL_REASONS: Final = {
    1969: "statement timeout",  # MariaDB max_statement_time
    3024: "statement timeout",  # MySQL max_execution_time
    1317: "statement interrupted",
    1205: "waited too long for a lock",
    1213: "deadlock",
    1142: "permission denied",
    1044: "permission denied",
    1045: "authentication failed",
    1049: "database not found",
    1146: "table not found",
    1064: "syntax error",
    1210: "parameters do not match",
    1040: "too many connections",
    2003: "cannot reach the server",
    2006: "lost the connection",
    2013: "lost the connection",
    2026: "TLS failed",
}
_LONG_DATA = re.compile(r"<long data: \d+ bytes>\Z")
_HEX_VALUE = re.compile(r"\\x((?:[0-9a-f]{2})*)\Z")


class _Failed(Exception):
    """A step could not be done; the message is the note's text (no data values)."""


@dataclass(frozen=True, slots=True)
class _Approach:
    """What may be done for one message (decided from the analysis alone)."""

    plan: bool = False  # ask the planner (EXPLAIN)
    run: bool = False  # run it in a rolled-back transaction and read its row count
    count: str = ""  # PostgreSQL DDL: its verb; the rows of the tables it names are counted
    why_not: str = ""  # why the exact count is not measured ("" when it may be)


class _Budget:
    """The whole measurement's time: each step gets `timeout`, all of them 3 * `timeout`."""

    def __init__(self, timeout: float) -> None:
        self.timeout = max(0.1, float(timeout))
        self.deadline = time.monotonic() + 3 * self.timeout

    def step(self) -> float:
        left = self.deadline - time.monotonic()
        if left < 0.05:
            raise _Failed("out of time")
        return min(self.timeout, left)


def measure(upstream: UpstreamSettings, protocol: str, database: str, sql: str,
            parameters: tuple[str | None, ...] | None, analysis: tuple[StatementInfo, ...],
            *, timeout: float = 2.0) -> BlastRadius:
    """What `sql` would touch, measured on a new upstream connection (see the module
    docstring). Synchronous, bounded by about 3 * `timeout`; never raises."""
    try:
        approach = _approach(protocol, analysis)
        if "\x00" in sql or any("\x00" in p for p in parameters or () if p is not None):
            result = BlastRadius(note="not measured: NUL character in the statement")
        elif not (approach.plan or approach.run or approach.count):
            result = BlastRadius(note=approach.why_not)
        elif protocol == "postgres":
            result = _measure_pg(upstream, database, sql, parameters, analysis[0], approach, _Budget(timeout))
        elif protocol == "mysql":
            result = _measure_mysql(upstream, database, sql, parameters, analysis[0], approach, _Budget(timeout))
        else:
            result = BlastRadius(note=f"not measured: unknown protocol {protocol!r}")
    except Exception as exc:  # never raise: the request is created without a preview
        result = BlastRadius(note=f"not measured: internal error ({type(exc).__name__})")
    log.debug("approval.blast_radius", extra={"protocol": protocol, "estimated": result.estimated_rows,
                                               "exact": result.exact_rows, "note": result.note})
    return result


# ------------------------------------------------------------------------------ the approach


def _approach(protocol: str, analysis: tuple[StatementInfo, ...]) -> _Approach:
    if len(analysis) != 1:
        return _Approach(why_not="not measured: several statements" if analysis else "not measured: no statement")
    info = analysis[0]
    if info.unparseable:
        return _Approach(why_not="not measured: the statement could not be analysed")
    kinds = info.kinds
    if K.TRANSACTION in kinds:
        return _Approach(why_not="not measured: transaction control")
    risky = [text for feature, text in _NEVER_RUN.items() if feature in info.features]
    if kinds <= _PLANNABLE:
        not_planned = _PG_NOT_PLANNED if protocol == "postgres" else _MYSQL_NOT_PLANNED
        plan = not (info.features & not_planned)
        if risky:
            return _Approach(plan=plan, why_not=f"not executed: it {', '.join(risky)}")
        if not kinds & _CHANGES_ROWS:
            return _Approach(plan=plan, why_not="a SELECT changes no rows")
        if protocol == "postgres" and info.command.split(" ", 1)[0] not in _PG_DML_COMMANDS:
            return _Approach(plan=plan, why_not=f"not executed: rows changed inside a {info.command}")
        return _Approach(plan=plan, run=True)
    if protocol == "postgres" and kinds <= frozenset(_COUNTED_DDL):
        verb = next(kind for kind in _COUNTED_DDL if kind in kinds)
        return _Approach(count=verb.value.upper())
    if protocol == "mysql" and kinds & {K.DROP, K.TRUNCATE, K.ALTER, K.CREATE}:
        return _Approach(why_not=f"not measured: {info.command} (MySQL: DML only)")
    return _Approach(why_not=f"not measured: {info.command}")


def _note(*parts: str) -> str:
    return "; ".join(part for part in parts if part)


def _split_table(name: str) -> tuple[str, str]:
    schema, _, table = name.partition(".")
    return (schema, table) if table else ("", schema)


# ------------------------------------------------------------------------------ PostgreSQL


def _pg_reason(code: str) -> str:
    reason = _PG_REASONS.get(code)
    if reason is None:
        try:
            import psycopg.errors

            reason = psycopg.errors.lookup(code).__name__
        except (KeyError, ImportError):
            reason = "server error"
    return f"{reason} ({code})"


class _PgConnection:
    """One libpq connection driven with non-blocking calls, so that no wait is unbounded."""

    def __init__(self, conn: Any, budget: _Budget) -> None:
        self.conn = conn
        self.pgconn = conn.pgconn
        self.pgconn.nonblocking = 1
        self.budget = budget
        self.usable = True

    @classmethod
    def open(cls, upstream: UpstreamSettings, database: str, budget: _Budget) -> _PgConnection:
        import psycopg

        params = connection_params(upstream, database, application=_APPLICATION,
                                   connect_timeout=math.ceil(budget.timeout))
        try:
            conn = psycopg.connect(autocommit=True, **params)
        except psycopg.errors.ConnectionTimeout:
            raise _Failed("not measured: cannot connect to the upstream (timed out)") from None
        except psycopg.Error as exc:
            raise _Failed(f"not measured: cannot connect to the upstream ({_pg_connect_reason(exc)})") from None
        return cls(conn, budget)

    def run(self, sql: str, parameters: Sequence[str | None] | None = None, *, limit: float | None = None,
            discard_rows: bool = False) -> Any:
        """One statement (extended protocol: never several); its last result. _Failed (with a
        reason) for an error or no answer within the step's time (`limit`: its own time).
        `discard_rows`: rows (RETURNING) come one at a time and are dropped, so that a large
        result is never held in memory; the last result still carries the row count."""
        from psycopg import pq

        if not self.usable:
            raise _Failed("connection lost")
        limit = self.budget.step() if limit is None else limit
        values = None if parameters is None else [None if p is None else p.encode() for p in parameters]
        give_up = time.monotonic() + limit + _GRACE
        try:
            self.pgconn.send_query_params(sql.encode(), values)
            if discard_rows:
                self.pgconn.set_single_row_mode()
            while self.pgconn.flush():
                self._wait(give_up, selectors.EVENT_WRITE)
            result = error = None
            while True:
                while self.pgconn.is_busy():
                    self._wait(give_up, selectors.EVENT_READ)
                    self.pgconn.consume_input()
                res = self.pgconn.get_result()
                if res is None:
                    break
                if time.monotonic() > give_up:  # rows keep coming
                    raise _Failed("no answer from the server in time")
                if res.status in (pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.BAD_RESPONSE) and error is None:
                    error = res
                result = res
        except _Failed:
            self.usable = False
            raise
        except Exception:  # psycopg.OperationalError: the connection is gone
            self.usable = False
            raise _Failed("lost the connection") from None
        if error is not None:
            code = (error.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode("ascii", "replace")
            if not code:
                self.usable = False
                raise _Failed("lost the connection")
            raise _Failed(_pg_reason(code))
        return result

    def value(self, sql: str, parameters: Sequence[str | None] | None = None) -> str | None:
        res = self.run(sql, parameters)
        if res is None or res.ntuples < 1:
            return None
        raw = res.get_value(0, 0)
        return None if raw is None else bytes(raw).decode()

    def _wait(self, give_up: float, event: int) -> None:
        left = give_up - time.monotonic()
        if left <= 0:
            raise _Failed("no answer from the server in time")
        with selectors.DefaultSelector() as selector:
            selector.register(self.pgconn.socket, event)
            selector.select(left)

    def begin(self) -> None:
        self.run("BEGIN")
        self.limit_step()

    def limit_step(self) -> None:
        """The statement and lock timeouts for the next step (SET LOCAL: this transaction). The
        lock timeout is the shorter, so that a lock wait is reported as one."""
        ms = max(2, int(self.budget.step() * 1000))
        idle = max(1, int(3 * self.budget.timeout * 1000))
        self.run("SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $2, true),"
                 " set_config('idle_in_transaction_session_timeout', $3, true)",
                 (str(ms), str(max(1, ms * 4 // 5)), str(idle)))

    def close(self) -> None:
        """ROLLBACK (a broken connection is closed instead: the server rolls it back)."""
        try:
            if self.usable:  # the rollback gets its time even when the rest ran out
                self.run("ROLLBACK", limit=_GRACE)
        except _Failed:
            pass
        finally:
            self.conn.close()


def _pg_connect_reason(exc: Exception) -> str:
    code = getattr(exc, "sqlstate", None)
    if code:
        return _pg_reason(str(code))
    text = str(exc).lower()  # libpq's own wording, never quoted
    for needle, reason in (("timeout", "timed out"), ("refused", "connection refused"),
                           ("no such file", "no server at the socket"), ("ssl", "TLS failed"),
                           ("certificate", "TLS failed"), ("password", "authentication failed"),
                           ("could not translate host", "unknown host")):
        if needle in text:
            return reason
    return "connection failed"


def _measure_pg(upstream: UpstreamSettings, database: str, sql: str, parameters: tuple[str | None, ...] | None,
                info: StatementInfo, approach: _Approach, budget: _Budget) -> BlastRadius:
    try:
        conn = _PgConnection.open(upstream, database, budget)
    except _Failed as failed:
        return BlastRadius(note=str(failed))
    try:
        conn.begin()
        if approach.count:
            return _pg_count(conn, info, approach.count)
        return _pg_dml(conn, sql, parameters, info, approach)
    except _Failed as failed:
        return BlastRadius(note=f"not measured: {failed}")
    finally:
        conn.close()


def _pg_dml(conn: _PgConnection, sql: str, parameters: tuple[str | None, ...] | None, info: StatementInfo,
            approach: _Approach) -> BlastRadius:
    estimated: int | None = None
    estimate_note = ""
    written: set[tuple[str, str]] = set()
    if approach.plan:
        try:
            plan = json.loads(conn.value("EXPLAIN (FORMAT JSON, VERBOSE)\n" + sql, parameters) or "null")
            estimated, written = _pg_plan_facts(plan)
            estimate_note = "estimate: EXPLAIN" if estimated is not None else ""
        except _Failed as failed:
            # The statement would fail (or wait) the same way: nothing more to learn.
            return BlastRadius(note=f"not measured: {failed}")
        except (ValueError, TypeError):
            estimate_note = "no estimate: unreadable plan"
    if not approach.run:
        return BlastRadius(estimated, None, _note(estimate_note, approach.why_not))
    try:
        refusal = _pg_refusal(conn, info, written)
    except _Failed as failed:
        refusal = f"not executed: {failed}"
    if refusal:
        return BlastRadius(estimated, None, _note(estimate_note, refusal))
    try:
        conn.limit_step()
        res = conn.run(sql, parameters, discard_rows=True)
    except _Failed as failed:
        return BlastRadius(estimated, None, _note(estimate_note, f"not counted: {failed}"))
    rows = None if res is None else res.command_tuples
    if rows is None:
        return BlastRadius(estimated, None, _note(estimate_note, "not counted: no row count"))
    return BlastRadius(estimated, int(rows), _note(estimate_note, _COUNTED))


def _pg_plan_facts(plan: Any) -> tuple[int | None, set[tuple[str, str]]]:
    """(the estimate, the relations ModifyTable nodes write) of EXPLAIN (FORMAT JSON, VERBOSE)."""
    estimated: int | None = None
    written: set[tuple[str, str]] = set()
    entries = plan if isinstance(plan, list) else []
    for index, entry in enumerate(entries):
        top = entry.get("Plan") if isinstance(entry, dict) else None
        if not isinstance(top, dict):
            continue
        if index == 0:
            rows = top.get("Plan Rows")
            children = top.get("Plans") or []
            if top.get("Node Type") == "ModifyTable" and not rows and children and isinstance(children[0], dict):
                rows = children[0].get("Plan Rows")
            if isinstance(rows, (int, float)):
                estimated = int(rows)
        for node in _plan_nodes(top):
            if node.get("Node Type") == "ModifyTable":
                written.add((str(node.get("Schema", "")), str(node.get("Relation Name", ""))))
    return estimated, written


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans") or ():
        if isinstance(child, dict):
            yield from _plan_nodes(child)


_PG_RELATION = """
SELECT c.relkind::text, c.relhasrules,
       EXISTS (WITH RECURSIVE touched(relid, depth) AS (
                   SELECT p.relid::oid, 0 FROM pg_partition_tree(c.oid) p
                   UNION SELECT c.oid, 0
                   UNION SELECT con.conrelid, t.depth + 1
                   FROM pg_constraint con JOIN touched t ON con.confrelid = t.relid
                   WHERE con.contype = 'f' AND t.depth < 8
                     AND (con.confdeltype IN ('c', 'n', 'd') OR con.confupdtype IN ('c', 'n', 'd')))
               SELECT 1 FROM pg_trigger tg JOIN touched t ON tg.tgrelid = t.relid
               WHERE NOT tg.tgisinternal AND tg.tgenabled <> 'D'),
       c.reltuples::bigint
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2
"""
_RELKINDS: Final = {"v": "a view", "f": "a foreign table", "m": "a materialized view", "i": "an index",
                    "I": "an index", "S": "a sequence", "c": "a type"}


def _pg_refusal(conn: _PgConnection, info: StatementInfo, written: set[tuple[str, str]]) -> str:
    """Why the statement must not run ("" when it may): what its plan writes must be plain
    tables the analysis named, without user triggers (user code) or rules."""
    if not written:
        return "not executed: the plan writes no table"
    for schema, table in sorted(written):
        name = f"{schema}.{table}"
        if name not in info.writes:
            return f"not executed: it would write {name}, which it does not name (a view? another search_path?)"
        conn.limit_step()
        res = conn.run(_PG_RELATION, (schema, table))
        if res is None or res.ntuples < 1:
            return f"not executed: {name} not found"
        relkind = bytes(res.get_value(0, 0) or b"").decode()
        if relkind not in ("r", "p"):
            return f"not executed: {name} is {_RELKINDS.get(relkind, 'not a table')}"
        if res.get_value(0, 1) == b"t":
            return f"not executed: {name} has rules"
        if res.get_value(0, 2) == b"t":
            return f"not executed: {name} (or a table its cascades reach) has triggers (user code)"
    return ""


_PG_SCHEMA_TABLES = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'm') AND NOT c.relispartition ORDER BY c.relname LIMIT $2
"""


def _pg_count(conn: _PgConnection, info: StatementInfo, verb: str) -> BlastRadius:
    """DROP / TRUNCATE / ALTER: never run; the rows of the tables it names, counted."""
    from psycopg import sql as pgsql

    tables: list[tuple[str, str]] = []
    for name in sorted(info.writes):
        schema, table = _split_table(name)
        if table == "*":  # DROP SCHEMA: its tables
            res = conn.run(_PG_SCHEMA_TABLES, (schema, str(_MAX_COUNTED_TABLES + 1)))
            found = [bytes(res.get_value(i, 0) or b"").decode() for i in range(res.ntuples)]
            if len(found) > _MAX_COUNTED_TABLES:
                return BlastRadius(note=f"not measured: more than {_MAX_COUNTED_TABLES} tables in {schema}")
            tables.extend((schema, t) for t in found)
        else:
            tables.append((schema, table))
    counted: list[str] = []
    skipped: list[str] = []
    exact = 0
    estimated: int | None = 0
    for schema, table in tables:
        name = f"{schema}.{table}"
        res = conn.run(_PG_RELATION, (schema, table))
        if res is None or res.ntuples < 1:
            skipped.append(f"{name} not found")
            continue
        relkind = bytes(res.get_value(0, 0) or b"").decode()
        if relkind not in ("r", "p", "m"):
            skipped.append(f"{name} is {_RELKINDS.get(relkind, 'not a table')}")
            continue
        reltuples = int(bytes(res.get_value(0, 3) or b"-1").decode())
        estimated = None if estimated is None or reltuples < 0 else estimated + reltuples
        query = pgsql.SQL("SELECT count(*) FROM {}").format(pgsql.Identifier(schema, table)).as_string(conn.conn)
        try:
            conn.limit_step()
            exact += int(conn.value(query) or 0)
        except _Failed as failed:
            return BlastRadius(estimated, None, _note("estimate: pg_class.reltuples" if estimated is not None else "",
                                                      f"not counted: {failed}"))
        counted.append(name)
    skipped_note = f"not counted: {', '.join(skipped)}" if skipped else ""
    if not counted:
        return BlastRadius(None, None, _note(f"not measured: {verb} names no table with rows", skipped_note))
    effect = "may rewrite them" if verb == "ALTER" else "would remove them"
    return BlastRadius(estimated, exact, _note(
        f"exact: rows in {', '.join(counted)} ({verb} {effect})",
        "estimate: pg_class.reltuples" if estimated is not None else "", skipped_note))


# ------------------------------------------------------------------------------ MySQL / MariaDB


def _mysql_cause(exc: BaseException) -> BaseException | None:
    """The socket error under a PyMySQL error (it wraps OSError, ssl.SSLError, timeouts)."""
    cause = getattr(exc, "original_exception", None)
    return cause if isinstance(cause, BaseException) else exc.__context__


def _mysql_reason(exc: BaseException, budget: _Budget) -> str:
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
    cause = exc if isinstance(exc, OSError) else _mysql_cause(exc)
    suffix = f" ({code})" if code else ""
    if isinstance(cause, ssl.SSLError):
        return "TLS failed" + suffix
    if isinstance(cause, TimeoutError):
        return "no answer in time" + suffix
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused" + suffix
    if isinstance(cause, FileNotFoundError):
        return "no server at the socket" + suffix
    reason = _MYSQL_REASONS.get(code)
    if reason is None:
        return f"error {code}" if code else f"connection failed ({type(exc).__name__})"
    return f"{reason} ({code})"


def _mysql_connect(upstream: UpstreamSettings, database: str, budget: _Budget) -> Any:
    import pymysql
    from pymysql.constants import CLIENT

    from dbguard.runtime.tls import upstream_tls_context

    kwargs: dict[str, Any] = {
        "user": upstream.user,
        "password": upstream.password,
        "charset": "utf8mb4",
        "connect_timeout": budget.step(),
        "read_timeout": math.ceil(budget.timeout) + _LOCK_MARGIN + _GRACE,
        "write_timeout": math.ceil(budget.timeout) + _LOCK_MARGIN + _GRACE,
        "autocommit": True,
        "client_flag": CLIENT.FOUND_ROWS,  # UPDATE counts the rows it matches, as PostgreSQL does
        "program_name": _APPLICATION,
    }
    if database or upstream.database:
        kwargs["database"] = database or upstream.database
    mode = upstream.tls_mode
    if upstream.unix_socket:  # as libpq: no TLS on a local socket
        kwargs["unix_socket"] = upstream.unix_socket
        mode = UpstreamTlsMode.DISABLE
    else:
        kwargs["host"], kwargs["port"] = upstream.host, upstream.port
    if mode is UpstreamTlsMode.DISABLE:
        kwargs["ssl_disabled"] = True
    elif mode is not UpstreamTlsMode.PREFER:  # an explicit context: PyMySQL then requires TLS
        kwargs["ssl"] = upstream_tls_context(mode, upstream.root_cert)
    try:
        try:
            return pymysql.connect(**kwargs)
        except (pymysql.err.OperationalError, ssl.SSLError) as exc:
            tls_failed = (isinstance(exc, ssl.SSLError) or isinstance(_mysql_cause(exc), ssl.SSLError)
                          or (bool(exc.args) and exc.args[0] == 2026))
            if mode is not UpstreamTlsMode.PREFER or not tls_failed:
                raise
            kwargs.update(ssl_disabled=True, connect_timeout=budget.step())  # prefer: plain after all
            return pymysql.connect(**kwargs)
    except (pymysql.MySQLError, OSError) as exc:
        raise _Failed(f"not measured: cannot connect to the upstream ({_mysql_reason(exc, budget)})") from None


def _measure_mysql(upstream: UpstreamSettings, database: str, sql: str, parameters: tuple[str | None, ...] | None,
                   info: StatementInfo, approach: _Approach, budget: _Budget) -> BlastRadius:
    import pymysql

    try:
        conn = _mysql_connect(upstream, database, budget)
    except _Failed as failed:
        return BlastRadius(note=str(failed))
    in_transaction = False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@SESSION.sql_mode, VERSION()")
            sql_mode, version = cur.fetchone() or ("", "")
            modes = set(str(sql_mode).upper().split(","))
            # Lock waits count in whole seconds; the statement gets a little longer, so that a
            # lock wait is reported as one.
            seconds = max(1, math.ceil(budget.timeout))
            if "mariadb" in str(version).lower():
                statement_limit = f"max_statement_time = {seconds + _LOCK_MARGIN:.3f}"
            else:  # MySQL bounds only SELECTs; the socket's read timeout bounds the rest
                statement_limit = f"max_execution_time = {int((seconds + _LOCK_MARGIN) * 1000)}"
            cur.execute(f"SET SESSION {statement_limit}, innodb_lock_wait_timeout = {seconds},"
                        f" lock_wait_timeout = {seconds}")
            text, why_not = _mysql_text(conn, sql, parameters, "ANSI_QUOTES" in modes or "ANSI" in modes,
                                        "NO_BACKSLASH_ESCAPES" in modes)
            if not text:
                return BlastRadius(note=f"not measured: {why_not}")
            cur.execute("START TRANSACTION")
            in_transaction = True
            estimated: int | None = None
            estimate_note = ""
            if approach.plan:
                budget.step()
                try:
                    cur.execute("EXPLAIN " + text)
                    estimated = _mysql_explain_rows(cur)
                except pymysql.MySQLError as exc:
                    return BlastRadius(note=f"not measured: {_mysql_reason(exc, budget)}")
                estimate_note = "estimate: EXPLAIN rows" if estimated is not None else ""
            if not approach.run:
                return BlastRadius(estimated, None, _note(estimate_note, approach.why_not))
            refusal = _mysql_refusal(cur, info)
            if refusal:
                return BlastRadius(estimated, None, _note(estimate_note, refusal))
            try:
                rows = _mysql_affected_rows(conn, text, budget)
            except pymysql.MySQLError as exc:
                if not conn.open:
                    _mysql_kill(upstream, database, conn.thread_id(), budget)
                return BlastRadius(estimated, None, _note(estimate_note, f"not counted: {_mysql_reason(exc, budget)}"))
            except _Failed as failed:
                return BlastRadius(estimated, None, _note(estimate_note, f"not counted: {failed}"))
            if rows is None:
                return BlastRadius(estimated, None, _note(estimate_note, "not counted: no row count"))
            return BlastRadius(estimated, int(rows), _note(estimate_note, _COUNTED))
    except _Failed as failed:
        return BlastRadius(note=f"not measured: {failed}")
    except pymysql.MySQLError as exc:
        return BlastRadius(note=f"not measured: {_mysql_reason(exc, budget)}")
    finally:
        _mysql_close(conn, in_transaction)


def _mysql_affected_rows(conn: Any, text: str, budget: _Budget) -> int | None:
    """Run the statement; the rows it affected. Rows it returns (MariaDB's RETURNING) are read
    one at a time and counted, never held; past the time budget the connection is closed (the
    server rolls back), since PyMySQL would read the rest of the result before the ROLLBACK."""
    import pymysql.cursors

    budget.step()
    cur = conn.cursor(pymysql.cursors.SSCursor)
    cur.execute(text)
    count = 0
    if cur.description is not None:
        while cur.fetchone() is not None:
            count += 1
            if count % 1000 == 0 and time.monotonic() > budget.deadline:
                conn.close()  # not cur.close(): it would read the rest
                raise _Failed("no answer from the server in time")
    rows = cur.rowcount if cur.description is None else count
    cur.close()
    return int(rows) if rows is not None and 0 <= rows < 1 << 63 else None


def _mysql_close(conn: Any, in_transaction: bool) -> None:
    """ROLLBACK, then close (a connection that fails the ROLLBACK is rolled back by the server
    when it goes)."""
    with contextlib.suppress(Exception):  # a failed ROLLBACK: closing below rolls it back
        if in_transaction and conn.open:
            conn.rollback()
    if conn.open:
        try:
            conn.close()
        except Exception:  # the server went meanwhile: nothing left to close
            conn._force_close()


def _mysql_kill(upstream: UpstreamSettings, database: str, thread_id: int, budget: _Budget) -> None:
    """The client gave up on its statement (no answer in time): stop it on the server, so it
    does not keep its locks until it ends (MySQL bounds only SELECTs)."""
    import pymysql

    budget.deadline = max(budget.deadline, time.monotonic() + budget.timeout)
    try:
        killer = _mysql_connect(upstream, database, budget)
    except _Failed:
        return
    try:
        with killer.cursor() as cur:
            cur.execute(f"KILL QUERY {int(thread_id)}")
    except pymysql.MySQLError:
        pass
    finally:
        killer.close()


def _mysql_text(conn: Any, sql: str, parameters: tuple[str | None, ...] | None, ansi_quotes: bool,
                no_backslash_escapes: bool) -> tuple[str, str]:
    """(the text to run, "") or ("", why not): a prepared statement's `?` placeholders replaced
    by its values, escaped for this connection, found by the analyser's lexer under this
    connection's sql_mode (so never inside a string, an identifier or a comment)."""
    if parameters is None:
        return sql, ""
    from dbguard.sql.mysql_lexer import TokenKind, lex

    lexed = lex(sql, ansi_quotes=ansi_quotes, no_backslash_escapes=no_backslash_escapes)
    if lexed.error or len(lexed.statements) != 1:
        return "", "the statement's placeholders could not be found"
    marks = [t for t in lexed.statements[0].tokens if t.kind is TokenKind.PUNCT and t.text == "?"]
    if any(t.condition for t in marks):
        return "", "a placeholder inside a versioned comment"
    if len(marks) != len(parameters):
        return "", f"{len(marks)} placeholders for {len(parameters)} parameters"
    pieces: list[str] = []
    at = 0
    for mark, value in zip(marks, parameters, strict=True):
        if value is None:
            literal = "NULL"
        elif _LONG_DATA.match(value):
            return "", "a parameter was sent as long data"
        elif (hex_value := _HEX_VALUE.match(value)) is not None:
            literal = f"X'{hex_value.group(1)}'"
        else:
            literal = str(conn.escape(value))
        pieces.append(sql[at:mark.start])
        pieces.append(f" {literal} ")
        at = mark.end
    pieces.append(sql[at:])
    return "".join(pieces), ""


def _mysql_explain_rows(cur: Any) -> int | None:
    names = [str(column[0]).lower() for column in cur.description or ()]
    if "rows" not in names:
        return None
    index = names.index("rows")
    values = [int(row[index]) for row in cur.fetchall() if row[index] is not None]
    return max(values) if values else None


def _mysql_refusal(cur: Any, info: StatementInfo) -> str:
    """Why the statement must not run ("" when it may): a table it writes is not InnoDB (no
    rollback), unknown, a view, or has triggers (user code)."""
    if not info.writes:
        return "not executed: it names no table it writes"
    for name in sorted(info.writes):
        schema, table = _split_table(name)
        cur.execute("SELECT ENGINE, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s"
                    " AND TABLE_NAME = %s", (schema, table))
        row = cur.fetchone()
        if row is None:
            return f"not executed: {name} not found"
        engine, table_type = row
        if str(table_type).upper() == "VIEW":
            return f"not executed: {name} is a view"
        if str(engine or "").upper() != "INNODB":
            return f"not executed: {name} is {engine or 'of an unknown engine'} (cannot be rolled back)"
        cur.execute("SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = %s"
                    " AND EVENT_OBJECT_TABLE = %s", (schema, table))
        triggers = cur.fetchone()
        if triggers and int(triggers[0]):
            return f"not executed: {name} has triggers (user code)"
    return ""
