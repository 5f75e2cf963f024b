"""Statements held for approval through MySQL sessions (MariaDB upstream), decided from the CLI
in another process: what an agent and a DBA see with real clients and a real server.

Covers: a PyMySQL DELETE held (the client waits; nothing ran), approved with `dbguard approvals
approve` and getting its normal result (affected rows); a denial (ERR 1227, SQLSTATE 42000, the
reason and the approval id in the message, the row still there, the session and its open
transaction going on); expiry; retry mode (ERR 1227 at once, runs once when re-sent after
approval, held again after that); a mysql-connector prepared statement's execution held with
its parameter and run with it once approved; other sessions running normally while some are
held; a client that disconnects while held; the idle timeout not firing while a person
decides; the journal's record of it all. Helpers shared with the PostgreSQL tests come from
test_approvals_pg.py.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pymysql.connections
import pytest

from dbguard.devdb import ThrowawayMariaDB
from tests.integration import journal_sessions as js
from tests.integration.approvals_helpers import RULES, Background, approvals_cli, approve, pending, settled
from tests.integration.harness import ProxyFactory, ProxyProcess

TABLE = "approval_orders_my"


def rows(server: ThrowawayMariaDB) -> list[int]:
    conn = pymysql.connect(**server.connect_kwargs())
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT id FROM {TABLE} ORDER BY id")
            return [r[0] for r in cur.fetchall()]
    finally:
        conn.close()


@pytest.fixture
def orders(mariadb_server: ThrowawayMariaDB) -> Iterator[None]:
    values = ", ".join(f"({i}, 'order {i}')" for i in range(1, 41))
    mariadb_server.run_sql(f"DROP TABLE IF EXISTS {TABLE}; "
                           f"CREATE TABLE {TABLE} (id int PRIMARY KEY, note text) ENGINE=InnoDB; "
                           f"INSERT INTO {TABLE} VALUES {values}", as_root=False)
    yield
    mariadb_server.run_sql(f"DROP TABLE IF EXISTS {TABLE}", as_root=False)


def holding_proxy(mariadb_server: ThrowawayMariaDB, proxy_factory: ProxyFactory, tmp_path: Path, *,
                  approvals: str = "{timeout: 60s, mode: wait}", **kwargs: Any) -> ProxyProcess:
    rules = tmp_path / "hold-rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    return proxy_factory(mariadb_server.dsn(), protocol="mysql",
                         extra_yaml=f"rules: {rules}\napprovals: {approvals}\n", **kwargs)


@pytest.fixture
def proxy(mariadb_server: ThrowawayMariaDB, proxy_factory: ProxyFactory, tmp_path: Path,
          orders: None) -> ProxyProcess:
    return holding_proxy(mariadb_server, proxy_factory, tmp_path)


def connect(proxy: ProxyProcess, user: str = "copilot", *, sock: socket.socket | None = None,
            **kwargs: Any) -> pymysql.connections.Connection[Any]:
    """PyMySQL through the proxy to `app` (over `sock` when given, so a test can cut it)."""
    conn = pymysql.connect(host=proxy.host, port=proxy.port, user=user, password=proxy.secrets[user],
                           database="app", connect_timeout=10, defer_connect=True, **kwargs)
    conn.connect(sock)
    return conn


def execute(conn: pymysql.connections.Connection[Any], sql: str) -> int:
    with conn.cursor() as cur:
        return int(cur.execute(sql))


def delete(conn: pymysql.connections.Connection[Any], order: int) -> Callable[[], int]:
    return lambda: execute(conn, f"DELETE FROM {TABLE} WHERE id = {order}")


def test_pymysql_is_held_and_gets_its_affected_rows_once_a_dba_approves(
        proxy: ProxyProcess, mariadb_server: ThrowawayMariaDB) -> None:
    conn = connect(proxy, autocommit=True, program_name="held-approved")
    try:
        held = Background(lambda: execute(conn, f"DELETE FROM {TABLE} WHERE id <= 3"))
        [request] = pending(proxy)
        assert (request["identity"], request["protocol"]) == ("copilot", "mysql")
        assert request["sql"] == f"DELETE FROM {TABLE} WHERE id <= 3"
        assert request["rule_ids"] == ["hold-agent-deletes"]
        time.sleep(0.5)
        assert held.waiting, "the client waits while a person decides"
        assert rows(mariadb_server)[:3] == [1, 2, 3], "nothing ran before the approval"
        decided = approve(proxy, request["id"])
        assert decided.returncode == 0, decided.stderr
        assert held.wait() == 3
        assert execute(conn, f"SELECT * FROM {TABLE}") == 37, "the session goes on"
    finally:
        conn.close()
    assert rows(mariadb_server)[:1] == [4]
    again = approve(proxy, request["id"])
    assert again.returncode == 1, "a grant runs once"
    events = js.session_events(proxy, "held-approved")
    [statement] = [s for s in js.statements(events) if "DELETE" in s.text]
    assert (statement.action, statement.approval_id) == ("hold", request["id"])
    assert statement.seq == request["statement_seq"]
    outcome = js.outcome(events, statement.seq)
    assert outcome is not None
    assert outcome.rows == 3


def test_a_denial_gives_err_1227_with_the_reason_and_the_transaction_goes_on(
        proxy: ProxyProcess, mariadb_server: ThrowawayMariaDB) -> None:
    conn = connect(proxy, autocommit=False, program_name="held-denied")
    try:
        assert execute(conn, f"UPDATE {TABLE} SET note = 'touched' WHERE id = 30") == 1
        held = Background(delete(conn, 5))
        [request] = pending(proxy)
        denied = approvals_cli(proxy, "deny", request["id"], "--as", "alice", "--reason",
                               "not during business hours", secret="alice-secret")
        assert denied.returncode == 0, denied.stderr
        with pytest.raises(pymysql.err.OperationalError) as caught:
            held.wait()
        errno, message = caught.value.args
        assert errno == 1227
        assert message.startswith("dbguard: denied by alice: not during business hours (")
        assert f"approval={request['id']}" in message
        assert "status=denied" in message
        with conn.cursor() as cur:  # the session and its transaction go on
            cur.execute(f"SELECT note FROM {TABLE} WHERE id = 30")
            assert cur.fetchone() == ("touched",)
            cur.execute("SELECT @@in_transaction")
            assert cur.fetchone() == (1,)
        conn.rollback()
    finally:
        conn.close()
    assert 5 in rows(mariadb_server)
    events = js.session_events(proxy, "held-denied")
    [statement] = [s for s in js.statements(events) if "DELETE" in s.text]
    assert (statement.action, statement.approval_id) == ("hold", request["id"])
    assert js.outcome(events, statement.seq) is None, "a denied statement never ran"


def test_nobody_deciding_in_time_gives_timed_out(mariadb_server: ThrowawayMariaDB, proxy_factory: ProxyFactory,
                                                 tmp_path: Path, orders: None) -> None:
    proxy = holding_proxy(mariadb_server, proxy_factory, tmp_path, approvals="{timeout: 2s}")
    conn = connect(proxy, autocommit=True)
    try:
        started = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as caught:
            execute(conn, f"DELETE FROM {TABLE} WHERE id = 9")
        waited = time.monotonic() - started
        [request] = json.loads(approvals_cli(proxy, "list", "--all", "--json").stdout)["requests"]
        assert caught.value.args[0] == 1227
        assert caught.value.args[1].startswith(f"dbguard: approval {request['id']} timed out (")
        assert request["status"] == "expired"
        assert 1.5 < waited < 15
        assert execute(conn, "SELECT 1") == 1
    finally:
        conn.close()
    assert 9 in rows(mariadb_server)


def test_retry_mode_answers_at_once_and_runs_the_approved_statement_once(
        mariadb_server: ThrowawayMariaDB, proxy_factory: ProxyFactory, tmp_path: Path, orders: None) -> None:
    proxy = holding_proxy(mariadb_server, proxy_factory, tmp_path, approvals="{timeout: 60s, mode: retry}")
    statement = f"DELETE FROM {TABLE} WHERE id = 13"
    conn = connect(proxy, autocommit=True)
    try:
        started = time.monotonic()
        with pytest.raises(pymysql.err.OperationalError) as first:
            execute(conn, statement)
        assert time.monotonic() - started < 10, "retry mode does not wait for a person"
        [request] = pending(proxy)
        assert first.value.args[0] == 1227
        assert first.value.args[1].startswith(
            f"dbguard: held for approval {request['id']}; run it again once approved (")
        with pytest.raises(pymysql.err.OperationalError) as unapproved:
            execute(conn, statement)  # sent again before anyone decided: the same request
        assert request["id"] in unapproved.value.args[1]
        assert len(pending(proxy)) == 1
        assert approve(proxy, request["id"]).returncode == 0
        assert execute(conn, statement) == 1
        with pytest.raises(pymysql.err.OperationalError) as third:
            execute(conn, statement)
        assert third.value.args[0] == 1227
        assert request["id"] not in third.value.args[1], "a grant runs once; asked again"
        assert execute(conn, "SELECT 1") == 1
    finally:
        conn.close()
    assert 13 not in rows(mariadb_server)


def test_a_prepared_execution_is_held_with_its_parameter_and_runs_with_it(
        proxy: ProxyProcess, mariadb_server: ThrowawayMariaDB) -> None:
    conn: Any = mysql.connector.connect(
        host=proxy.host, port=proxy.port, user="copilot", password=proxy.secrets["copilot"], database="app",
        use_pure=True, autocommit=True, connection_timeout=60, conn_attrs={"program_name": "held-prepared"})
    try:
        cur = conn.cursor(prepared=True)
        held = Background(lambda: (cur.execute(f"DELETE FROM {TABLE} WHERE id = %s", (7,)), cur.rowcount)[1])
        [request] = pending(proxy)
        assert request["parameters"] == ["7"]
        assert request["sql"] == f"DELETE FROM {TABLE} WHERE id = ?"
        assert approve(proxy, request["id"]).returncode == 0
        assert held.wait() == 1
        # The statement stays prepared; its next execution is held again, and denied here.
        again = Background(lambda: cur.execute(f"DELETE FROM {TABLE} WHERE id = %s", (8,)))
        [second] = pending(proxy)
        assert second["parameters"] == ["8"]
        assert approvals_cli(proxy, "deny", second["id"], "--as", "alice", "--reason", "no",
                             secret="alice-secret").returncode == 0
        with pytest.raises(mysql.connector.errors.Error) as caught:
            again.wait()
        assert caught.value.errno == 1227
        check = conn.cursor()
        check.execute(f"SELECT count(*) FROM {TABLE}")
        assert check.fetchone() == (39,)
        check.close()
        cur.close()
    finally:
        conn.close()
    assert 7 not in rows(mariadb_server)
    assert 8 in rows(mariadb_server)
    events = js.session_events(proxy, "held-prepared")
    executed, refused = [s for s in js.statements(events) if "DELETE" in s.text]
    assert (executed.action, executed.approval_id, executed.parameters) == ("hold", request["id"], ("7",))
    outcome = js.outcome(events, executed.seq)
    assert outcome is not None
    assert outcome.rows == 1
    assert (refused.approval_id, refused.parameters) == (second["id"], ("8",))
    assert js.outcome(events, refused.seq) is None
    verified = js.journal_cli(proxy, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_other_sessions_run_normally_while_some_are_held(proxy: ProxyProcess,
                                                         mariadb_server: ThrowawayMariaDB) -> None:
    connections = [connect(proxy, autocommit=True) for _ in range(5)]
    try:
        held = [Background(delete(c, 20 + i)) for i, c in enumerate(connections)]
        requests = pending(proxy, 5)
        other = connect(proxy, "alice", autocommit=True)
        try:
            started = time.monotonic()
            for _ in range(200):
                with other.cursor() as cur:
                    cur.execute(f"SELECT count(*) FROM {TABLE}")
                    assert cur.fetchone() == (40,)
            assert time.monotonic() - started < 20
        finally:
            other.close()
        assert all(h.waiting for h in held)
        for request in requests:
            assert approve(proxy, request["id"]).returncode == 0
        assert [h.wait() for h in held] == [1] * 5
    finally:
        for c in connections:
            c.close()
    assert rows(mariadb_server) == [i for i in range(1, 41) if not 20 <= i < 25]


def test_a_client_that_leaves_while_held_expires_its_request(proxy: ProxyProcess,
                                                              mariadb_server: ThrowawayMariaDB) -> None:
    sock = socket.create_connection((proxy.host, proxy.port), timeout=10)
    conn = connect(proxy, autocommit=True, sock=sock)
    held = Background(delete(conn, 15))
    [request] = pending(proxy)
    sock.shutdown(socket.SHUT_RDWR)  # the socket closes under the waiting statement
    held.thread.join(10)
    shown = settled(proxy, request["id"], "expired")
    assert shown["status"] == "expired"
    assert "ended" in shown["reason"]
    assert approve(proxy, request["id"]).returncode == 1
    assert 15 in rows(mariadb_server)


def test_the_idle_timeout_does_not_fire_while_a_person_decides(
        mariadb_server: ThrowawayMariaDB, proxy_factory: ProxyFactory, tmp_path: Path, orders: None) -> None:
    proxy = holding_proxy(mariadb_server, proxy_factory, tmp_path, listener_extra={"idle_timeout": "1s"})
    conn = connect(proxy, autocommit=True)
    try:
        held = Background(delete(conn, 19))
        [request] = pending(proxy)
        time.sleep(3)
        assert approve(proxy, request["id"]).returncode == 0
        assert held.wait() == 1
    finally:
        conn.close()
    assert 19 not in rows(mariadb_server)
