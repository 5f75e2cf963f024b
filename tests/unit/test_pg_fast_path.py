"""The session's one-pass hot path (`client_fast` / `upstream_fast`) against the general path.

Covers: the fast path forwards the very same bytes object; for any input it accepts, it
produces what the general path would (bytes each way, transaction status, owed answers);
it declines, changing nothing, on partial messages, Terminate, FunctionCall, errors,
ParameterStatus and COPY; a refused statement (a blocking gate) is answered in order, only
after the upstream's answers to what was pipelined before it.
"""

from __future__ import annotations

import dataclasses

import pytest

from dbguard.model import Action, Decision, StatementRequest
from dbguard.session.pg_actions import SendClient, SendUpstream, SessionAction
from dbguard.wire.pg import messages as m
from tests.unit.test_pg_session import Driver, client_login, make_settings, upstream_login


class BlockDrops:
    """A gate that refuses any text containing DROP; records what it saw."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def decide(self, request: StatementRequest) -> Decision:
        self.seen.append(request.sql)
        if "DROP" in request.sql:
            return Decision(Action.BLOCK, ("no-drop",), reason="dbguard: blocked by rule no-drop: no drops")
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


def test_refusal_is_answered_in_place_and_nothing_reaches_the_server() -> None:
    gate = BlockDrops()
    d = ready(gate)
    actions = d.session.client_fast(Q_DROP)
    assert isinstance(actions, list)
    assert sent(actions, SendUpstream) == b""
    messages = [m.decode_backend(bytes(data[:1]), data[5:]) for data in _split(sent(actions, SendClient))]
    error, ready_msg = messages
    assert isinstance(error, m.ErrorOrNotice)
    assert error.sqlstate == "42501"
    assert ready_msg == m.ReadyForQuery(b"I")
    assert gate.seen == ["DROP TABLE customers"]


def test_refusal_pipelined_behind_an_allowed_query_waits_for_its_answer() -> None:
    d = ready(BlockDrops())
    actions = d.session.client_fast(Q1 + Q_DROP + Q1)
    assert isinstance(actions, list)
    assert sent(actions, SendUpstream) == Q1 + Q1  # the DROP never goes upstream
    assert sent(actions, SendClient) == b""  # its error must wait for the first answer
    # The first answer arrives: the fast path must not take it (a refusal falls due after it).
    first = RESULT + READY_I
    assert d.session.upstream_fast(first) is False
    out = sent(d.upstream(first), SendClient)
    assert out.startswith(first)
    refusal = out[len(first):]
    error = m.decode_backend(b"E", _split(refusal)[0][5:])
    assert isinstance(error, m.ErrorOrNotice)
    assert error.message == "dbguard: blocked by rule no-drop: no drops"
    # The third statement's answer then flows on the fast path again.
    assert d.session.upstream_fast(RESULT + READY_I) is True
    assert not d.session._owed


def _split(data: bytes) -> list[bytes]:
    out = []
    pos = 0
    while pos < len(data):
        length = int.from_bytes(data[pos + 1 : pos + 5], "big")
        out.append(data[pos : pos + 1 + length])
        pos += 1 + length
    return out
