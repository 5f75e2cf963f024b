"""The session's one-pass hot path (`client_fast` / `upstream_fast`) against the general path.

Covers: the fast path forwards the very same bytes object; for any input it accepts, it
produces what the general path would (bytes each way, transaction status, owed answers);
it declines, changing nothing, on partial messages, Terminate, FunctionCall, errors,
ParameterStatus and COPY; a refused statement (a blocking gate) is answered in order, only
after the upstream's answers to what was pipelined before it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest

from dbguard.model import Action, Decision, SessionInfo, StatementSource
from dbguard.session.pg import REFUSAL_TOKEN
from dbguard.session.pg_actions import SendClient, SendUpstream, SessionAction
from dbguard.wire.pg import messages as m
from tests.unit.journal_helpers import taken
from tests.unit.test_pg_session import Driver, client_login, make_settings, upstream_login


class BlockDrops:
    """A gate that refuses any text containing DROP and puts a barrier after any SET;
    records what it saw."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def open(self, session: SessionInfo, startup: Mapping[str, str]) -> BlockDrops:
        return self

    def server_parameter(self, name: str, value: str) -> None:
        self.seen.append(f"param {name}={value}")

    def decide(self, sql: bytes, source: StatementSource, name: str) -> Decision:
        text = sql.decode()
        self.seen.append(text)
        if "DROP" in text:
            return Decision(Action.BLOCK, ("no-drop",), reason="dbguard: blocked by rule no-drop: no drops",
                            details={"rule": "no-drop", "action": "block"}, hint="Do not drop.")
        if text.startswith("SET"):
            return Decision(Action.ALLOW, barrier=True)
        return Decision(Action.ALLOW)


def ready(gate: BlockDrops | None = None) -> Driver:
    settings = make_settings()
    if gate is not None:
        settings = dataclasses.replace(settings, gate=gate)
    d = Driver(settings)
    client_login(d)
    upstream_login(d)
    return d


def sent(actions: list[SessionAction], kind: type[SendClient] | type[SendUpstream]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, kind))


Q1 = m.Query(b"SELECT 1").encode()
Q_DROP = m.Query(b"DROP TABLE customers").encode()
EXTENDED = (m.Parse("s1", b"SELECT $1::int", (23,)).encode() + m.Bind("", "s1", (0,), (b"7",)).encode()
            + m.Describe(b"P", "").encode() + m.Execute("", 0).encode() + m.Bare(b"S").encode())
RESULT = (m.RowDescription((m.FieldDescription("n", 0, 0, 23, 4, -1, 0),)).encode()
          + m.DataRow((b"1",)).encode() + m.CommandComplete("SELECT 1").encode())
READY_I = m.ReadyForQuery(b"I").encode()
READY_T = m.ReadyForQuery(b"T").encode()


def test_allowed_query_is_forwarded_as_the_same_object() -> None:
    d = ready()
    assert d.session.client_fast(Q1) is Q1
    response = RESULT + READY_I
    assert d.session.upstream_fast(response) is True


@pytest.mark.parametrize("burst", [
    Q1,
    Q1 + Q1 + Q1,
    EXTENDED,
    EXTENDED + EXTENDED,
    m.Query(b"BEGIN; SELECT 1").encode(),
    m.Bind("", "s1", (), ()).encode() + m.Execute("", 0).encode() + m.Bare(b"H").encode(),
])
def test_fast_path_matches_the_general_path(burst: bytes) -> None:
    fast, general = ready(), ready()
    result = fast.session.client_fast(burst)
    assert result is burst
    assert sent(general.client(burst), SendUpstream) == burst
    cycles = len(general.session._owed)
    assert len(fast.session._owed) == cycles
    # Each Query or Sync is owed one answer ending in ReadyForQuery; Flush owes none.
    response = (RESULT + READY_T) * cycles if cycles else RESULT
    assert fast.session.upstream_fast(response) is True
    assert sent(general.upstream(response), SendClient) == response
    expected_status = b"T" if cycles else b"I"
    assert fast.session.transaction_status == general.session.transaction_status == expected_status
    assert not fast.session._owed
    assert not general.session._owed


@pytest.mark.parametrize("data", [
    Q1[:-3],                                  # partial message
    Q1 + Q1[:4],                              # whole message then a partial header
    m.Bare(b"X").encode(),                    # Terminate
    m.FunctionCall(1598).encode(),            # FunctionCall
    b"\x01\x00\x00\x00\x04",                  # unknown type
    b"Q\x00\x00\x00\x02",                     # impossible length
    m.Query(b"SELECT 1").encode()[:-1] + b"x",  # no terminator
    b"Q\x00\x00\x00\x0aSEL\x00CT\x00",        # NUL inside the text
])
def test_client_fast_declines_without_changing_anything(data: bytes) -> None:
    d = ready()
    before = (len(d.session._owed), d.session.transaction_status)
    assert d.session.client_fast(data) is None
    assert (len(d.session._owed), d.session.transaction_status) == before


@pytest.mark.parametrize("data", [
    RESULT[:7],                                                       # partial
    m.ParameterStatus("client_encoding", "LATIN1").encode() + READY_I,  # needs tracking
    m.error_response("42P01", "no such table").encode() + READY_I,     # errors are inspected
    m.CopyResponse(b"H", 0, (0,)).encode(),                           # COPY starts
])
def test_upstream_fast_declines_without_changing_anything(data: bytes) -> None:
    d = ready()
    assert d.session.client_fast(Q1) is Q1
    assert d.session.upstream_fast(data) is False
    assert len(d.session._owed) == 1
    assert d.session.transaction_status == b"I"


ROWS = m.DataRow((b"1",)).encode() + m.DataRow((None,)).encode()


def test_rows_masking_vouches_for_skip_the_walk_and_agree_with_it() -> None:
    """With masking on, the listener says when a read is whole DataRows only
    (`PgResultMasking.rows_only`): the session then takes them without walking them, as the
    walk would, and declines where the walk declines."""
    d = ready(BlockDrops())
    assert d.session.client_fast(Q1) is Q1
    assert d.session.upstream_fast(RESULT) is True
    assert d.session.upstream_fast(ROWS, rows_only=True) is d.session.upstream_fast(ROWS) is True
    assert d.session.upstream_fast(READY_I) is True
    assert not d.session._owed
    # A refusal waiting for its turn: its answer falls due, the general path's to give.
    assert sent(d.client(Q_DROP), SendUpstream) == REFUSED_QUERY
    assert d.session.upstream_fast(ROWS, rows_only=True) is d.session.upstream_fast(ROWS) is False


REFUSED_QUERY = m.Query(REFUSAL_TOKEN).encode()
SYNTAX_ERROR = m.error_response("42601", f'syntax error at or near "{REFUSAL_TOKEN.decode()}"').encode()


def _messages(data: bytes) -> list[object]:
    return [m.decode_backend(bytes(frame[:1]), frame[5:]) for frame in _split(data)]


def test_refused_query_is_replaced_upstream_and_the_server_error_swapped() -> None:
    gate = BlockDrops()
    d = ready(gate)
    assert d.session.client_fast(Q_DROP) is None  # a refusal is the general path's
    upstream = sent(d.client(Q_DROP), SendUpstream)
    assert upstream == REFUSED_QUERY  # the DROP text never goes upstream
    assert gate.seen.count("DROP TABLE customers") == 1  # decided once, not twice
    # The server fails the replacement; the client sees dbguard's error in its place, then
    # the server's own ReadyForQuery: inside a transaction that is 'E', as for any error.
    assert d.session.upstream_fast(SYNTAX_ERROR + READY_T) is False
    error, ready_msg = _messages(sent(d.upstream(SYNTAX_ERROR + m.ReadyForQuery(b"E").encode()), SendClient))
    assert isinstance(error, m.ErrorOrNotice)
    assert error.sqlstate == "42501"
    assert error.message == "dbguard: blocked by rule no-drop: no drops"
    assert error.get(m.FIELD_DETAIL) == "rule=no-drop action=block"
    assert error.get(m.FIELD_HINT) == "Do not drop."
    assert ready_msg == m.ReadyForQuery(b"E")
    assert d.session.transaction_status == b"E"
    # Afterwards the fast path is back.
    assert d.session.client_fast(Q1) is Q1
    assert d.session.upstream_fast(RESULT + READY_I) is True


def test_refusal_pipelined_between_allowed_queries_keeps_the_order() -> None:
    d = ready(BlockDrops())
    assert sent(d.client(Q1 + Q_DROP + Q1), SendUpstream) == Q1 + REFUSED_QUERY + Q1
    answers = RESULT + READY_I + SYNTAX_ERROR + READY_I + RESULT + READY_I
    out = _messages(sent(d.upstream(answers), SendClient))
    assert [type(x).__name__ for x in out] == [
        "RowDescription", "DataRow", "CommandComplete", "ReadyForQuery",
        "ErrorOrNotice", "ReadyForQuery",
        "RowDescription", "DataRow", "CommandComplete", "ReadyForQuery"]
    error = out[4]
    assert isinstance(error, m.ErrorOrNotice)
    assert error.sqlstate == "42501"
    assert not d.session._owed
    assert not d.session._refusals


def test_a_real_syntax_error_of_the_client_is_not_swapped() -> None:
    d = ready(BlockDrops())
    d.client(Q1)
    own_error = m.error_response("42601", 'syntax error at or near "SELEC"').encode()
    assert sent(d.upstream(own_error + READY_I), SendClient) == own_error + READY_I


def test_refused_parse_fails_at_parse_and_the_batch_is_discarded_by_the_server() -> None:
    d = ready(BlockDrops())
    batch = (m.Parse("s2", b"DROP TABLE t").encode() + m.Bind("", "s2", (), ()).encode()
             + m.Execute("", 0).encode() + m.Bare(b"S").encode())
    upstream = sent(d.client(batch), SendUpstream)
    replaced = m.Parse("s2", REFUSAL_TOKEN).encode()
    assert upstream == replaced + batch[len(m.Parse("s2", b"DROP TABLE t").encode()):]
    assert b"DROP" not in upstream
    # The server answers the failed Parse with an error, skips Bind/Execute, then Ready.
    out = _messages(sent(d.upstream(SYNTAX_ERROR + READY_I), SendClient))
    assert isinstance(out[0], m.ErrorOrNotice)
    assert out[0].sqlstate == "42501"
    assert out[1] == m.ReadyForQuery(b"I")
    assert not d.session._refusals


def test_refused_parse_error_is_swapped_even_when_the_client_flushes_before_sync() -> None:
    d = ready(BlockDrops())
    d.client(m.Parse("", b"DROP TABLE t").encode() + m.Bare(b"H").encode())
    # The error can come back on Flush, before the cycle's Sync is even sent.
    out = _messages(sent(d.upstream(SYNTAX_ERROR), SendClient))
    assert isinstance(out[0], m.ErrorOrNotice)
    assert out[0].sqlstate == "42501"
    d.client(m.Bare(b"S").encode())
    assert sent(d.upstream(READY_I), SendClient) == READY_I
    assert not d.session._refusals
    assert not d.session._owed


def test_barrier_holds_what_follows_until_the_setting_statement_completed() -> None:
    gate = BlockDrops()
    d = ready(gate)
    set_query = m.Query(b"SET standard_conforming_strings = off").encode()
    after = m.Query(b"SELECT 'x'").encode()
    assert sent(d.client(set_query + after), SendUpstream) == set_query
    assert "SELECT 'x'" not in gate.seen  # not decided before the SET has run
    status = m.ParameterStatus("standard_conforming_strings", "off").encode()
    actions = d.upstream(m.CommandComplete("SET").encode() + status + READY_I)
    assert sent(actions, SendUpstream) == after
    # The gate heard the new setting before it decided the next statement.
    assert gate.seen.index("param standard_conforming_strings=off") < gate.seen.index("SELECT 'x'")
    assert sent(d.upstream(RESULT + READY_I), SendClient) == RESULT + READY_I
    assert d.session.client_fast(Q1) is Q1


def test_parse_after_a_barrier_parse_in_the_same_batch_fails_closed() -> None:
    gate = BlockDrops()
    d = ready(gate)
    first = m.Parse("", b"SET standard_conforming_strings = off").encode() + m.Bind("", "", (), ()).encode()
    second = m.Parse("", b"SELECT 'x'").encode()
    upstream = sent(d.client(first + m.Execute("", 0).encode() + second + m.Bare(b"S").encode() + Q1), SendUpstream)
    assert upstream.startswith(first)
    assert m.Parse("", REFUSAL_TOKEN).encode() in upstream
    assert not upstream.endswith(Q1)  # the next Query waits behind the barrier
    assert "SELECT 'x'" not in gate.seen
    answers = (m.Bare(b"1").encode() + m.Bare(b"2").encode() + m.CommandComplete("SET").encode()
               + SYNTAX_ERROR + m.ParameterStatus("standard_conforming_strings", "off").encode() + READY_I)
    actions = d.upstream(answers)
    out = _messages(sent(actions, SendClient))
    error = out[3]
    assert isinstance(error, m.ErrorOrNotice)
    assert error.sqlstate == "42501"
    assert "follows, in the same batch" in (error.message or "")
    assert sent(actions, SendUpstream) == Q1  # released once the batch completed


def _split(data: bytes) -> list[bytes]:
    out = []
    pos = 0
    while pos < len(data):
        length = int.from_bytes(data[pos + 1 : pos + 5], "big")
        out.append(data[pos : pos + 1 + length])
        pos += 1 + length
    return out


def _journaled() -> Driver:
    d = Driver(dataclasses.replace(make_settings(), journal=True))
    client_login(d)
    upstream_login(d)
    return d


def _events_without_times(d: Driver) -> list[dict[str, object]]:
    assert d.session.journal is not None
    events, _ = taken(d.session.journal)
    out = []
    for event in events:
        fields = {name: getattr(event, name) for name in event.__dataclass_fields__}
        for varying in ("time_us", "duration_us", "session_id"):
            fields.pop(varying, None)
        out.append(fields)
    return out


@pytest.mark.parametrize("burst", [
    Q1,
    Q1 + Q1,
    EXTENDED,
    EXTENDED + EXTENDED,
    m.Query(b"BEGIN; SELECT 1").encode(),
])
def test_journaled_fast_path_records_what_the_general_path_records(burst: bytes) -> None:
    """With the journal on, both paths journal the same statements (text, decision, bound
    parameters rendered from the Parse's types) and the same outcomes."""
    fast, general = _journaled(), _journaled()
    _events_without_times(fast)
    _events_without_times(general)  # the session_start events
    assert fast.session.client_fast(burst) is burst
    general.client(burst)
    cycles = len(general.session._owed)
    response = (RESULT + READY_T) * cycles
    assert fast.session.upstream_fast(response) is True
    general.upstream(response)
    recorded = _events_without_times(fast)
    assert recorded == _events_without_times(general)
    statements = [e for e in recorded if "text" in e]
    assert statements, "nothing was journaled"
    if burst.startswith(b"P"):
        assert statements[0]["text"] == "SELECT $1::int"
        assert statements[0]["parameters"] == ("7",)
    outcomes = [e for e in recorded if "statement_seq" in e and "rows" in e]
    assert [o["rows"] for o in outcomes] == [1] * len(outcomes)
