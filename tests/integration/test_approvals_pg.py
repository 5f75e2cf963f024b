"""Statements held for approval through PostgreSQL sessions, decided from the CLI in another
process: what an agent and a DBA see with real clients and a real server.

Covers: psql held (the NOTICE with the approval id), approved by a DBA with
`dbguard approvals approve`, and getting its normal result; psycopg denied (SQLSTATE 42501,
the reason, the row still there, the session going on, a transaction failed as by any error);
a prepared statement's execution held with its parameters; expiry; the requester unable to
approve its own statement; retry mode (held at once, runs once when re-sent after approval,
held again after that); twenty sessions held at once while another keeps querying; a client
that disconnects while held; a proxy killed and restarted with a request pending; the idle
timeout not firing while a person decides; webhooks; the journal's record of it all.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors

from dbguard.devdb.postgres import ThrowawayPostgres
from dbguard.journal import ApprovalEvent, open_store
from tests.integration import journal_sessions as js
from tests.integration.approvals_helpers import RULES, Background, approvals_cli, approve, pending, settled
from tests.integration.harness import ProxyFactory, ProxyProcess, start_proxy
from tests.unit.test_approvals_cli import Hooks

TABLE = "approval_orders"


def rows(pg_server: ThrowawayPostgres) -> list[int]:
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        return [r[0] for r in conn.execute(f"SELECT id FROM {TABLE} ORDER BY id").fetchall()]


@pytest.fixture
def orders(pg_server: ThrowawayPostgres) -> Iterator[None]:
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"CREATE TABLE {TABLE} (id int PRIMARY KEY, note text)")
        conn.execute(f"INSERT INTO {TABLE} SELECT g, 'order ' || g FROM generate_series(1, 40) g")
    yield
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")


def holding_proxy(pg_server: ThrowawayPostgres, proxy_factory: ProxyFactory, tmp_path: Path, *,
                  approvals: str = "{timeout: 60s, mode: wait}", **kwargs: Any) -> ProxyProcess:
    rules = tmp_path / "hold-rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    extra = kwargs.pop("extra_yaml", "")
    return proxy_factory(pg_server.dsn(sslmode="disable"),
                         extra_yaml=f"rules: {rules}\napprovals: {approvals}\n{extra}", **kwargs)


@pytest.fixture
def proxy(pg_server: ThrowawayPostgres, proxy_factory: ProxyFactory, tmp_path: Path, orders: None) -> ProxyProcess:
    return holding_proxy(pg_server, proxy_factory, tmp_path)


def test_psql_is_held_told_the_id_and_gets_its_result_once_a_dba_approves(
        proxy: ProxyProcess, pg_server: ThrowawayPostgres) -> None:
    psql = subprocess.Popen(
        ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-c", f"DELETE FROM {TABLE} WHERE id <= 3"],
        env=proxy.libpq_env("copilot"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        [request] = pending(proxy)
        assert request["identity"] == "copilot"
        assert request["sql"] == f"DELETE FROM {TABLE} WHERE id <= 3"
        assert request["rule_ids"] == ["hold-agent-deletes"]
        assert request["tables"] == [f"public.{TABLE}"]
        # The preview ran the DELETE in a rolled-back transaction of its own: 3 rows, none gone.
        assert request["blast_radius"]["exact_rows"] == 3
        assert request["blast_radius"]["estimated_rows"] is not None
        assert psql.poll() is None, "psql waits while a person decides"
        assert rows(pg_server)[:3] == [1, 2, 3], "nothing ran before the approval"
        decided = approve(proxy, request["id"])
        assert decided.returncode == 0, decided.stderr
        out, err = psql.communicate(timeout=30)
    finally:
        if psql.poll() is None:
            psql.kill()
    assert psql.returncode == 0, err
    assert out.strip() == "DELETE 3"
    assert f"NOTICE:  dbguard: held for approval {request['id']}" in err
    assert rows(pg_server)[:1] == [4]
    again = approvals_cli(proxy, "approve", request["id"], "--as", "alice", secret="alice-secret")
    assert again.returncode == 1, "a grant runs once"
    assert "already" in again.stderr + again.stdout


def test_psycopg_denied_gets_the_reason_and_the_session_goes_on(proxy: ProxyProcess,
                                                                pg_server: ThrowawayPostgres) -> None:
    with psycopg.connect(proxy.dsn("copilot", application_name="held-denied")) as conn:
        conn.execute("SELECT 1")  # a transaction is open: the refusal fails it, as any error would
        held = Background(lambda: conn.execute(f"DELETE FROM {TABLE} WHERE id = 5"))
        [request] = pending(proxy)
        denied = approvals_cli(proxy, "deny", request["id"], "--as", "alice", "--reason", "not during business hours",
                               secret="alice-secret")
        assert denied.returncode == 0, denied.stderr
        with pytest.raises(errors.InsufficientPrivilege) as caught:
            held.wait()
        assert str(caught.value.diag.message_primary) == "dbguard: denied by alice: not during business hours"
        assert f"approval={request['id']}" in (caught.value.diag.message_detail or "")
        with pytest.raises(errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM approval_orders").fetchone() == (40,)
    assert 5 in rows(pg_server)
    events = js.session_events(proxy, "held-denied")
    [statement] = [s for s in js.statements(events) if "DELETE" in s.text]
    assert statement.action == "hold"
    assert statement.approval_id == request["id"]
    assert js.outcome(events, statement.seq) is None, "a denied statement never ran"


def test_a_prepared_execution_is_held_with_its_parameters_and_journaled(
        proxy: ProxyProcess, pg_server: ThrowawayPostgres) -> None:
    with psycopg.connect(proxy.dsn("copilot", application_name="held-prepared"), autocommit=True) as conn:
        held = Background(lambda: conn.execute(f"DELETE FROM {TABLE} WHERE id = %s", (7,), prepare=True).rowcount)
        [request] = pending(proxy)
        assert request["parameters"] == ["7"]
        assert approve(proxy, request["id"]).returncode == 0
        assert held.wait() == 1
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert 7 not in rows(pg_server)
    events = js.session_events(proxy, "held-prepared")
    [statement] = [s for s in js.statements(events) if "DELETE" in s.text]
    assert (statement.action, statement.approval_id, statement.parameters) == ("hold", request["id"], ("7",))
    result = js.outcome(events, statement.seq)
    assert result is not None
    assert result.rows == 1
    with open_store(js.store_url(proxy), create=False) as store:
        approval_events = [e.event() for e in store.iter_events() if isinstance(e.event(), ApprovalEvent)]
    kinds = [e.event for e in approval_events if isinstance(e, ApprovalEvent) and e.approval_id == request["id"]]
    assert kinds == ["requested", "approved"]
    verified = js.journal_cli(proxy, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_nobody_deciding_in_time_gives_timed_out(pg_server: ThrowawayPostgres, proxy_factory: ProxyFactory,
                                                 tmp_path: Path, orders: None) -> None:
    proxy = holding_proxy(pg_server, proxy_factory, tmp_path, approvals="{timeout: 2s}")
    with psycopg.connect(proxy.dsn("copilot"), autocommit=True) as conn:
        started = time.monotonic()
        with pytest.raises(errors.InsufficientPrivilege) as caught:
            conn.execute(f"DELETE FROM {TABLE} WHERE id = 9")
        waited = time.monotonic() - started
        [request] = json.loads(approvals_cli(proxy, "list", "--all", "--json").stdout)["requests"]
        assert str(caught.value.diag.message_primary) == f"dbguard: approval {request['id']} timed out"
        assert request["status"] == "expired"
        assert 1.5 < waited < 15
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert 9 in rows(pg_server)
    late = approve(proxy, request["id"])
    assert late.returncode == 1
    assert "expired" in late.stdout + late.stderr


def test_the_requester_cannot_approve_its_own_statement(proxy: ProxyProcess, pg_server: ThrowawayPostgres) -> None:
    with psycopg.connect(proxy.dsn("copilot"), autocommit=True) as conn:
        held = Background(lambda: conn.execute(f"DELETE FROM {TABLE} WHERE id = 11"))
        [request] = pending(proxy)
        own = approvals_cli(proxy, "approve", request["id"], "--as", "copilot", secret="copilot-secret")
        assert own.returncode == 1
        assert "cannot decide on it" in own.stdout + own.stderr
        assert held.waiting
        assert approvals_cli(proxy, "deny", request["id"], "--as", "alice", "--reason", "no",
                             secret="alice-secret").returncode == 0
        with pytest.raises(errors.InsufficientPrivilege):
            held.wait()
    assert 11 in rows(pg_server)


def test_retry_mode_answers_at_once_and_runs_the_approved_statement_once(
        pg_server: ThrowawayPostgres, proxy_factory: ProxyFactory, tmp_path: Path, orders: None) -> None:
    proxy = holding_proxy(pg_server, proxy_factory, tmp_path, approvals="{timeout: 60s, mode: retry}")
    statement = f"DELETE FROM {TABLE} WHERE id = 13"
    with psycopg.connect(proxy.dsn("copilot"), autocommit=True) as conn:
        started = time.monotonic()
        with pytest.raises(errors.InsufficientPrivilege) as first:
            conn.execute(statement)
        assert time.monotonic() - started < 10, "retry mode does not wait for a person"
        [request] = pending(proxy)
        assert str(first.value.diag.message_primary) == (
            f"dbguard: held for approval {request['id']}; run it again once approved")
        with pytest.raises(errors.InsufficientPrivilege) as unapproved:
            conn.execute(statement)  # sent again before anyone decided: the same request
        assert request["id"] in str(unapproved.value.diag.message_primary)
        assert len(pending(proxy)) == 1
    assert approve(proxy, request["id"]).returncode == 0
    with psycopg.connect(proxy.dsn("copilot"), autocommit=True) as conn:  # a new session may use the grant
        assert conn.execute(statement).rowcount == 1
        with pytest.raises(errors.InsufficientPrivilege) as third:
            conn.execute(statement)
        assert request["id"] not in str(third.value.diag.message_primary), "a grant runs once; asked again"
    assert 13 not in rows(pg_server)


def test_twenty_sessions_held_while_another_keeps_querying(proxy: ProxyProcess, pg_server: ThrowawayPostgres) -> None:
    connections = [psycopg.connect(proxy.dsn("copilot"), autocommit=True) for _ in range(20)]
    try:
        def delete(conn: psycopg.Connection[Any], order: int) -> Callable[[], int]:
            return lambda: conn.execute(f"DELETE FROM {TABLE} WHERE id = {order}").rowcount

        held = [Background(delete(c, 20 + i)) for i, c in enumerate(connections)]
        requests = pending(proxy, 20)
        with psycopg.connect(proxy.dsn("alice"), autocommit=True) as other:
            started = time.monotonic()
            for _ in range(200):
                assert other.execute("SELECT count(*) FROM approval_orders").fetchone() == (40,)
            assert time.monotonic() - started < 20
        assert all(h.waiting for h in held)
        for request in requests:
            assert approve(proxy, request["id"]).returncode == 0
        assert [h.wait() for h in held] == [1] * 20
    finally:
        for c in connections:
            c.close()
    assert rows(pg_server) == [i for i in range(1, 41) if not 20 <= i < 40]


def test_a_client_that_leaves_while_held_expires_its_request(proxy: ProxyProcess, pg_server: ThrowawayPostgres) -> None:
    conn = psycopg.connect(proxy.dsn("copilot"), autocommit=True)
    held = Background(lambda: conn.execute(f"DELETE FROM {TABLE} WHERE id = 15"))
    [request] = pending(proxy)
    conn.pgconn.finish()  # the socket closes under the waiting statement
    held.thread.join(10)
    shown = settled(proxy, request["id"], "expired")
    assert shown["status"] == "expired"
    assert "ended" in shown["reason"]
    assert approve(proxy, request["id"]).returncode == 1
    assert 15 in rows(pg_server)


def test_a_proxy_killed_with_a_request_pending_never_runs_it(pg_server: ThrowawayPostgres, tmp_path: Path,
                                                             orders: None) -> None:
    rules = tmp_path / "hold-rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    directory = tmp_path / "proxy"
    directory.mkdir()
    extra = f"rules: {rules}\napprovals: {{timeout: 60s}}\n"
    first = start_proxy(directory, pg_server.dsn(sslmode="disable"), extra_yaml=extra)
    try:
        conn = psycopg.connect(first.dsn("copilot"), autocommit=True)
        held = Background(lambda: conn.execute(f"DELETE FROM {TABLE} WHERE id = 17"))
        [request] = pending(first)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        with pytest.raises(psycopg.OperationalError):
            held.wait()
        conn.close()
    finally:
        first.stop()
    second = start_proxy(directory, pg_server.dsn(sslmode="disable"), extra_yaml=extra)
    try:
        late = approve(second, request["id"])
        assert late.returncode == 1
        assert "expired" in late.stdout + late.stderr
        assert "restarted" in late.stdout + late.stderr
    finally:
        second.stop()
    assert 17 in rows(pg_server)


def test_the_idle_timeout_does_not_fire_while_a_person_decides(
        pg_server: ThrowawayPostgres, proxy_factory: ProxyFactory, tmp_path: Path, orders: None) -> None:
    proxy = holding_proxy(pg_server, proxy_factory, tmp_path, listener_extra={"idle_timeout": "1s"})
    with psycopg.connect(proxy.dsn("copilot"), autocommit=True) as conn:
        held = Background(lambda: conn.execute(f"DELETE FROM {TABLE} WHERE id = 19").rowcount)
        [request] = pending(proxy)
        time.sleep(3)
        assert approve(proxy, request["id"]).returncode == 0
        assert held.wait() == 1


def test_webhooks_hear_of_the_request_and_its_approval(pg_server: ThrowawayPostgres, proxy_factory: ProxyFactory,
                                                       tmp_path: Path, orders: None) -> None:
    hooks = Hooks()
    try:
        proxy = holding_proxy(pg_server, proxy_factory, tmp_path,
                              approvals=f"{{timeout: 60s, webhooks: ['{hooks.url}']}}")
        with psycopg.connect(proxy.dsn("copilot"), autocommit=True) as conn:
            held = Background(lambda: conn.execute(f"DELETE FROM {TABLE} WHERE id = 21").rowcount)
            [request] = pending(proxy)
            [created] = hooks.wait_for(1)
            assert created["event"] == "requested"
            assert created["request"]["id"] == request["id"]
            assert "copilot" in created["text"]
            assert f"DELETE FROM {TABLE}" in created["text"]
            assert approve(proxy, request["id"]).returncode == 0
            assert held.wait() == 1
        # The CLI posts its own decision; the proxy posted the request.
        assert [b["event"] for b in hooks.wait_for(2)] == ["requested", "approved"]
    finally:
        hooks.close()


def test_statements_no_rule_holds_are_not_slowed_by_the_queue(proxy: ProxyProcess) -> None:
    with psycopg.connect(proxy.dsn("copilot"), autocommit=True) as conn:
        assert conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone() == (40,)
        assert conn.execute(f"UPDATE {TABLE} SET note = 'x' WHERE id = 40").rowcount == 1
    with psycopg.connect(proxy.dsn("alice"), autocommit=True) as conn:  # a human: no hold rule matches
        assert conn.execute(f"DELETE FROM {TABLE} WHERE id = 40").rowcount == 1
    listed = json.loads(approvals_cli(proxy, "list", "--all", "--json").stdout)["requests"]
    assert listed == []



def test_cancelling_a_held_statement_fails_it_as_cancelled_and_expires_the_request(
        proxy: ProxyProcess, pg_server: ThrowawayPostgres) -> None:
    with psycopg.connect(proxy.dsn("copilot"), autocommit=True) as conn:
        held = Background(lambda: conn.execute(f"DELETE FROM {TABLE} WHERE id = 23"))
        [request] = pending(proxy)
        conn.cancel_safe()  # what psql's Ctrl-C sends: a CancelRequest on a new connection
        with pytest.raises(errors.QueryCanceled):
            held.wait()
        assert conn.execute("SELECT 1").fetchone() == (1,), "the session goes on"
    shown = settled(proxy, request["id"], "expired")
    assert (shown["status"], shown["reason"]) == ("expired", "the client cancelled it")
    assert approve(proxy, request["id"]).returncode == 1
    assert 23 in rows(pg_server)


def test_two_proxies_share_one_queue_in_a_postgresql_store(
        pg_server: ThrowawayPostgres, fresh_pg_server: ThrowawayPostgres, proxy_factory: ProxyFactory,
        tmp_path: Path, orders: None) -> None:
    """The session waits on one proxy; the DBA decides through the other's configuration; the
    waiting proxy is woken by NOTIFY from the shared store."""
    store = f"store: {fresh_pg_server.superuser_dsn()}\n"
    first = holding_proxy(pg_server, proxy_factory, tmp_path, extra_yaml=store)
    second = holding_proxy(pg_server, proxy_factory, tmp_path, extra_yaml=store)
    with psycopg.connect(first.dsn("copilot"), autocommit=True) as conn:
        held = Background(lambda: conn.execute(f"DELETE FROM {TABLE} WHERE id = 25").rowcount)
        [request] = pending(second)  # the other proxy's view of the queue
        assert request["listener"] == "app-pg"
        started = time.monotonic()
        assert approve(second, request["id"]).returncode == 0
        assert held.wait() == 1
        assert time.monotonic() - started < 10
    assert 25 not in rows(pg_server)
