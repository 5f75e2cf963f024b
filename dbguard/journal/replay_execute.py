# dbguard/journal/replay_execute.py — owns `journal replay --execute`: re-running a recorded
# session's statements against another database (meant for a staging copy) and comparing each
# outcome with the recorded one. It decides which statements run (those the decision let run:
# allowed, or observed only) and which are skipped and why (blocked, held, redacted or missing
# parameters, truncated text, cancelled when recorded), runs them in order on ONE connection
# (PostgreSQL through psycopg's libpq connection, MySQL/MariaDB through PyMySQL), and compares
# the error code (SQLSTATE / errno; "" = success) and, when the journal has it, the row count.
# It renders nothing and never writes to a journal store; the command line (cli_journal.py)
# parses the DSN, prints the report and picks the exit status.
"""Re-run a recorded session against another database and report where outcomes differ."""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from dbguard.journal.chain import StoredEvent
from dbguard.journal.events import OutcomeEvent, SessionStartEvent, StatementEvent

__all__ = [
    "ExecuteError",
    "ExecuteTarget",
    "Executor",
    "Outcome",
    "PlannedStatement",
    "ReplayResult",
    "compare",
    "connect",
    "execute_replay",
    "plan",
    "session_protocol",
]

PROTOCOLS: Final = ("postgres", "mysql")

SAME: Final = "same"
DIFFERS: Final = "differs"
SKIPPED: Final = "skipped"
NOT_RECORDED: Final = "not recorded"  # it ran, but the journal has no outcome to compare with

# The codes a cancelled statement ends with: such a statement is not re-run (run to its end
# on the target it would do what the recorded one never did).
_CANCELLED: Final[Mapping[str, frozenset[str]]] = {
    "postgres": frozenset({"57014"}),  # query_canceled
    "mysql": frozenset({"1317", "3024"}),  # ER_QUERY_INTERRUPTED, ER_QUERY_TIMEOUT
}
# Statements whose data the client streams (COPY FROM STDIN, LOAD DATA LOCAL): the journal
# has the statement, not the data, so they are skipped. Leading comments defeat this check;
# then the executor still never sends data: PostgreSQL's COPY is aborted (57014), and PyMySQL
# refuses LOAD DATA LOCAL (local_infile is off).
_CLIENT_DATA: Final[Mapping[str, re.Pattern[str]]] = {
    "postgres": re.compile(r"\s*COPY\b.*\bFROM\s+STDIN\b", re.IGNORECASE | re.DOTALL),
    "mysql": re.compile(r"\s*LOAD\s+(?:DATA|XML)\b(?:\s+\w+)?\s+LOCAL\b", re.IGNORECASE),
}
# Reported when the connection to the target is gone and the driver gave no code of its own.
_CONNECTION_LOST: Final[Mapping[str, str]] = {"postgres": "08006", "mysql": "2013"}
_COPY_IN_ABORT: Final = b"dbguard journal replay --execute: the data of COPY FROM STDIN is not journaled"
_MYSQL_STATEMENT: Final = "dbguard_replay"  # the PREPARE name and user-variable prefix used for parameters


class ExecuteError(Exception):
    """The target cannot be used (unreachable, refused the login, wrong protocol): a usage
    error naming the target with its password redacted."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a statement ended: rows returned or affected (None when unknown) and the error code."""

    rows: int | None = None
    error_code: str = ""  # SQLSTATE (PostgreSQL), errno (MySQL); "" = success
    error_message: str = ""

    def describe(self) -> str:
        if self.error_code:
            return f"error {self.error_code}"
        return "ok" if self.rows is None else f"{self.rows} row{'' if self.rows == 1 else 's'}"

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "error_code": self.error_code, "error_message": self.error_message}


@dataclass(frozen=True, slots=True)
class PlannedStatement:
    """A recorded statement with its recorded outcome, and why it is not re-run ("" = it is)."""

    statement: StatementEvent
    recorded: Outcome | None
    skip_reason: str = ""


@dataclass(frozen=True, slots=True)
class ReplayResult:
    planned: PlannedStatement
    status: str  # same | differs | skipped | not recorded
    detail: str  # what differs, or why it was skipped
    replayed: Outcome | None = None

    def to_json(self) -> dict[str, Any]:
        st = self.planned.statement
        recorded = self.planned.recorded
        return {
            "statement_seq": st.seq, "text": st.text, "action": st.action, "enforced": st.enforced,
            "status": self.status, "detail": self.detail,
            "recorded": None if recorded is None else recorded.to_json(),
            "replayed": None if self.replayed is None else self.replayed.to_json(),
        }


# ---------------------------------------------------------------------------------------------
# What runs, and how outcomes compare (pure)


def session_protocol(events: Sequence[StoredEvent]) -> str | None:
    """The protocol of the session's listener, from its session_start (None when pruned away)."""
    for stored in events:
        event = stored.event()
        if isinstance(event, SessionStartEvent):
            return event.protocol
    return None


def plan(events: Sequence[StoredEvent], protocol: str) -> list[PlannedStatement]:
    """Every statement of the session in order, with its recorded outcome and whether it runs."""
    statements: list[StatementEvent] = []
    outcomes: dict[int, Outcome] = {}
    for stored in events:
        event = stored.event()
        if isinstance(event, StatementEvent):
            statements.append(event)
        elif isinstance(event, OutcomeEvent):
            outcomes[event.statement_seq] = Outcome(event.rows, event.error_code, event.error_message)
    return [PlannedStatement(st, outcomes.get(st.seq), _skip_reason(st, outcomes.get(st.seq), protocol))
            for st in statements]


def _skip_reason(st: StatementEvent, recorded: Outcome | None, protocol: str) -> str:
    if st.enforced and st.action != "allow":
        return {"block": "blocked when recorded", "hold": "held when recorded"}.get(
            st.action, f"decision {st.action!r} when recorded")
    if st.parameters_redacted:
        return f"parameters were redacted ({st.parameter_count} not journaled)"
    if st.parameter_count and st.parameters is None:
        return f"parameters were not journaled ({st.parameter_count})"
    if protocol == "postgres" and any(p is not None and p.startswith("\\x") for p in st.parameters or ()):
        return "a parameter is journaled as \\x… hex (sent in binary format; its type is not journaled)"
    if st.text_truncated:
        return "the journal holds only the start of its text"
    client_data = _CLIENT_DATA.get(protocol)
    if client_data is not None and client_data.match(st.text):
        return "its data came from the client and is not journaled (COPY FROM STDIN, LOAD DATA LOCAL)"
    if recorded is not None and recorded.error_code in _CANCELLED.get(protocol, frozenset()):
        return f"cancelled when recorded (error {recorded.error_code})"
    return ""


def compare(recorded: Outcome | None, replayed: Outcome) -> tuple[str, str]:
    """(status, detail): the error codes must be equal, and the row counts too when both are known."""
    if recorded is None:
        return NOT_RECORDED, f"no recorded outcome; replayed: {replayed.describe()}"
    if recorded.error_code != replayed.error_code:
        return DIFFERS, f"{recorded.describe()} → {replayed.describe()}"
    if not recorded.error_code and recorded.rows is not None and recorded.rows != replayed.rows:
        return DIFFERS, f"{recorded.describe()} → {replayed.describe()}"
    return SAME, ""


# ---------------------------------------------------------------------------------------------
# Running


class Executor(Protocol):
    """One connection to the target."""

    protocol: str

    def run(self, text: str, parameters: Sequence[str | None]) -> Outcome:
        """Run one recorded statement (several, for a multi-statement text: the outcome is the
        first error, else the sum of their row counts, as sessions record it). Never raises
        for SQL errors."""
        ...

    def alive(self) -> bool: ...

    def close(self) -> None: ...


def execute_replay(
    planned: Sequence[PlannedStatement],
    executor: Executor,
    *,
    before: Callable[[PlannedStatement, int], None] | None = None,
) -> Iterator[ReplayResult]:
    """Run the statements that may run, in order, yielding one result per statement (skipped
    ones included). `before(statement, gap_us)` is called before each statement that runs, with
    the recorded time since the previous one that ran (for pacing or stepping). Once the
    connection is lost, the remaining statements are skipped."""
    previous_us: int | None = None
    lost = ""
    for item in planned:
        if item.skip_reason or lost:
            yield ReplayResult(item, SKIPPED, item.skip_reason or lost)
            continue
        st = item.statement
        if before is not None:
            before(item, 0 if previous_us is None else max(0, st.time_us - previous_us))
        previous_us = st.time_us
        replayed = executor.run(st.text, st.parameters or ())
        if not executor.alive():
            lost = f"the connection to the target was lost at #{st.seq}"
            if not replayed.error_code:
                replayed = Outcome(None, _CONNECTION_LOST[executor.protocol], lost)
        status, detail = compare(item.recorded, replayed)
        yield ReplayResult(item, status, detail, replayed)


@dataclass(frozen=True)
class ExecuteTarget:
    """Where to run: built by the command line from a postgresql:// or mysql:// DSN."""

    protocol: str  # postgres | mysql
    label: str  # the DSN with its password redacted: for messages
    conninfo: str = field(default="", repr=False)  # PostgreSQL: the libpq URL, password included
    host: str = ""
    port: int = 0
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str | None = None
    sslmode: str = "prefer"  # disable | allow | prefer | require | verify-ca | verify-full
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    charset: str = "utf8mb4"
    connect_timeout: float = 10.0


def connect(target: ExecuteTarget) -> Executor:
    """One connection to the target; ExecuteError (naming the redacted DSN) when it fails."""
    if target.protocol == "postgres":
        return _PgExecutor.open(target)
    if target.protocol == "mysql":
        return _MysqlExecutor.open(target)
    raise ExecuteError(f"unknown protocol {target.protocol!r}")


def _scrub(message: str, target: ExecuteTarget) -> str:
    message = " ".join(str(message).split())
    if target.password:
        message = message.replace(target.password, "***")
    return message


class _PgExecutor:
    """PostgreSQL: the libpq connection under psycopg, driven directly, so that texts run as
    recorded: without parameters as a simple Query (several statements allowed), with parameters
    as one unnamed extended-protocol statement with $1..$n and text values of unspecified type
    (the server infers them, as for a client that sent no types)."""

    protocol = "postgres"

    def __init__(self, conn: Any, target: ExecuteTarget) -> None:
        self._conn = conn
        self._target = target

    @classmethod
    def open(cls, target: ExecuteTarget) -> _PgExecutor:
        import psycopg

        try:
            conn = psycopg.connect(target.conninfo, autocommit=True,
                                   connect_timeout=max(1, round(target.connect_timeout)))
        except psycopg.Error as e:
            raise ExecuteError(f"cannot connect to {target.label}: {_scrub(str(e), target)}") from None
        return cls(conn, target)

    def run(self, text: str, parameters: Sequence[str | None]) -> Outcome:
        from psycopg import pq

        pgconn = self._conn.pgconn
        sql = text.encode()  # client_encoding is UTF8 (psycopg's default)
        try:
            if parameters:
                values = [None if p is None else p.encode() for p in parameters]
                pgconn.send_query_params(sql, values, result_format=0)
            else:
                pgconn.send_query(sql)
        except Exception as e:  # the connection is gone
            return Outcome(None, _CONNECTION_LOST["postgres"], _scrub(str(e), self._target))
        rows: int | None = None
        error: Outcome | None = None
        while (res := pgconn.get_result()) is not None:
            status = res.status
            if status == pq.ExecStatus.COPY_OUT:
                while pgconn.get_copy_data(0)[0] >= 0:
                    pass
                continue
            if status in (pq.ExecStatus.COPY_IN, pq.ExecStatus.COPY_BOTH):
                pgconn.put_copy_end(_COPY_IN_ABORT)
                continue
            if status in (pq.ExecStatus.FATAL_ERROR, pq.ExecStatus.BAD_RESPONSE):
                if error is None:
                    code = (res.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode("ascii", "replace")
                    message = (res.error_field(pq.DiagnosticField.MESSAGE_PRIMARY)
                               or res.error_message or b"").decode("utf-8", "replace")
                    error = Outcome(None, code or _CONNECTION_LOST["postgres"], _scrub(message, self._target))
                continue
            if res.command_tuples is not None:
                rows = res.command_tuples + (rows or 0)
        return error if error is not None else Outcome(rows, "")

    def alive(self) -> bool:
        from psycopg import pq

        return bool(self._conn.pgconn.status == pq.ConnStatus.OK)

    def close(self) -> None:
        self._conn.close()


class _MysqlExecutor:
    """MySQL/MariaDB through PyMySQL, with the server's own autocommit default (what the
    recorded session began with; its own SET autocommit statements are in the journal). A text
    without parameters runs as a COM_QUERY (several statements allowed). A text with
    parameters was prepared with `?` placeholders: it is prepared again on the server
    (`PREPARE dbguard_replay FROM @dbguard_replay_sql`) and run with `EXECUTE … USING` user
    variables holding the recorded values as strings, so the server, not dbguard, finds the
    placeholders, and the values only ever travel as escaped string literals. The user
    variables are reset to NULL afterwards."""

    protocol = "mysql"

    def __init__(self, conn: Any, target: ExecuteTarget) -> None:
        self._conn = conn
        self._target = target
        self._lost = False

    @classmethod
    def open(cls, target: ExecuteTarget) -> _MysqlExecutor:
        try:
            import pymysql
            from pymysql.constants import CLIENT
        except ImportError:
            raise ExecuteError("--execute with a mysql:// DSN needs PyMySQL (a dependency of dbguard): reinstall"
                               " dbguard") from None
        kwargs: dict[str, Any] = {
            "user": target.user or "",
            "password": target.password or "",
            "charset": target.charset,
            "connect_timeout": target.connect_timeout,
            "autocommit": None,  # keep the server's default: PyMySQL would otherwise turn it off
            "client_flag": CLIENT.MULTI_STATEMENTS,
        }
        if target.host.startswith("/"):
            kwargs["unix_socket"] = target.host
        else:
            kwargs["host"], kwargs["port"] = target.host, target.port
        if target.database:
            kwargs["database"] = target.database
        kwargs.update(_mysql_tls(target))
        try:
            conn = pymysql.connect(**kwargs)
        except (pymysql.MySQLError, OSError, ssl.SSLError) as e:
            code = f"error {_mysql_code(e)}: " if _mysql_code(e) else ""
            raise ExecuteError(f"cannot connect to {target.label}: {code}{_scrub(_mysql_message(e), target)}") from None
        executor = cls(conn, target)
        if target.sslmode in ("require", "verify-ca", "verify-full") and not executor._tls_in_use():
            executor.close()
            raise ExecuteError(f"cannot connect to {target.label}: sslmode={target.sslmode} but the server "
                               "did not take TLS")
        return executor

    def _tls_in_use(self) -> bool:
        with self._conn.cursor() as cur:
            cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            row = cur.fetchone()
        return bool(row and row[1])

    def run(self, text: str, parameters: Sequence[str | None]) -> Outcome:
        import pymysql

        try:
            with self._conn.cursor() as cur:
                if not parameters:
                    return self._drain(cur, text)
                variables = [f"@{_MYSQL_STATEMENT}_{i}" for i in range(1, len(parameters) + 1)]
                text_variable = f"@{_MYSQL_STATEMENT}_sql"
                assignments = ", ".join(f"{v} = %s" for v in (text_variable, *variables))
                cur.execute(f"SET {assignments}", (text, *parameters))
                outcome = self._drain(cur, f"PREPARE {_MYSQL_STATEMENT} FROM {text_variable}")
                if not outcome.error_code:
                    outcome = self._drain(cur, f"EXECUTE {_MYSQL_STATEMENT} USING {', '.join(variables)}")
                    if self.alive():
                        cur.execute(f"DEALLOCATE PREPARE {_MYSQL_STATEMENT}")
                if self.alive():
                    cur.execute("SET " + ", ".join(f"{v} = NULL" for v in (text_variable, *variables)))
                return outcome
        except pymysql.MySQLError as e:  # from the bookkeeping statements: the connection is gone
            self._lost = True
            return Outcome(None, _mysql_code(e) or _CONNECTION_LOST["mysql"], _scrub(_mysql_message(e), self._target))

    def _drain(self, cur: Any, sql: str) -> Outcome:
        """Run `sql` as it is (no %-substitution) and read every result set: the first error,
        else the sum of the results' row counts (affected rows, or the rows of a result set)."""
        import pymysql

        try:
            cur.execute(sql)
            rows = cur.rowcount if cur.rowcount >= 0 else None
            while cur.nextset():
                if cur.rowcount >= 0:
                    rows = cur.rowcount + (rows or 0)
        except pymysql.MySQLError as e:
            if _mysql_code(e) in ("", "2006", "2013", "2055"):
                self._lost = True
            return Outcome(None, _mysql_code(e) or _CONNECTION_LOST["mysql"], _scrub(_mysql_message(e), self._target))
        return Outcome(rows, "")

    def alive(self) -> bool:
        return not self._lost and bool(self._conn.open)

    def close(self) -> None:
        try:
            self._conn.close()
        except Exception:  # already closed by the server: nothing to do
            self._lost = True


def _mysql_code(e: BaseException) -> str:
    return str(e.args[0]) if e.args and isinstance(e.args[0], int) else ""


def _mysql_message(e: BaseException) -> str:
    if len(e.args) >= 2 and isinstance(e.args[0], int):
        return str(e.args[1])
    return str(e)


def _mysql_tls(target: ExecuteTarget) -> dict[str, Any]:
    """PyMySQL's TLS arguments for a libpq-style sslmode: disable → none; allow/prefer → TLS
    when the server offers it, unverified (PyMySQL's default); require → TLS, unverified;
    verify-ca / verify-full → the certificate checked against sslrootcert (or the system's
    roots), and the host name too for verify-full."""
    mode = target.sslmode
    if mode == "disable":
        return {"ssl_disabled": True}
    if mode in ("allow", "prefer"):
        return {}
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if mode in ("verify-ca", "verify-full"):
        if target.sslrootcert and target.sslrootcert != "system":
            context.load_verify_locations(target.sslrootcert)
        else:
            context.load_default_certs()
        context.verify_mode = ssl.CERT_REQUIRED
        context.check_hostname = mode == "verify-full"
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if target.sslcert:
        context.load_cert_chain(target.sslcert, target.sslkey)
    return {"ssl": context}
