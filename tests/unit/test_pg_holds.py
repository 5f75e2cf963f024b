"""Unit tests for statements held for approval in dbguard.session.pg (sans-IO, no sockets).

Covers: a held Query sends nothing upstream and asks the driver to hold it; what the client
pipelined behind it waits; the "held for approval" notice, deferred while the client stream is
in the middle of a message; approval forwards the very same bytes, then what waited; denial
replaces the statement upstream so the server's own state machine follows, and the client gets
the denial (SQLSTATE 42501, approval id in DETAIL); the extended protocol holds each execution
at its Bind with its parameters, the Parse going through; the journal records the statement
once, numbered as the request said, with the approval id.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from dbguard.journal import StatementEvent
from dbguard.model import (
    Action,
    Decision,
    SessionGate,
    SessionInfo,
    StatementSource,
)
from dbguard.session.holds import HoldResolved, HoldStatement, refusal_for
from dbguard.session.pg import REFUSAL_TOKEN, Phase
from dbguard.session.pg_actions import SendClient, SendUpstream, SessionAction
from dbguard.wire.pg import messages as m
from dbguard.wire.pg.framing import frame
from tests.unit.journal_helpers import taken
from tests.unit.test_pg_session import (
    Driver,
    backend_messages,
    client_login,
    make_settings,
    to_client,
    to_upstream,
    typed_frames,
    upstream_login,
)

HOLD = Decision(Action.HOLD, ("hold-deletes",), reason="dbguard: held by rule hold-deletes: deletes need a DBA",
                details={"rule": "hold-deletes", "action": "hold", "approvers": "dba"})


class _HoldDeletes:
    def decide(self, sql: bytes, source: StatementSource, name: str) -> Decision:
        return HOLD if b"DELETE" in sql.upper() else Decision(Action.ALLOW)

    def server_parameter(self, name: str, value: str) -> None:
        pass


class HoldDeletesGate:
    def open(self, session: SessionInfo, startup: Mapping[str, str]) -> SessionGate:
        return _HoldDeletes()


def held_driver(*, journal: bool = True) -> Driver:
    d = Driver(dataclasses.replace(make_settings(), gate=HoldDeletesGate(), journal=journal))
    client_login(d)
    upstream_login(d)
    assert d.session.phase is Phase.READY
    return d


def holds(actions: list[SessionAction]) -> list[HoldStatement]:
    return [a for a in actions if isinstance(a, HoldStatement)]


DELETE = m.Query(b"DELETE FROM orders WHERE id = 7").encode()
SELECT = m.Query(b"SELECT 1").encode()
SYNTAX_ERROR = m.error("42601", f'syntax error at or near "{REFUSAL_TOKEN.decode()}"')


def test_held_query_sends_nothing_upstream_and_asks_the_driver() -> None:
    d = held_driver()
    actions = d.client(DELETE)
    [hold] = holds(actions)
    assert to_upstream(actions) == b""
    assert hold.held.sql == "DELETE FROM orders WHERE id = 7"
    assert hold.held.rule_ids == ("hold-deletes",)
    assert hold.held.approvers == ("dba",)
    assert hold.held.statement_seq == 1
    assert d.session.busy, "a held statement is not idleness"


def test_what_the_client_pipelined_waits_and_follows_the_approved_statement() -> None:
    d = held_driver()
    actions = d.client(DELETE + SELECT)
    assert holds(actions)
    assert to_upstream(actions) == b""
    assert to_upstream(d.client(m.Query(b"SELECT 2").encode())) == b"", "nothing is decided behind a hold"
    actions = d.session.hold_resolved(HoldResolved("ap_testtest01", run=True))
    assert to_upstream(actions) == DELETE + SELECT + m.Query(b"SELECT 2").encode()


def test_notice_tells_the_client_the_approval_id() -> None:
    d = held_driver()
    d.client(DELETE)
    actions = d.session.hold_requested("ap_testtest01")
    [notice] = backend_messages(to_client(actions))
    assert isinstance(notice, m.ErrorOrNotice)
    assert notice.notice
    assert notice.message == "dbguard: held for approval ap_testtest01"
    assert "approval=ap_testtest01" in (notice.get("D") or "")


def test_notice_waits_while_the_client_stream_is_inside_a_message() -> None:
    d = held_driver()
    d.client(SELECT)  # answered below, in pieces
    d.client(DELETE)
    row = m.DataRow((b"hello",)).encode()
    first = d.upstream(row[:6])
    assert to_client(first) == row[:6]
    assert to_client(d.session.hold_requested("ap_testtest01")) == b"", "never inside a DataRow"
    rest = d.upstream(row[6:] + m.CommandComplete("SELECT 1").encode() + m.ReadyForQuery(b"I").encode())
    frames = typed_frames(row[:6] + to_client(rest))
    assert [f.type for f in frames] == [b"D", b"C", b"Z", b"N"], "the notice comes at the next boundary"



def test_denied_query_is_replaced_upstream_and_the_client_gets_the_denial() -> None:
    d = held_driver()
    [hold] = holds(d.client(DELETE))
    refusal = refusal_for(hold.held, "ap_testtest01", "denied", "dbguard: denied by alice: not today")
    actions = d.session.hold_resolved(HoldResolved("ap_testtest01", run=False, refusal=refusal))
    sent = to_upstream(actions)
    assert sent != DELETE
    assert REFUSAL_TOKEN in sent
    answer = d.upstream(SYNTAX_ERROR + m.ReadyForQuery(b"I").encode())
    error, ready = backend_messages(to_client(answer))
    assert isinstance(error, m.ErrorOrNotice)
    assert error.sqlstate == "42501"
    assert error.message == "dbguard: denied by alice: not today"
    assert "approval=ap_testtest01" in (error.get("D") or "")
    assert "status=denied" in (error.get("D") or "")
    assert ready == m.ReadyForQuery(b"I")
    assert to_upstream(d.client(SELECT)) == SELECT, "the session goes on"


def test_extended_protocol_holds_each_execution_at_its_bind() -> None:
    d = held_driver()
    parse = m.Parse("s1", b"DELETE FROM orders WHERE id = $1").encode()
    bind = m.Bind("", "s1", (), (b"7",), ()).encode()
    execute = m.Execute("", 0).encode()
    sync = frame(b"S", b"")
    actions = d.client(parse + bind + execute + sync)
    [hold] = holds(actions)
    assert to_upstream(actions) == parse, "preparing runs nothing: the Parse goes through"
    assert hold.held.parameters == ("7",)
    actions = d.session.hold_resolved(HoldResolved("ap_testtest01", run=True))
    assert to_upstream(actions) == bind + execute + sync
    # A second execution of the same statement is held again.
    again = d.client(m.Bind("", "s1", (), (b"8",), ()).encode() + execute + sync)
    [hold2] = holds(again)
    assert hold2.held.parameters == ("8",)
    assert to_upstream(again) == b""


def test_denied_execution_is_refused_by_the_server_state_machine() -> None:
    d = held_driver(journal=False)
    parse = m.Parse("", b"DELETE FROM orders WHERE id = $1").encode()
    bind = m.Bind("", "", (), (b"7",), ()).encode()
    execute = m.Execute("", 0).encode()
    sync = frame(b"S", b"")
    [hold] = holds(d.client(parse + bind + execute + sync))
    refusal = refusal_for(hold.held, "ap_testtest01", "expired", "dbguard: approval ap_testtest01 timed out")
    actions = d.session.hold_resolved(HoldResolved("ap_testtest01", run=False, refusal=refusal))
    sent = typed_frames(to_upstream(actions))
    assert [f.type for f in sent] == [b"B", b"E", b"S"]
    assert REFUSAL_TOKEN in sent[0].payload, "a Bind to a statement that does not exist"
    answer = d.upstream(m.error("26000", f'prepared statement "{REFUSAL_TOKEN.decode()}" does not exist')
                        + m.ReadyForQuery(b"I").encode())
    error, _ = backend_messages(to_client(answer))
    assert isinstance(error, m.ErrorOrNotice)
    assert (error.sqlstate, error.message) == ("42501", "dbguard: approval ap_testtest01 timed out")


def test_the_journal_records_the_statement_once_with_its_approval_id() -> None:
    d = held_driver()
    d.client(SELECT)
    [hold] = holds(d.client(DELETE))
    assert hold.held.statement_seq == 2
    d.session.hold_resolved(HoldResolved("ap_testtest01", run=True))
    assert d.session.journal is not None
    events, write_ahead = taken(d.session.journal)
    assert write_ahead
    statements = [e for e in events if isinstance(e, StatementEvent)]
    assert [(s.seq, s.action, s.approval_id) for s in statements] == [(1, "allow", None), (2, "hold", "ap_testtest01")]


def test_a_session_ending_while_held_journals_the_statement_as_not_run() -> None:
    d = held_driver()
    d.client(DELETE)
    d.session.hold_abandoned("client closed")
    assert d.session.journal is not None
    events, _ = taken(d.session.journal)
    [statement] = [e for e in events if isinstance(e, StatementEvent)]
    assert statement.action == "hold"
    assert "ended while held" in statement.reason


def test_nothing_is_sent_to_the_client_by_the_hold_itself() -> None:
    d = held_driver()
    actions = d.client(DELETE)
    assert not [a for a in actions if isinstance(a, SendClient | SendUpstream)]
