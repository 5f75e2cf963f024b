"""Unit tests for statements held for approval in dbguard.session.mysql (sans-IO, no sockets).

Covers: a held COM_QUERY sends nothing upstream, asks the driver to hold it and keeps the
session busy; the hot path declines while a hold is pending; what the client pipelined behind
it waits (bounded) and follows it; approval forwards the very same packet and relays its
response; denial answers ERR 1227 (the approval id in the message tail) with the next sequence
id, and the session goes on; a multi-statement message is held as a whole; COM_STMT_PREPARE of
a held statement goes through and each COM_STMT_EXECUTE is held with its parameters (long data
included), the statement staying prepared after a denial; a policy reload turns a prepared
statement held or not; the journal records the statement once, numbered as the request said,
with the approval id; a session that ends while held journals the statement as not run.
"""

from __future__ import annotations

from collections.abc import Mapping

from dbguard.journal import OutcomeEvent, StatementEvent
from dbguard.model import Action, Decision, SessionGate, SessionInfo, StatementSource
from dbguard.session.holds import MAX_HELD_BEHIND_HOLD, HoldResolved, HoldStatement, refusal_for
from dbguard.session.mysql import Phase
from dbguard.session.mysql_actions import MysqlSessionAction
from dbguard.session.pg_actions import Close, SendClient, SendUpstream
from dbguard.wire.mysql import messages as m
from tests.unit.journal_helpers import taken
from tests.unit.test_mysql_session import (
    COLDEF,
    OK,
    Driver,
    client_login,
    make_settings,
    packets,
    pkt,
    query,
    resultset,
    single_err,
    to_client,
    to_upstream,
    upstream_login,
)

HOLD = Decision(Action.HOLD, ("hold-deletes",), reason="dbguard: held by rule hold-deletes: deletes need a DBA",
                details={"rule": "hold-deletes", "action": "hold", "approvers": "dba"})


class HoldDeletes:
    """Holds any text containing DELETE (or, with `everything`, any text at all); counts calls."""

    def __init__(self) -> None:
        self.decided: list[str] = []
        self.everything = False

    def open(self, session: SessionInfo, startup: Mapping[str, str]) -> SessionGate:
        return self

    def decide(self, sql: bytes, source: StatementSource, name: str) -> Decision:
        self.decided.append(sql.decode())
        return HOLD if self.everything or b"DELETE" in sql.upper() else Decision(Action.ALLOW)

    def server_parameter(self, name: str, value: str) -> None:
        pass


def held_driver(*, journal: bool = True) -> tuple[Driver, HoldDeletes]:
    gate = HoldDeletes()
    d = Driver(make_settings(gate, journal=journal))
    client_login(d)
    upstream_login(d)
    assert d.session.phase is Phase.READY
    return d, gate


def holds(actions: list[MysqlSessionAction]) -> list[HoldStatement]:
    return [a for a in actions if isinstance(a, HoldStatement)]


def busy(d: Driver) -> bool:
    """A function, not the property: mypy would narrow the property across calls."""
    return d.session.busy


def statement_events(d: Driver) -> list[StatementEvent]:
    assert d.session.journal is not None
    events, _ = taken(d.session.journal)
    return [e for e in events if isinstance(e, StatementEvent)]


DELETE = query(b"DELETE FROM orders WHERE id = 7")
SELECT = query(b"SELECT 1")
DENIAL = "dbguard: denied by alice: not during business hours"


def deny(d: Driver, hold: HoldStatement, status: str = "denied", message: str = DENIAL) -> list[MysqlSessionAction]:
    refusal = refusal_for(hold.held, "ap_testtest01", status, message)
    return d.session.hold_resolved(HoldResolved("ap_testtest01", run=False, refusal=refusal))


def test_held_query_sends_nothing_upstream_and_asks_the_driver() -> None:
    d, gate = held_driver()
    actions = d.client(DELETE)
    [hold] = holds(actions)
    assert not [a for a in actions if isinstance(a, SendClient | SendUpstream)], "the client just waits"
    assert hold.held.sql == "DELETE FROM orders WHERE id = 7"
    assert hold.held.parameters is None
    assert hold.held.rule_ids == ("hold-deletes",)
    assert hold.held.approvers == ("dba",)
    assert hold.held.statement_seq == 1
    assert busy(d), "a held statement is not idleness"
    assert d.session.hold_requested("ap_testtest01") == [], "MySQL has no notices"
    assert gate.decided == ["DELETE FROM orders WHERE id = 7"]


def test_the_hot_path_declines_a_held_query_and_decides_it_once() -> None:
    d, gate = held_driver()
    assert d.session.client_fast(DELETE) is False
    [hold] = holds(d.client(DELETE))
    assert gate.decided == ["DELETE FROM orders WHERE id = 7"], "the general path used the hot path's decision"
    assert d.session.client_fast(SELECT) is False, "nothing is taken while a statement is held"
    assert d.session.upstream_fast(pkt(OK, 1)) is False
    assert hold.held.statement_seq == 1


def test_what_the_client_pipelined_waits_and_follows_the_approved_statement() -> None:
    d, gate = held_driver()
    actions = d.client(DELETE + SELECT)
    assert holds(actions)
    assert to_upstream(actions) == b""
    assert to_upstream(d.client(query(b"SELECT 2"))) == b"", "nothing is decided behind a hold"
    assert gate.decided == ["DELETE FROM orders WHERE id = 7"]
    actions = d.session.hold_resolved(HoldResolved("ap_testtest01", run=True))
    assert actions == [SendUpstream(DELETE)], "the very same packet, then the response is awaited"
    ok = pkt(m.OkPacket(affected_rows=1).encode(m.Capability(0)), 1)
    actions = d.upstream(ok)
    assert to_client(actions).startswith(ok)
    assert to_upstream(actions) == SELECT, "the next command once the response is complete"
    assert to_upstream(d.upstream(resultset())) == query(b"SELECT 2")
    assert to_client(d.upstream(resultset())) == resultset()
    assert not busy(d)


def test_denied_query_gets_1227_with_the_next_sequence_id_and_the_session_goes_on() -> None:
    d, _ = held_driver()
    [hold] = holds(d.client(DELETE + SELECT))
    actions = deny(d, hold)
    seq, error = single_err(to_client(actions))
    assert seq == 1
    assert (error.errno, error.sqlstate) == (1227, b"42000")
    message = error.message.decode()
    assert message.startswith(DENIAL + " (")
    assert "approval=ap_testtest01" in message
    assert "status=denied" in message
    assert "rule=hold-deletes" in message
    assert to_upstream(actions) == SELECT, "then what the client sent behind it"
    assert not [a for a in actions if isinstance(a, Close)]
    assert to_client(d.upstream(resultset())) == resultset()
    assert not busy(d)
    assert d.client(query(b"SELECT 3")) == [SendUpstream(query(b"SELECT 3"))]


def test_timed_out_and_cancelled_holds() -> None:
    d, _ = held_driver(journal=False)
    [hold] = holds(d.client(DELETE))
    _, error = single_err(to_client(deny(d, hold, "expired", "dbguard: approval ap_testtest01 timed out")))
    assert error.errno == 1227
    assert error.message.decode().startswith("dbguard: approval ap_testtest01 timed out (")
    [hold] = holds(d.client(DELETE))
    cancelled = Decision(Action.HOLD, reason="canceling statement due to user request", details={"status": "cancelled"})
    actions = d.session.hold_resolved(HoldResolved("", run=False, refusal=cancelled, sqlstate="57014"))
    _, error = single_err(to_client(actions))
    assert (error.errno, error.sqlstate) == (1317, b"70100")


def test_a_multi_statement_message_is_held_as_a_whole() -> None:
    d, gate = held_driver()
    text = b"SELECT 1; DELETE FROM orders WHERE id = 1; SELECT 2"
    [hold] = holds(d.client(query(text)))
    assert hold.held.sql == text.decode()
    assert gate.decided == [text.decode()]
    assert d.session.hold_resolved(HoldResolved("ap_testtest01", run=True)) == [SendUpstream(query(text))]


def test_the_journal_records_the_statement_once_with_its_approval_id() -> None:
    d, _ = held_driver()
    d.client(SELECT)
    d.upstream(resultset())
    [hold] = holds(d.client(DELETE))
    assert hold.held.statement_seq == 2
    d.session.hold_resolved(HoldResolved("ap_testtest01", run=True))
    d.upstream(pkt(m.OkPacket(affected_rows=3).encode(m.Capability(0)), 1))
    assert d.session.journal is not None
    events, write_ahead = taken(d.session.journal)
    assert write_ahead
    statements = [e for e in events if isinstance(e, StatementEvent)]
    assert [(s.seq, s.action, s.approval_id) for s in statements] == [(1, "allow", None), (2, "hold", "ap_testtest01")]
    outcomes = {e.statement_seq: e for e in events if isinstance(e, OutcomeEvent)}
    assert outcomes[2].rows == 3


def test_a_denied_statement_is_journaled_without_an_outcome() -> None:
    d, _ = held_driver()
    [hold] = holds(d.client(DELETE))
    deny(d, hold)
    d.client(SELECT)
    d.upstream(resultset())
    assert d.session.journal is not None
    events, _ = taken(d.session.journal)
    statements = [e for e in events if isinstance(e, StatementEvent)]
    assert [(s.seq, s.action, s.approval_id) for s in statements] == [(1, "hold", "ap_testtest01"), (2, "allow", None)]
    assert statements[0].reason == DENIAL
    assert [e.statement_seq for e in events if isinstance(e, OutcomeEvent)] == [2], "the denied one never ran"


def test_a_session_ending_while_held_journals_the_statement_as_not_run() -> None:
    d, _ = held_driver()
    d.client(DELETE)
    d.session.client_closed()
    d.session.hold_abandoned("client closed")
    [statement] = statement_events(d)
    assert statement.action == "hold"
    assert "ended while held" in statement.reason
    assert d.session.hold_resolved(HoldResolved("ap_testtest01", run=True)) == []


def test_too_much_pipelined_behind_a_hold_is_a_protocol_error() -> None:
    d, _ = held_driver(journal=False)
    d.client(DELETE)
    chunk = pkt(b"\x03SELECT '" + b"x" * (MAX_HELD_BEHIND_HOLD // 2) + b"'", 0)  # each half the bound
    d.client(chunk)
    actions = d.client(chunk + chunk[:1024])
    assert [a for a in actions if isinstance(a, Close)]
    _, error = single_err(to_client(actions))
    assert b"held for approval" in error.message


def test_the_upstream_closing_while_held_tells_the_client() -> None:
    d, _ = held_driver(journal=False)
    d.client(DELETE)
    actions = d.session.upstream_closed()
    seq, error = single_err(to_client(actions))
    assert (seq, error.errno) == (1, 1053)


# ----------------------------------------------------------------------------- prepared statements

PARAM_DEF = m.ColumnDefinition41(b"def", b"", b"", b"", b"?", b"", 63, 0, m.ColumnType.LONGLONG,
                                 m.ColumnFlag(0), 0).encode()


def prepare(d: Driver, sql: bytes, statement_id: int = 7, params: int = 1) -> None:
    prep = pkt(b"\x16" + sql, 0)
    assert d.client(prep) == [SendUpstream(prep)], "preparing runs nothing: it goes through"
    response = pkt(m.StmtPrepareOk(statement_id, 0, params).encode(), 1)
    response += b"".join(pkt(PARAM_DEF, 2 + i) for i in range(params))
    assert to_client(d.upstream(response)) == response
    assert statement_id in d.session.statements


def execute(statement_id: int, value: int | None, *, long_data: bool = False) -> bytes:
    param = m.QueryAttribute(m.ColumnType.LONGLONG if not long_data else m.ColumnType.BLOB, False, b"",
                             None if value is None else value.to_bytes(8, "little"), long_data=long_data)
    return pkt(m.ComStmtExecute(statement_id, 0, 1, (param,)).encode(), 0)


def test_each_execution_of_a_held_prepared_statement_is_held_with_its_parameters() -> None:
    d, _ = held_driver()
    prepare(d, b"DELETE FROM orders WHERE id = ?")
    assert d.session.client_fast(execute(7, 5)) is False
    [hold] = holds(d.client(execute(7, 5)))
    assert hold.held.sql == "DELETE FROM orders WHERE id = ?"
    assert hold.held.parameters == ("5",)
    assert busy(d)
    actions = d.session.hold_resolved(HoldResolved("ap_testtest01", run=True))
    assert actions == [SendUpstream(execute(7, 5))], "the very same EXECUTE packet"
    ok = pkt(m.OkPacket(affected_rows=1).encode(m.Capability(0)), 1)
    assert to_client(d.upstream(ok)) == ok
    assert not busy(d)
    # The next execution asks again.
    [hold] = holds(d.client(execute(7, 6)))
    assert hold.held.parameters == ("6",)
    statements = statement_events(d)
    assert [(s.action, s.approval_id, s.parameters) for s in statements] == [("hold", "ap_testtest01", ("5",))]


def test_a_denied_execution_gets_1227_and_the_statement_stays_prepared() -> None:
    d, _ = held_driver(journal=False)
    prepare(d, b"DELETE FROM orders WHERE id = ?")
    [hold] = holds(d.client(execute(7, 5)))
    seq, error = single_err(to_client(deny(d, hold)))
    assert (seq, error.errno) == (1, 1227)
    assert 7 in d.session.statements
    assert holds(d.client(execute(7, 5))), "executed again: held again"


def test_long_data_goes_upstream_before_the_held_execution() -> None:
    d, _ = held_driver(journal=False)
    prepare(d, b"DELETE FROM docs WHERE body = ?")
    long_data = pkt(m.ComStmtSendLongData(7, 0, b"abcdef").encode(), 0)
    assert d.client(long_data) == [SendUpstream(long_data)], "buffered by the server; no response"
    [hold] = holds(d.client(execute(7, None, long_data=True)))
    assert hold.held.parameters == ("<long data: 6 bytes>",)
    assert d.session.hold_resolved(HoldResolved("ap_testtest01", run=True)) == [
        SendUpstream(execute(7, None, long_data=True))]


def test_a_policy_reload_turns_a_prepared_statement_held_or_not() -> None:
    d, gate = held_driver(journal=False)
    prepare(d, b"UPDATE orders SET note = ? WHERE id = 1")
    assert d.client(execute(7, 1)) == [SendUpstream(execute(7, 1))]
    d.upstream(pkt(OK, 1))
    gate.everything = True
    d.session.revalidate()
    assert holds(d.client(execute(7, 2)))
    d.session.hold_resolved(HoldResolved("ap_testtest01", run=True))
    d.upstream(pkt(OK, 1))
    gate.everything = False
    d.session.revalidate()
    assert d.client(execute(7, 3)) == [SendUpstream(execute(7, 3))]


def test_a_held_query_after_a_prepared_one_keeps_the_columns() -> None:
    """A prepared statement returning rows, approved: its binary result set is relayed."""
    d, _ = held_driver(journal=False)
    prep = pkt(b"\x16SELECT n FROM t WHERE n = ? AND 'DELETE' <> ''", 0)
    d.client(prep)
    response = pkt(m.StmtPrepareOk(9, 1, 1).encode(), 1) + pkt(PARAM_DEF, 2) + pkt(COLDEF, 3)
    d.upstream(response)
    holds(d.client(execute(9, 1)))
    d.session.hold_resolved(HoldResolved("ap_testtest01", run=True))
    row = m.encode_binary_row([(1).to_bytes(4, "little")], [m.ColumnType.LONG])
    ok_fe = m.OkPacket(status_flags=m.ServerStatus.AUTOCOMMIT, header=0xFE).encode(m.Capability(0))
    binary = pkt(m.encode_column_count(1), 1) + pkt(COLDEF, 2) + pkt(row, 3) + pkt(ok_fe, 4)
    assert to_client(d.upstream(binary)) == binary
    assert not busy(d)
    assert [p.sequence_id for p in packets(binary)] == [1, 2, 3, 4]
