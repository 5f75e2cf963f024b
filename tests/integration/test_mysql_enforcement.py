"""Policy enforced on the MySQL wire: disguised destructive statements leave the data unchanged.

One throwaway MariaDB (its own: a statement that slipped through must not hurt other tests)
with canary tables named like the tables of tests/cases/mysql/*.yaml, and one `dbguard serve`
in front of it, logged in upstream as root (a powerful service account: a bypass would
really drop, grant or write files). A rules file written here blocks what destroys or
escapes: drops and truncates, schema changes, unbounded or agent deletes and updates, loads,
grants, code and files.

- Every analysis case whose analysis that policy refuses is sent through the proxy (PyMySQL,
  multi-statements on, the case's sql_mode set beforehand): the client gets ERR 1227, the
  session goes on, and a snapshot of the server (table checksums, columns, accounts and
  grants, routines, triggers, views, events, global variables, files) is unchanged; a canary
  that did change is re-seeded so one bypass does not fail every later case.
- Allowed read-only cases are not refused and return what a direct connection returns.
- Targeted evasions: multi-statement messages, versioned comments, comment syntax, backslash
  escapes against NO_BACKSLASH_ESCAPES and ANSI_QUOTES (set in the same message and earlier),
  USE, SQL-level and protocol-level prepared statements, LOAD DATA LOCAL INFILE, client
  character sets whose multi-byte characters contain 0x5C, stored procedures, HANDLER, RENAME,
  ALTER ... DROP, CREATE ... SELECT, upserts, REPLACE, DELETE ... LIMIT, multi-table writes,
  DO SLEEP, INTO OUTFILE, LOAD_FILE(), COM_CHANGE_USER, a refusal inside a transaction, and
  commands that act without SQL (COM_DROP_DB, COM_SHUTDOWN...).
- The gate reads each message with the session state the server really has: after a message
  the server stopped at an error, after COM_RESET_CONNECTION, with a server-wide sql_mode, with
  the character set announced at login, after a SET run through COM_STMT_EXECUTE; and what
  drivers and dumps send to change sql_mode is not refused.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pymysql.connections
import pytest
import yaml
from pymysql.constants import CLIENT

from dbguard.devdb.mariadb import ThrowawayMariaDB
from dbguard.model import (
    Action,
    Feature,
    Identity,
    IdentityKind,
    ParseSettings,
    SessionInfo,
    StatementKind,
)
from dbguard.policy.engine import evaluate
from dbguard.policy.rules import parse_policy_text
from dbguard.sql import analyse
from dbguard.wire.mysql import messages as m
from tests.integration.harness import REPO_ROOT, ProxyProcess, free_port, wait_for_port

pytestmark = pytest.mark.integration

CASES_DIR = REPO_ROOT / "tests" / "cases" / "mysql"
IDENTITIES = (("copilot", "agent", "copilot-secret"), ("alice", "human", "alice-secret"))
ER_REFUSED = 1227
RULES = """
defaults: {action: allow, on_parse_error: block}
rules:
  - id: no-drop
    description: nobody drops or truncates through the proxy
    when: {statement: [drop, truncate]}
    action: block
  - id: no-unbounded-writes
    description: writes must say which rows
    when: {statement: [delete, update], where: missing}
    action: block
  - id: agents-write-scratch-only
    description: agents delete, update and create only in scratch
    when: {identity_kind: agent, statement: [delete, update, create]}
    unless: {tables: ["scratch.*"]}
    action: block
  - id: no-schema-or-privilege-changes
    description: schema changes, loads, grants and code go through a DBA
    when: {statement: [alter, grant, revoke, load, call, do]}
    action: block
  - id: no-server-side-effects
    description: no server files, programs, administration, privileges or new code
    when: {features: [file_access, program_execution, system_admin, untrusted_code, privilege_change]}
    action: block
  - id: agents-no-hidden-code
    description: agents run no code the proxy cannot see
    when: {identity_kind: agent, features: [dynamic_sql, user_code_call]}
    action: block
  - id: secrets-stay-secret
    description: nobody reads the secrets table through the proxy
    when: {tables: ["app.secrets"]}
    action: block
  - id: no-sleeping
    description: nobody parks a server thread
    when: {functions: [sleep, benchmark, get_lock]}
    action: block
"""
POLICY = parse_policy_text(RULES)
AGENT = SessionInfo("offline", "app-mysql", "mysql", Identity("copilot", IdentityKind.AGENT), "127.0.0.1:1", "app")

# Tables the analysis cases name most (app.t alone in a third of them), in app and shop.
CANARY_TABLES = (
    "app.t", "app.users", "app.t1", "app.t2", "app.t3", "app.u", "app.orders", "app.s", "app.secrets",
    "app.a", "app.b", "app.customers", "app.counters", "app.accounts", "app.archive", "app.logs",
    "app.sbtest1", "app.notes", "shop.t", "shop.orders", "shop.users", "shop.t1",
)
CANARY_COLUMNS = ("id INT PRIMARY KEY, a INT, b INT, c INT, x INT, k INT, name VARCHAR(100), "
                  "email VARCHAR(100), note VARCHAR(100), created DATETIME")
# Server tables holding accounts, grants and stored objects (all small).
SYSTEM_TABLES = ("mysql.global_priv", "mysql.db", "mysql.tables_priv", "mysql.columns_priv", "mysql.procs_priv",
                 "mysql.roles_mapping", "mysql.proxies_priv", "mysql.proc", "mysql.event", "mysql.servers",
                 "mysql.plugin", "mysql.func")
GLOBALS = ("sql_mode", "general_log", "general_log_file", "read_only", "event_scheduler", "max_connections",
           "local_infile", "log_bin_trust_function_creators", "innodb_file_per_table", "slow_query_log",
           "max_allowed_packet", "character_set_server", "wait_timeout", "init_connect", "autocommit")
OUTFILE_DIR = Path(tempfile.gettempdir())


def _seed_sql() -> str:
    statements = ["CREATE DATABASE IF NOT EXISTS shop", "CREATE DATABASE IF NOT EXISTS scratch"]
    for table in CANARY_TABLES:
        statements.append(f"DROP TABLE IF EXISTS {table}")
        statements.append(f"CREATE TABLE {table} ({CANARY_COLUMNS})")
        statements.append(
            f"INSERT INTO {table} (id, a, b, c, x, k, name, email, note, created) VALUES "
            "(1, 1, 10, 100, 1, 1, 'one', 'one@example.com', 'canary', '2026-01-01 00:00:00'), "
            "(2, 2, 20, 200, 2, 2, 'two', 'two@example.com', 'canary', '2026-01-02 00:00:00'), "
            "(3, 3, 30, 300, 3, 3, 'three', 'three@example.com', 'canary', '2026-01-03 00:00:00')")
    statements.append("CREATE TABLE IF NOT EXISTS scratch.t (id INT PRIMARY KEY, name VARCHAR(100))")
    return ";\n".join(statements)


@dataclass
class Guarded:
    """The server, the proxy in front of it, and a direct root connection for snapshots."""

    server: ThrowawayMariaDB
    proxy: ProxyProcess
    direct: pymysql.connections.Connection[Any]
    baseline: dict[str, str] = field(default_factory=dict)

    def root(self, database: str | None = "app", **kwargs: Any) -> pymysql.connections.Connection[Any]:
        return pymysql.connect(**self.server.connect_kwargs(user="root", database=database or ""),
                               client_flag=CLIENT.MULTI_STATEMENTS, **kwargs)

    def _direct(self) -> pymysql.connections.Connection[Any]:
        if not self.direct.open:  # a statement that slipped through may have killed it
            self.direct = self.root()
        return self.direct

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with self._direct().cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())

    def snapshot(self) -> dict[str, str]:
        """Everything a destructive statement could change, one entry per part, in one round
        trip and without information_schema (its temporary tables are slow to make per case):
        table checksums (the canaries, accounts, grants, routines, events), each canary's
        definition, the global variables rules protect, and the files of the databases'
        directories (tables, views, triggers) and of the outfile directory."""
        sql = ";".join([f"CHECKSUM TABLE {', '.join(CANARY_TABLES + SYSTEM_TABLES)}",
                        *(f"SHOW CREATE TABLE {table}" for table in CANARY_TABLES),
                        "SELECT " + ", ".join(f"@@GLOBAL.{name}" for name in GLOBALS)])
        parts: dict[str, str] = {}
        try:
            results = run_all(self._direct(), sql)
        except pymysql.err.MySQLError as error:  # a canary is gone
            return {"error": str(error.args)}
        for table, checksum in results[0]:
            parts[f"checksum {table}"] = str(checksum)
        for table, result in zip(CANARY_TABLES, results[1:], strict=False):
            parts[f"definition {table}"] = hashlib.sha256(repr(result).encode()).hexdigest()[:16]
        parts["globals"] = repr(results[-1])
        datadir = self.server.datadir
        parts["databases"] = " ".join(sorted(entry.name for entry in datadir.iterdir() if entry.is_dir()))
        for database in ("app", "shop"):
            parts[f"files {database}"] = " ".join(sorted(entry.name for entry in (datadir / database).iterdir()))
        parts["outfiles"] = " ".join(sorted(entry.name for entry in OUTFILE_DIR.glob("dbguard-enforce-*")))
        return parts

    def changes(self) -> list[str]:
        now = self.snapshot()
        return sorted(key for key in set(now) | set(self.baseline) if now.get(key) != self.baseline.get(key))

    def reseed(self) -> None:
        """Put the canaries back after a statement changed them (only ever after a failure)."""
        with self.root(None) as conn, conn.cursor() as cur:
            cur.execute(_seed_sql())
            while cur.nextset():
                pass
        for leftover in OUTFILE_DIR.glob("dbguard-enforce-*"):
            leftover.unlink(missing_ok=True)
        self.baseline = self.snapshot()


def _write_config(directory: Path, upstream_dsn: str, port: int) -> Path:
    lines = ["listeners:", "  - name: app-mysql", "    protocol: mysql", f"    listen: 127.0.0.1:{port}",
             f"    upstream: {upstream_dsn}", "identities:"]
    for name, kind, secret in IDENTITIES:
        lines += [f"  - name: {name}", f"    kind: {kind}", f"    secret: {secret}"]
    lines.append("rules: rules.yaml")
    (directory / "rules.yaml").write_text(RULES, encoding="utf-8")
    path = directory / "dbguard.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def guarded() -> Iterator[Guarded]:
    server = ThrowawayMariaDB()
    try:
        server.start()
        server.run_sql(_seed_sql())
        with tempfile.TemporaryDirectory(prefix="dbguard-mysql-enforce-") as tmp:
            directory = Path(tmp)
            port = free_port()
            config = _write_config(directory, server.dsn(user="root", database="app"), port)
            log_path = directory / "dbguard.log"
            with log_path.open("wb") as log_file:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "dbguard", "serve", "-c", str(config), "--log-level", "info"],
                    cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT, env=dict(os.environ))
            proxy = ProxyProcess(config, port, proc, log_path, {name: secret for name, _, secret in IDENTITIES})
            try:
                wait_for_port("127.0.0.1", port, 20.0, proc)
                direct = pymysql.connect(**server.connect_kwargs(user="root", database="app"),
                                         client_flag=CLIENT.MULTI_STATEMENTS)
                guarded = Guarded(server, proxy, direct)
                guarded.baseline = guarded.snapshot()
                yield guarded
                guarded.direct.close()
            finally:
                status = proxy.stop()
            assert status == 0, proxy.log()[-3000:]
            assert "Traceback" not in proxy.log(), proxy.log()[-5000:]
    finally:
        server.close()
        for leftover in OUTFILE_DIR.glob("dbguard-enforce-*"):
            leftover.unlink(missing_ok=True)


def connect(guarded: Guarded, user: str = "copilot", *, database: str | None = "app",
            **kwargs: Any) -> pymysql.connections.Connection[Any]:
    kwargs.setdefault("client_flag", CLIENT.MULTI_STATEMENTS)
    kwargs.setdefault("autocommit", True)
    return pymysql.connect(host=guarded.proxy.host, port=guarded.proxy.port, user=user,
                           password=guarded.proxy.secrets[user], database=database, connect_timeout=10, **kwargs)


def run_all(conn: pymysql.connections.Connection[Any], sql: str | bytes) -> list[list[tuple[Any, ...]]]:
    """Every result set of a (multi-)statement message."""
    results: list[list[tuple[Any, ...]]] = []
    with conn.cursor() as cur:
        cur.execute(sql)  # PyMySQL sends bytes as they are
        while True:
            results.append(list(cur.fetchall()) if cur.description is not None else [])
            if not cur.nextset():
                break
    return results


def refused(conn: pymysql.connections.Connection[Any], sql: str | bytes) -> str:
    """Send `sql`, expect dbguard's ERR 1227, return its message; the session must go on."""
    with pytest.raises(pymysql.err.MySQLError) as info:
        run_all(conn, sql)
    assert info.value.args[0] == ER_REFUSED, info.value.args
    message = str(info.value.args[1])
    assert message.startswith("dbguard: blocked"), message
    assert run_all(conn, "SELECT 1") == [[(1,)]]
    return message


def assert_unchanged(guarded: Guarded, what: str) -> None:
    changed = guarded.changes()
    if changed:
        guarded.reseed()
    assert not changed, f"{what} changed the server: {changed}"


# ----------------------------------------------------------------------------- the case files


@dataclass(frozen=True)
class Case:
    label: str
    sql: str
    settings: ParseSettings
    blocked: bool
    read_only: bool


_READ_KINDS = frozenset({StatementKind.SELECT, StatementKind.SHOW, StatementKind.EXPLAIN})
# Calls that wait, lock or depend on the connection: not worth comparing through two paths.
_SKIPPED_READ_FUNCTIONS = frozenset({"sleep", "benchmark", "get_lock", "release_lock", "release_all_locks",
                                     "master_pos_wait", "source_pos_wait", "is_used_lock", "is_free_lock"})


def _load_cases() -> list[Case]:
    cases = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for index, case in enumerate(document.get("cases") or ()):
            values = {**(document.get("settings") or {}), **(case.get("settings") or {})}
            # The proxy's session is in database app (the one case analysed before any USE too).
            settings = ParseSettings("mysql", search_path=("app",), ansi_quotes=bool(values.get("ansi_quotes")),
                                     no_backslash_escapes=bool(values.get("no_backslash_escapes")))
            sql = str(case["sql"])
            infos = analyse(sql, settings)
            decision = evaluate(POLICY, infos, AGENT)
            blocked = decision.action is not Action.ALLOW and decision.enforced
            read_only = not blocked and all(
                info.kinds <= _READ_KINDS and info.features <= {Feature.MULTI_STATEMENT} and not info.changes_parsing
                and not info.functions & _SKIPPED_READ_FUNCTIONS for info in infos)
            label = f"{path.stem}/{index}:" + " ".join(sql.split())[:50]
            cases.append(Case(label, sql, settings, blocked, read_only))
    return cases


CASES = _load_cases()


class Sessions:
    """One proxy session (and one direct session) per sql_mode the cases need, reused."""

    def __init__(self, guarded: Guarded) -> None:
        self.guarded = guarded
        self.proxied: dict[tuple[bool, bool], pymysql.connections.Connection[Any]] = {}
        self.direct: dict[tuple[bool, bool], pymysql.connections.Connection[Any]] = {}
        self.other: dict[tuple[bool, bool], pymysql.connections.Connection[Any]] = {}

    @staticmethod
    def _mode(key: tuple[bool, bool]) -> str:
        modes = ["STRICT_TRANS_TABLES"] + ["ANSI_QUOTES"] * key[0] + ["NO_BACKSLASH_ESCAPES"] * key[1]
        return f"SET sql_mode = '{','.join(modes)}'"

    def _open(self, pool: dict[tuple[bool, bool], pymysql.connections.Connection[Any]], key: tuple[bool, bool],
              proxied: bool) -> pymysql.connections.Connection[Any]:
        conn = pool.get(key)
        if conn is not None and conn.open:
            return conn
        conn = connect(self.guarded) if proxied else self.guarded.root(read_timeout=30)
        run_all(conn, self._mode(key))
        pool[key] = conn
        return conn

    def proxy(self, settings: ParseSettings) -> pymysql.connections.Connection[Any]:
        return self._open(self.proxied, (settings.ansi_quotes, settings.no_backslash_escapes), True)

    def root(self, settings: ParseSettings, other: bool = False) -> pymysql.connections.Connection[Any]:
        return self._open(self.other if other else self.direct, (settings.ansi_quotes,
                                                                 settings.no_backslash_escapes), False)

    def close(self) -> None:
        for conn in (*self.proxied.values(), *self.direct.values(), *self.other.values()):
            if conn.open:
                conn.close()


@pytest.fixture(scope="module")
def sessions(guarded: Guarded) -> Iterator[Sessions]:
    pool = Sessions(guarded)
    yield pool
    pool.close()


@pytest.mark.parametrize("case", [c for c in CASES if c.blocked], ids=lambda c: c.label)
def test_refused_case_changes_nothing(guarded: Guarded, sessions: Sessions, case: Case) -> None:
    conn = sessions.proxy(case.settings)
    try:
        refused(conn, case.sql)
    except BaseException:
        if conn.open:
            conn.close()  # it ran: whatever it did to the session, the next case gets a fresh one
        raise
    finally:
        assert_unchanged(guarded, case.label)


def _outcome(conn: pymysql.connections.Connection[Any], sql: str | bytes) -> tuple[str, Any]:
    try:
        return "rows", run_all(conn, sql)
    except pymysql.err.MySQLError as error:
        return "error", error.args[0]


@pytest.mark.parametrize("case", [c for c in CASES if c.read_only], ids=lambda c: c.label)
def test_allowed_read_runs_as_directly(guarded: Guarded, sessions: Sessions, case: Case) -> None:
    direct = _outcome(sessions.root(case.settings), case.sql)
    through = _outcome(sessions.proxy(case.settings), case.sql)
    assert through != ("error", ER_REFUSED), f"refused: {case.sql}"
    again = _outcome(sessions.root(case.settings, other=True), case.sql)
    if direct == again:  # deterministic (no NOW(), CONNECTION_ID(), processlist...)
        assert through == direct
    else:
        assert through[0] == direct[0]
    assert_unchanged(guarded, case.label)


# ------------------------------------------------------------------------------ targeted evasions


def count(guarded: Guarded, table: str, where: str = "1") -> int:
    rows = guarded.query(f"SELECT COUNT(*) FROM {table} WHERE {where}")
    return int(rows[0][0])


def test_a_message_is_decided_as_a_whole(guarded: Guarded) -> None:
    with connect(guarded) as conn:
        assert run_all(conn, "SELECT 1; SELECT name FROM t WHERE id = 2") == [[(1,)], [("two",)]]
        # Nothing of a refused message runs: not even the INSERT before the DROP.
        refused(conn, "INSERT INTO t (id, name) VALUES (100, 'before'); DROP TABLE t")
        refused(conn, "INSERT INTO t (id, name) VALUES (101, 'before');\nSELECT 1;/* x */ TRUNCATE t")
        assert count(guarded, "app.t", "id >= 100") == 0
        # An allowed message with an INSERT runs whole.
        run_all(conn, "INSERT INTO t (id, name) VALUES (102, 'kept'); SELECT 1")
        assert count(guarded, "app.t", "id = 102") == 1
    guarded.query("DELETE FROM app.t WHERE id >= 100")
    assert_unchanged(guarded, "a message decided as a whole")


@pytest.mark.parametrize("sql", [
    "/*!50000 DROP TABLE t */",
    "/*!DROP TABLE t*/",
    "/*M!100000 DROP TABLE t*/",
    "/*M! DROP TABLE t*/",
    "/*!99999 DROP TABLE t */",
    "SELECT 1 /*!50000 ; DROP TABLE t */",
    "SELECT 1 /*M!100100 ; DROP TABLE t */",
    "SELECT 1; /*!50000 DROP TABLE t */",
    "/*!50000 SELECT 1; */ DROP TABLE t",
    "SELECT 1 /*! FROM t; DELETE FROM t */",
    "SELECT /*!50000 1 FROM t; TRUNCATE t; SELECT */ 1",
    "DELETE FROM t /*!50000 WHERE 1=1 */",
    "DELETE FROM t WHERE id = 1 /*!50000 OR 1=1 */",
    "DELETE FROM t WHERE id = 1 /*M!100000 OR 1 */",
])
def test_versioned_comments_are_read_as_the_server_runs_them(guarded: Guarded, sql: str) -> None:
    with connect(guarded) as conn:
        refused(conn, sql)
    assert_unchanged(guarded, sql)


def test_benign_versioned_comments_run(guarded: Guarded) -> None:
    with connect(guarded) as conn:
        assert run_all(conn, "SELECT /*!50000 1 + */ 1") == [[(2,)]]
        assert run_all(conn, "SELECT /*M!100000 2 + */ 1") == [[(3,)]]
        assert run_all(conn, "SELECT 1 /* DROP TABLE t */") == [[(1,)]]


@pytest.mark.parametrize(("sql", "rows"), [
    ("SELECT 1 # ; DROP TABLE t", [[(1,)]]),
    ("SELECT 1 -- ; DROP TABLE t", [[(1,)]]),
    ("SELECT 1 -- 1; DROP TABLE t", [[(1,)]]),
    ("SELECT 1 --\t; DROP TABLE t", [[(1,)]]),
    ("SELECT 2 --1", [[(3,)]]),
    ("SELECT 1 #\r; DROP TABLE t", [[(1,)]]),  # only a newline ends a # comment
    ("SELECT 'a # b', \"c -- d\"", [[("a # b", "c -- d")]]),
    ("SELECT name FROM t WHERE id = 1 /* ; DROP TABLE t */", [[("one",)]]),
])
def test_benign_comment_look_alikes_run(guarded: Guarded, sql: str, rows: list[list[tuple[Any, ...]]]) -> None:
    with connect(guarded) as conn:
        assert run_all(conn, sql) == rows
    assert_unchanged(guarded, sql)


@pytest.mark.parametrize("sql", [
    "SELECT 1 # comment\n; DROP TABLE t",
    "SELECT 1 -- comment\n; DROP TABLE t",
    "SELECT 1 --1; DROP TABLE t",
    "SELECT 1 --; DROP TABLE t",  # `--;` is not a comment: minus minus, then the DROP
    "SELECT 1 /* c */; DROP TABLE t",
    "SELECT 1 /* c */ /*! ; */ DROP TABLE t",
    "SELECT 1;DROP TABLE`t`",
    "SELECT 1 -- \\'\n; DROP TABLE t",
])
def test_comment_syntax_does_not_hide_a_statement(guarded: Guarded, sql: str) -> None:
    with connect(guarded) as conn:
        refused(conn, sql)
    assert_unchanged(guarded, sql)


# With backslash escapes the quote after `\` is part of the string, and the text is one harmless
# string; under NO_BACKSLASH_ESCAPES the string ends at `\'` and a DROP follows.
ESCAPE_TRICK = "SELECT 'a\\'; DROP TABLE t; -- '"
# The other way round: under NO_BACKSLASH_ESCAPES `'a\''...'` is one string ('' doubles a quote);
# with backslash escapes it ends after `\''` and a DROP follows.
DOUBLED_TRICK = "SELECT 'a\\'' ; DROP TABLE t; -- '"
# ANSI_QUOTES: "..." is an identifier, and a backslash does not escape its quote.
ANSI_TRICK = 'SELECT "a\\" ; DROP TABLE t; -- "'


def test_backslash_escapes_follow_sql_mode_set_in_an_earlier_message(guarded: Guarded) -> None:
    with connect(guarded) as conn:
        assert run_all(conn, ESCAPE_TRICK) == [[("a'; DROP TABLE t; -- ",)]]
        refused(conn, DOUBLED_TRICK)
        run_all(conn, "SET sql_mode = 'NO_BACKSLASH_ESCAPES'")
        refused(conn, ESCAPE_TRICK)
        assert run_all(conn, DOUBLED_TRICK) == [[("a\\' ; DROP TABLE t; -- ",)]]
        run_all(conn, "SET SESSION sql_mode = ''")
        refused(conn, DOUBLED_TRICK)
        run_all(conn, "SET @@sql_mode := \"STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES\"")
        refused(conn, ESCAPE_TRICK)
    assert_unchanged(guarded, "sql_mode in an earlier message")


@pytest.mark.parametrize("sql", [
    "SET sql_mode = 'NO_BACKSLASH_ESCAPES'; " + ESCAPE_TRICK,
    "SET sql_mode = 'NO_BACKSLASH_ESCAPES';" + ESCAPE_TRICK,
    "SET @@session.sql_mode = 'NO_BACKSLASH_ESCAPES'; " + ESCAPE_TRICK,
    "SET sql_mode = 'ANSI_QUOTES'; " + ANSI_TRICK,
    "SET sql_mode = 'ANSI'; " + ANSI_TRICK,
    "SET sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES'); " + ESCAPE_TRICK,
    "SET sql_mode = (SELECT 'NO_BACKSLASH_ESCAPES'); " + ESCAPE_TRICK,
    "SET @m = 'NO_BACKSLASH_ESCAPES'; SET sql_mode = @m; " + ESCAPE_TRICK,
    "SET STATEMENT sql_mode = 'NO_BACKSLASH_ESCAPES' FOR SELECT 1; " + ESCAPE_TRICK,
    "/*!50000 SET sql_mode = 'NO_BACKSLASH_ESCAPES' */; " + ESCAPE_TRICK,
    "SET sql_mode = 'NO_BACKSLASH_ESCAPES', @x = 1; " + ESCAPE_TRICK,
    "SET @x = 1, sql_mode = 'NO_BACKSLASH_ESCAPES'; " + ESCAPE_TRICK,
])
def test_sql_mode_changed_in_the_same_message(guarded: Guarded, sql: str) -> None:
    with connect(guarded) as conn:
        refused(conn, sql)
        # The session's own mode is unchanged: the trick is one harmless string.
        assert run_all(conn, ESCAPE_TRICK) == [[("a'; DROP TABLE t; -- ",)]]
    assert_unchanged(guarded, sql)


def _tricks_follow_the_server(conn: pymysql.connections.Connection[Any]) -> None:
    """Whatever sql_mode the server has now, the backslash tricks are read as it reads them:
    the one that is a harmless string there runs, the one that hides a DROP there is refused."""
    [[(mode,)]] = run_all(conn, "SELECT @@sql_mode")
    escapes = "NO_BACKSLASH_ESCAPES" not in mode
    for trick, harmless in ((ESCAPE_TRICK, escapes), (DOUBLED_TRICK, not escapes)):
        if harmless:
            assert len(run_all(conn, trick)) == 1, (trick, mode)
        else:
            refused(conn, trick)


@pytest.mark.parametrize("sql", [
    "SET sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')",
    "SET sql_mode = DEFAULT",
    "SET sql_mode = @@GLOBAL.sql_mode",
    "SET sql_mode = (SELECT 'NO_BACKSLASH_ESCAPES')",
    "SET sql_mode = 'NO_BACKSLASH_ESCAPES' + 0",
    "SET sql_mode = REPLACE(@@sql_mode, 'STRICT', 'NO_BACKSLASH_ESCAPES,STRICT')",
])
def test_sql_mode_the_proxy_cannot_compute_is_refused_or_followed(guarded: Guarded, sql: str) -> None:
    with connect(guarded) as conn:
        run_all(conn, "SET sql_mode = 'STRICT_TRANS_TABLES'")
        _outcome(conn, sql)  # refused, or run (or the server's own error)
        _tricks_follow_the_server(conn)
    assert_unchanged(guarded, sql)


def test_ansi_quotes(guarded: Guarded) -> None:
    with connect(guarded) as conn:
        assert run_all(conn, ANSI_TRICK) == [[('a" ; DROP TABLE t; -- ',)]]
        run_all(conn, "SET sql_mode = 'ANSI_QUOTES'")
        refused(conn, ANSI_TRICK)
        assert run_all(conn, 'SELECT "name" FROM "t" WHERE "id" = 1') == [[("one",)]]
        refused(conn, 'DELETE FROM "t"')
        refused(conn, 'DROP TABLE "t"')
    assert_unchanged(guarded, "ANSI_QUOTES")


def test_use_switches_what_unqualified_names_mean(guarded: Guarded) -> None:
    guarded.query("REPLACE INTO scratch.t VALUES (1, 'scratch')")
    with connect(guarded) as conn:
        run_all(conn, "USE scratch")
        run_all(conn, "DELETE FROM t WHERE id = 1")  # scratch.t: agents may
        run_all(conn, "USE app")
        refused(conn, "DELETE FROM t WHERE id = 1")  # app.t: they may not
        # USE and the write in one message: the DELETE means app.t.
        refused(conn, "USE scratch; USE app; DELETE FROM t WHERE id = 1")
        refused(conn, "USE `app`; DELETE FROM t WHERE id = 1")
        run_all(conn, "USE scratch")
        refused(conn, "USE app; DELETE FROM t WHERE id = 2")
        refused(conn, "/*!USE app*/; DELETE FROM t WHERE id = 2")
        refused(conn, "USE/**/app; DELETE FROM t WHERE id = 2")
        assert run_all(conn, "SELECT DATABASE()") == [[("scratch",)]]
        conn.select_db("app")  # COM_INIT_DB
        refused(conn, "DELETE FROM t WHERE id = 2")
    assert_unchanged(guarded, "USE")


@pytest.mark.parametrize("user", ["copilot", "alice"])
def test_sql_level_prepare_from_a_variable_fails_closed(guarded: Guarded, user: str) -> None:
    """alice is not an agent: no rule names dynamic SQL for her, only drops. A text dbguard
    cannot see must still never be prepared (EXECUTE would run whatever it is)."""
    with connect(guarded, user) as conn:
        refused(conn, "SET @s = 'DROP TABLE t'; PREPARE p FROM @s; EXECUTE p")
        run_all(conn, "SET @s = 'DROP TABLE t'")
        refused(conn, "PREPARE p FROM @s")
        refused(conn, "PREPARE p FROM @`s`")
        refused(conn, "/*!50000 PREPARE p FROM @s */")
        with pytest.raises(pymysql.err.MySQLError) as info:
            run_all(conn, "EXECUTE p")  # never prepared: the server says so
        assert info.value.args[0] == 1243
        refused(conn, "PREPARE p FROM 'DROP TABLE t'")
        refused(conn, "PREPARE p FROM 'DROP ' 'TABLE t'")
        refused(conn, "PREPARE p FROM X'44524f50205441424c452074'")
        refused(conn, "EXECUTE IMMEDIATE 'DROP TABLE t'")
        refused(conn, "EXECUTE IMMEDIATE @s")
        refused(conn, "EXECUTE IMMEDIATE CONCAT('DROP ', 'TABLE t')")
        refused(conn, "PREPARE p FROM CONCAT('DROP ', 'TABLE t')")
        if user == "alice":
            run_all(conn, "PREPARE q FROM 'SELECT name FROM t WHERE id = ?'; SET @id = 2")
            assert run_all(conn, "EXECUTE q USING @id") == [[("two",)]]
        else:
            refused(conn, "PREPARE q FROM 'SELECT 1'; EXECUTE q")  # dynamic SQL, for agents
    assert_unchanged(guarded, "PREPARE")


def test_protocol_prepared_statement_is_refused_at_prepare(guarded: Guarded) -> None:
    import mysql.connector
    import mysql.connector.errors

    conn = mysql.connector.connect(host=guarded.proxy.host, port=guarded.proxy.port, user="copilot",
                                   password="copilot-secret", database="app", use_pure=True, autocommit=True)
    try:
        cur = conn.cursor(prepared=True)
        cur.execute("SELECT name FROM t WHERE id = %s", (3,))
        assert cur.fetchall() == [("three",)]
        for sql, params in (("DROP TABLE t", ()), ("DELETE FROM t WHERE id > %s OR 1 = 1", (0,)),
                            ("UPDATE t SET name = %s", ("gone",)), ("TRUNCATE t", ()),
                            ("DELETE FROM t WHERE id = %s", (1,))):
            with pytest.raises(mysql.connector.errors.Error) as info:
                cur.execute(sql, params)
            assert info.value.errno == ER_REFUSED, (sql, info.value)
        cur.execute("SELECT COUNT(*) FROM t WHERE id > %s", (0,))
        assert cur.fetchall() == [(3,)]
        cur.close()
    finally:
        conn.close()
    assert_unchanged(guarded, "COM_STMT_PREPARE")


def test_load_data_local_infile_is_refused_before_the_file_is_read(guarded: Guarded, tmp_path: Path) -> None:
    marker = f"dbguard-infile-{os.getpid()}-{time.time_ns()}"
    source = tmp_path / "rows.csv"
    source.write_text(f"900\t{marker}\n", encoding="utf-8")
    with connect(guarded, local_infile=True) as conn:
        for sql in (f"LOAD DATA LOCAL INFILE '{source}' INTO TABLE t (id, name)",
                    f"LOAD DATA LOCAL INFILE '{source}' INTO TABLE scratch.t (id, name)",
                    f"/*!50000 LOAD DATA LOCAL INFILE '{source}' INTO TABLE t (id, name) */",
                    f"SELECT 1; LOAD DATA LOCAL INFILE '{source}' INTO TABLE t (id, name)",
                    f"LOAD XML LOCAL INFILE '{source}' INTO TABLE t"):
            refused(conn, sql)
        assert count(guarded, "app.t", f"name = '{marker}'") == 0
    # Not even a text that merely names LOCAL INFILE can make the server ask for a file.
    with connect(guarded, "alice", local_infile=True) as conn:
        refused(conn, f"LOAD DATA LOCAL INFILE '{source}' INTO TABLE t (id, name)")
    for table in CANARY_TABLES:
        assert count(guarded, table, f"name = '{marker}'") == 0
    # Refused before it was sent: the server never asked for the file.
    assert "local_infile_refused" not in guarded.proxy.log()
    assert_unchanged(guarded, "LOAD DATA LOCAL INFILE")


# The same trick for the multi-byte client character sets: a character whose second byte is 0x5C
# ends the string where a reader that takes 0x5C for a backslash sees an escaped quote.
WIDE_TRICKS = {
    "gbk": b"\xbf\x5c",  # one GBK character
    "big5": b"\xa4\x5c",  # one Big5 character
    "sjis": b"\x95\x5c",  # one Shift-JIS character
}


def _wide_trick(char: bytes) -> bytes:
    return b"SELECT '" + char + b"' ; DROP TABLE t; -- '"


@pytest.mark.parametrize("charset", sorted(WIDE_TRICKS))
def test_multibyte_character_sets_cannot_hide_a_quote(guarded: Guarded, charset: str) -> None:
    char = WIDE_TRICKS[charset]
    with connect(guarded, charset=charset) as conn:  # PyMySQL sends SET NAMES <charset>
        rows = run_all(conn, b"SELECT HEX('" + char + b"')")
        assert rows == [[(char.hex().upper(),)]]
        refused(conn, _wide_trick(char))
    with connect(guarded, charset="latin1") as conn:
        # From latin1 (where 0x5C is a backslash) to the wide set in the same message.
        refused(conn, f"SET NAMES {charset}; ".encode() + _wide_trick(char))
        refused(conn, f"SET character_set_client = {charset}; ".encode() + _wide_trick(char))
        # latin1 itself: 0xBF is a character, 0x5C escapes the quote, one harmless string.
        assert run_all(conn, _wide_trick(char)) == [[(char[:1].decode("cp1252") + "' ; DROP TABLE t; -- ",)]]
        run_all(conn, f"SET NAMES {charset}")
        refused(conn, _wide_trick(char))
    assert_unchanged(guarded, charset)


def test_client_character_set_changes_the_proxy_cannot_read_fail_closed(guarded: Guarded) -> None:
    """A character set named by a variable, an expression or an unknown name: refused, or
    allowed and then followed (what the server really uses), never read as the old one."""
    trick = _wide_trick(WIDE_TRICKS["gbk"])
    with connect(guarded) as conn:
        run_all(conn, "SET @cs = 'gbk'")
        for sql in ("SET NAMES klingon", "SET character_set_client = klingon", "SET character_set_client = @cs",
                    "SET @@character_set_client = CONCAT('g', 'bk')", "SET NAMES @cs",
                    "SET character_set_client = (SELECT 'gbk')", "SET SESSION character_set_client := @cs"):
            outcome = _outcome(conn, sql)
            # Refused, or the server's own error, or run (and then followed).
            assert outcome in (("error", ER_REFUSED), ("error", 1064), ("error", 1115), ("rows", [[]])), (sql, outcome)
            refused(conn, trick)
            run_all(conn, "SET NAMES utf8mb4")
        refused(conn, b"SET character_set_client = @cs; " + trick)
        refused(conn, b"SET character_set_client = (SELECT 'gbk'); " + trick)
    assert_unchanged(guarded, "character sets the proxy cannot read")


class _NoSetNames(pymysql.connections.Connection):
    """A client that announces its character set in the handshake only (no SET NAMES after)."""

    def set_character_set(self, charset: str, collation: str | None = None) -> None:
        self.charset = charset


def test_character_set_announced_at_login_is_followed(guarded: Guarded) -> None:
    """The handshake's collation id sets character_set_client upstream. A text that is valid
    UTF-8 can hide a backslash in GBK: E4 B8 AD 5C is 中 + `\\` in UTF-8, two GBK characters."""
    conn = _NoSetNames(host=guarded.proxy.host, port=guarded.proxy.port, user="copilot",
                       password="copilot-secret", database="app", charset="gbk",
                       client_flag=CLIENT.MULTI_STATEMENTS, autocommit=True, connect_timeout=10)
    try:
        assert run_all(conn, "SELECT @@character_set_client") == [[("gbk",)]]
        refused(conn, _wide_trick("中".encode()))
    finally:
        conn.close()
    assert_unchanged(guarded, "the handshake's character set")


def test_stored_code_is_refused(guarded: Guarded) -> None:
    with connect(guarded, "alice") as conn:
        refused(conn, "CREATE PROCEDURE wipe() DROP TABLE t")
        refused(conn, "CREATE PROCEDURE wipe() BEGIN DELETE FROM t; END")
        refused(conn, "CREATE FUNCTION f() RETURNS INT BEGIN DELETE FROM t; RETURN 1; END")
        refused(conn, "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW DELETE FROM u")
        refused(conn, "CREATE EVENT ev ON SCHEDULE EVERY 1 SECOND DO DELETE FROM t")
        refused(conn, "BEGIN NOT ATOMIC DROP TABLE t; END")
        refused(conn, "/*!50000 CREATE PROCEDURE wipe() DROP TABLE t */")
    # A procedure a DBA made: calling it is calling code the proxy cannot see.
    guarded.query("CREATE PROCEDURE app.wipe() DELETE FROM app.t WHERE id = 3")
    try:
        with connect(guarded) as conn:
            refused(conn, "CALL wipe()")
            refused(conn, "CALL app.wipe")
            refused(conn, "SELECT 1; CALL wipe()")
        with connect(guarded, "alice") as conn:
            refused(conn, "CALL wipe()")  # `call` is a schema-or-code rule for everyone
        assert count(guarded, "app.t") == 3
    finally:
        guarded.query("DROP PROCEDURE IF EXISTS app.wipe")
    assert_unchanged(guarded, "stored code")


@pytest.mark.parametrize("sql", [
    "HANDLER secrets OPEN",
    "HANDLER secrets OPEN AS h",
    "HANDLER secrets OPEN AS h; HANDLER h READ FIRST",
    "RENAME TABLE t TO t_old",
    "RENAME TABLE scratch.t TO scratch.t_old, t TO scratch.t",
    "ALTER TABLE t DROP COLUMN name",
    "ALTER TABLE t DROP PRIMARY KEY",
    "ALTER TABLE t ENGINE = BLACKHOLE",
    "ALTER TABLE t RENAME TO scratch.t_moved",
    "CREATE OR REPLACE TABLE t SELECT 1 AS id",
    "CREATE TABLE scratch.copy SELECT * FROM secrets",
    "CREATE TABLE scratch.copy AS SELECT * FROM t",
    "INSERT INTO t (id, name) VALUES (1, 'x') ON DUPLICATE KEY UPDATE name = 'gone'",
    "INSERT INTO t (id, name) SELECT id, 'gone' FROM t ON DUPLICATE KEY UPDATE name = VALUES(name)",
    "REPLACE INTO t (id, name) VALUES (1, 'replaced')",
    "REPLACE t SELECT * FROM t",
    "DELETE FROM t LIMIT 1",
    "DELETE FROM t ORDER BY id DESC LIMIT 2",
    "DELETE t FROM t JOIN scratch.t s ON s.id = t.id",
    "DELETE s, t FROM scratch.t s, t WHERE s.id = 1",
    "DELETE FROM s, t USING scratch.t AS s JOIN t WHERE s.id = 1",
    "UPDATE scratch.t s JOIN t ON t.id = s.id SET t.name = 'gone' WHERE s.id = 1",
    "UPDATE t, scratch.t s SET t.name = s.name",
    "UPDATE t SET name = 'gone' ORDER BY id LIMIT 1",
    "DO SLEEP(5)",
    "SELECT SLEEP(5)",
    "DO 1, (SELECT SLEEP(5))",
    f"SELECT * FROM t INTO OUTFILE '{OUTFILE_DIR}/dbguard-enforce-out.csv'",
    f"SELECT name FROM t WHERE id = 1 INTO DUMPFILE '{OUTFILE_DIR}/dbguard-enforce-dump'",
    f"SELECT * FROM t WHERE id = 1 UNION SELECT * FROM t INTO OUTFILE '{OUTFILE_DIR}/dbguard-enforce-u'",
    "SELECT LOAD_FILE('/etc/hostname')",
    "SELECT 1 FROM t WHERE name = LOAD_FILE('/etc/hostname')",
    "INSERT INTO scratch.t (id, name) VALUES (50, LOAD_FILE('/etc/hostname'))",
    "GRANT ALL ON *.* TO 'evil'@'%' IDENTIFIED BY 'x'",
    "CREATE USER 'evil'@'%' IDENTIFIED BY 'x'",
    "SET PASSWORD FOR root@localhost = PASSWORD('x')",
    "SET GLOBAL general_log = 1",
    "SET GLOBAL sql_mode = 'NO_BACKSLASH_ESCAPES'",
    "KILL CONNECTION_ID()",
    "SHUTDOWN",
])
def test_destructive_statement_shapes_are_refused(guarded: Guarded, sql: str) -> None:
    """dbguard's own ERR 1227 means the text never went upstream; for DO, the server's own
    counter of DO statements shows it too (SLEEP would otherwise have run for 5 s)."""
    with guarded.root() as root, root.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE 'Com_do'")
        before = cur.fetchone()
    with connect(guarded) as conn:
        refused(conn, sql)
    with guarded.root() as root, root.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE 'Com_do'")
        assert cur.fetchone() == before, "a refused DO reached the server"
    assert not list(OUTFILE_DIR.glob("dbguard-enforce-*"))
    assert_unchanged(guarded, sql)


def test_refusal_inside_a_transaction_keeps_it_open(guarded: Guarded) -> None:
    conn = connect(guarded, autocommit=False)
    try:
        conn.begin()
        run_all(conn, "INSERT INTO scratch.t (id, name) VALUES (201, 'before')")
        refused(conn, "DROP TABLE t")
        refused(conn, "DELETE FROM t")
        assert run_all(conn, "SELECT @@in_transaction") == [[(1,)]]
        run_all(conn, "INSERT INTO scratch.t (id, name) VALUES (202, 'after')")
        conn.commit()
        assert guarded.query("SELECT id FROM scratch.t WHERE id > 200 ORDER BY id") == [(201,), (202,)]
        # A refusal in a multi-statement message inside a transaction: nothing of it runs, the
        # transaction goes on and a ROLLBACK undoes the earlier work.
        conn.begin()
        run_all(conn, "INSERT INTO scratch.t (id, name) VALUES (203, 'rolled back')")
        refused(conn, "INSERT INTO scratch.t (id, name) VALUES (204, 'never'); COMMIT; DROP TABLE t")
        assert run_all(conn, "SELECT @@in_transaction") == [[(1,)]]
        conn.rollback()
        assert guarded.query("SELECT id FROM scratch.t WHERE id > 200 ORDER BY id") == [(201,), (202,)]
    finally:
        conn.close()
        guarded.query("DELETE FROM scratch.t WHERE id > 200")
    assert_unchanged(guarded, "a transaction")


def _change_user(conn: pymysql.connections.Connection[Any], user: str, password: str, database: str) -> None:
    """COM_CHANGE_USER (PyMySQL has no API for it): the packet from dbguard's own encoder, the
    authentication exchange (the proxy switches to its plugin with a fresh nonce) by PyMySQL."""
    raw: Any = conn
    packet = m.ComChangeUser(username=user.encode(), auth_response=b"", schema=database.encode(),
                             character_set=45, auth_plugin_name=b"mysql_native_password")
    raw._next_seq_id = 0
    raw.write_packet(packet.encode(m.Capability(raw.server_capabilities)))
    raw.user, raw.password = user, password.encode()
    reply = raw._read_packet()
    if reply.is_auth_switch_request():
        reply.read_uint8()
        plugin = reply.read_string()
        reply = raw._process_auth(plugin, reply)
    if not reply.is_ok_packet():
        raise AssertionError(f"unexpected answer to COM_CHANGE_USER: {reply.get_all_data()!r}")


def test_change_user_reauthenticates(guarded: Guarded) -> None:
    conn = connect(guarded)
    try:
        refused(conn, "DELETE FROM t WHERE id = 3")
        _change_user(conn, "alice", "alice-secret", "app")
        # alice is not an agent: a filtered delete of app.t is hers to run (and roll back).
        conn.begin()
        run_all(conn, "DELETE FROM t WHERE id = 3")
        conn.rollback()
        run_all(conn, "SET autocommit = 1")
        refused(conn, "DROP TABLE t")
        # Back to copilot, then a wrong secret: refused, and the session is not alice's.
        _change_user(conn, "copilot", "copilot-secret", "app")
        refused(conn, "DELETE FROM t WHERE id = 3")
        with pytest.raises(pymysql.err.OperationalError) as info:
            _change_user(conn, "alice", "wrong-secret", "app")
        assert info.value.args[0] == 1045
        # Not switched: the connection is closed (as MySQL does), or still copilot's.
        with pytest.raises(pymysql.err.MySQLError) as after:
            run_all(conn, "DELETE FROM t WHERE id = 3")
        assert after.value.args[0] in (ER_REFUSED, 0, 2006, 2013), after.value.args
    finally:
        if conn.open:
            conn.close()
    with connect(guarded) as conn:  # the proxy still serves
        refused(conn, "DELETE FROM t WHERE id = 3")
    assert count(guarded, "app.t") == 3
    assert_unchanged(guarded, "COM_CHANGE_USER")


def test_change_user_to_an_unknown_identity_or_without_a_secret_fails(guarded: Guarded) -> None:
    for user, password in (("nobody", "x"), ("alice", ""), ("root", guarded.server.root_password)):
        conn = connect(guarded)
        try:
            with pytest.raises(pymysql.err.OperationalError) as info:
                _change_user(conn, user, password, "app")
            assert info.value.args[0] == 1045
        finally:
            if conn.open:
                conn.close()
    assert_unchanged(guarded, "COM_CHANGE_USER with bad credentials")


# ---------------------------------------------- the gate must follow what the server really did


def test_setting_in_a_message_the_server_stopped_before_is_not_followed(guarded: Guarded) -> None:
    """The server runs a multi-statement message until the first error: settings after it were
    never applied, and the gate must not read later statements as if they had been."""
    with connect(guarded) as conn:
        with pytest.raises(pymysql.err.MySQLError) as info:
            run_all(conn, "SELECT * FROM no_such_table; SET sql_mode = 'NO_BACKSLASH_ESCAPES'")
        assert info.value.args[0] == 1146
        assert run_all(conn, "SELECT @@sql_mode LIKE '%NO_BACKSLASH_ESCAPES%'") == [[(0,)]]
        refused(conn, DOUBLED_TRICK)  # with backslash escapes, the DROP is real
    with connect(guarded) as conn:
        with pytest.raises(pymysql.err.MySQLError) as info:
            run_all(conn, "SELECT * FROM no_such_table; USE scratch")
        assert info.value.args[0] == 1146
        assert run_all(conn, "SELECT DATABASE()") == [[("app",)]]
        refused(conn, "DELETE FROM t WHERE id = 3")  # app.t, not scratch.t
    assert_unchanged(guarded, "a message stopped by an error")


def test_reset_connection_resets_what_the_gate_assumes(guarded: Guarded) -> None:
    """COM_RESET_CONNECTION puts sql_mode back to the global default upstream."""
    with connect(guarded) as conn:
        run_all(conn, "SET sql_mode = 'NO_BACKSLASH_ESCAPES'")
        raw: Any = conn
        raw._execute_command(0x1F, b"")  # COM_RESET_CONNECTION
        raw._read_ok_packet()
        assert run_all(conn, "SELECT @@sql_mode LIKE '%NO_BACKSLASH_ESCAPES%'") == [[(0,)]]
        refused(conn, DOUBLED_TRICK)
    assert_unchanged(guarded, "COM_RESET_CONNECTION")


def test_sql_mode_the_session_starts_with_is_followed(guarded: Guarded) -> None:
    """A server configured with NO_BACKSLASH_ESCAPES (global sql_mode, set by a DBA): sessions
    start in it, and the gate must read their statements that way."""
    original = guarded.query("SELECT @@GLOBAL.sql_mode")[0][0]
    guarded.query("SET GLOBAL sql_mode = 'STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES'")
    try:
        with connect(guarded) as conn:
            assert run_all(conn, "SELECT @@sql_mode LIKE '%NO_BACKSLASH_ESCAPES%'") == [[(1,)]]
            refused(conn, ESCAPE_TRICK)
    finally:
        guarded.query(f"SET GLOBAL sql_mode = '{original}'")
    assert_unchanged(guarded, "a server-wide sql_mode")


def test_sql_mode_set_through_a_protocol_prepared_statement(guarded: Guarded) -> None:
    """COM_STMT_PREPARE of a SET changes nothing until COM_STMT_EXECUTE runs it: the gate must
    follow the execution, not the preparation."""
    import mysql.connector

    conn: Any = mysql.connector.connect(host=guarded.proxy.host, port=guarded.proxy.port, user="copilot",
                                        password="copilot-secret", database="app", use_pure=True,
                                        autocommit=True)
    try:
        prepared = conn.cmd_stmt_prepare(b"SET sql_mode = 'NO_BACKSLASH_ESCAPES'")
        text = conn.cursor()
        text.execute("SELECT @@sql_mode LIKE '%NO_BACKSLASH_ESCAPES%'")
        assert text.fetchall() == [(0,)]
        with pytest.raises(mysql.connector.errors.Error) as info:
            text.execute(DOUBLED_TRICK)  # prepared, not run: backslashes still escape
        assert info.value.errno == ER_REFUSED
        conn.cmd_stmt_execute(prepared["statement_id"])
        text.execute("SELECT @@sql_mode LIKE '%NO_BACKSLASH_ESCAPES%'")
        assert text.fetchall() == [(1,)]
        with pytest.raises(mysql.connector.errors.Error) as info:
            text.execute(ESCAPE_TRICK)  # now run: the DROP after `'a\\'` is real
        assert info.value.errno == ER_REFUSED
        text.close()
    finally:
        conn.close()
    assert_unchanged(guarded, "sql_mode through COM_STMT_EXECUTE")


@pytest.mark.parametrize("statements", [
    # MariaDB Connector/J, on every connect.
    ["set autocommit=1, sql_mode = concat(@@sql_mode,',STRICT_TRANS_TABLES'), session_track_schema=1"],
    # mysqldump's header and footer.
    ["/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */",
     "/*!40101 SET SQL_MODE=@OLD_SQL_MODE */"],
    ["SET sql_mode = 'NO_BACKSLASH_ESCAPES', autocommit = 1"],
    ["SET @saved = @@sql_mode", "SET sql_mode = 'ANSI_QUOTES'", "SET sql_mode = @saved"],
])
def test_clients_sql_mode_statements_run_and_are_followed(guarded: Guarded, statements: list[str]) -> None:
    """What drivers and dumps send is not refused; whatever sql_mode the server ends up with,
    the next message is read with it (the server's state is read back after such a SET)."""
    with connect(guarded) as conn:
        for sql in statements:
            run_all(conn, sql)
        _tricks_follow_the_server(conn)
    assert_unchanged(guarded, " / ".join(statements))


def test_com_process_kill_is_decided_as_the_kill_it_means(guarded: Guarded) -> None:
    """COM_PROCESS_KILL is relayed only as the `KILL CONNECTION n` the policy allows; this one
    blocks server administration (session.mysql_kill maps and checks the id after that)."""
    with connect(guarded) as conn:
        raw: Any = conn
        raw._execute_command(int(m.Command.PROCESS_KILL), b"\x01\x00\x00\x00")
        with pytest.raises(pymysql.err.MySQLError) as info:
            raw._read_ok_packet()
        assert info.value.args[0] == ER_REFUSED, info.value.args
        assert run_all(conn, "SELECT 1") == [[(1,)]]
    assert_unchanged(guarded, "COM_PROCESS_KILL")


@pytest.mark.parametrize(("command", "argument"), [
    (m.Command.CREATE_DB, b"evil"),
    (m.Command.DROP_DB, b"app"),
    (m.Command.DROP_DB, b"shop"),
    (m.Command.REFRESH, b"\x01"),  # FLUSH privileges / tables
    (m.Command.SHUTDOWN, b"\x00"),
    (m.Command.DEBUG, b""),
    (m.Command.PROCESS_INFO, b""),
    (m.Command.MARIADB_STMT_BULK_EXECUTE, b"\x01\x00\x00\x00\x00\x00"),
    (m.Command.MARIADB_MULTI, b"\x03DROP TABLE t"),
    (0x99, b"DROP TABLE t"),
])
def test_commands_the_proxy_does_not_relay(guarded: Guarded, command: int, argument: bytes) -> None:
    """Commands that act without SQL (COM_DROP_DB, COM_SHUTDOWN...) never reach the server."""
    with connect(guarded) as conn:
        raw: Any = conn
        raw._execute_command(int(command), argument)
        with pytest.raises(pymysql.err.MySQLError) as info:
            raw._read_ok_packet()
        assert info.value.args[0] in (1047, 1235, 1243), info.value.args
        assert run_all(conn, "SELECT 1") == [[(1,)]]  # the session goes on
    assert_unchanged(guarded, f"command 0x{int(command):02x}")
