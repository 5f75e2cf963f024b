"""The MySQL session's hot path (`client_fast` / `upstream_fast`) against its general path.

Two sessions are driven side by side with the same inputs: one as the asyncio driver drives it
(every read offered to the hot path first), one forced onto the general path
(`client_data` / `upstream_data` only). After every read they must have produced the same
bytes towards each side and be in the same state (phase, the response being relayed, sequence
ids, server status, prepared statements, database, what the gate saw).

Covers: the hot path forwards the very same bytes object (an allowed COM_QUERY, an execute of a
known statement, a read of whole result packets) and is really taken for them; it declines,
changing nothing, for partial packets, pipelined commands, refusals, barriers, unknown
statement ids, ERR packets, LOCAL INFILE requests, cursors, wrong sequence ids, malformed
terminators, 16 MiB packets and bytes after a response's end; a decision taken on the hot path is
handed to the general path (the gate is asked once per statement). Hypothesis drives whole
conversations (text and prepared statements, result sets with and without DEPRECATE_EOF,
multi-results, ERR mid-result, barriers and the state query that follows them, pipelined
commands, refusals) with the server's answers split across reads at random.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbguard.journal import decode_event
from dbguard.journal.store import EncodedEvent
from dbguard.model import Action, Decision, SessionInfo, StatementSource
from dbguard.session.mysql import MysqlSession
from dbguard.session.mysql_actions import MysqlSessionAction
from dbguard.session.pg_actions import SendClient, SendUpstream
from dbguard.wire.mysql import auth
from dbguard.wire.mysql import messages as m
from dbguard.wire.mysql.packets import MAX_PACKET_PAYLOAD, PacketReader, encode_packets
from tests.unit.test_mysql_session import (
    CLIENT_CAPS,
    CLIENT_SECRET,
    CLIENT_USER,
    COLDEF,
    STATE_QUERY_FRAME,
    Driver,
    make_settings,
    pkt,
    state_answer,
    to_client,
    to_upstream,
    upstream_login,
)

C = m.Capability
S = m.ServerStatus


class Gate:
    """Refuses texts with DROP, puts a barrier after SET (and after executing a prepared SET),
    refuses everything once `lockdown` is set (for revalidation); records what it was asked."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, StatementSource]] = []
        self.params: list[tuple[str, str]] = []
        self.lockdown = False

    def open(self, session: SessionInfo, startup: Mapping[str, str]) -> Gate:
        return self

    def server_parameter(self, name: str, value: str) -> None:
        self.params.append((name, value))

    def decide(self, sql: bytes, source: StatementSource, name: str) -> Decision:
        text = sql.decode()
        self.seen.append((text, source))
        if "DROP" in text or self.lockdown:
            return Decision(Action.BLOCK, ("no-drop",), reason="dbguard: blocked by rule no-drop: no drops",
                            details={"rule": "no-drop", "action": "block"})
        if "OBSERVED" in text:  # an observe-only rule: runs, but is no plain allow
            return Decision(Action.BLOCK, ("watch",), enforced=False)
        if text.upper().startswith("SET "):
            return Decision(Action.ALLOW, barrier=True)
        return Decision(Action.ALLOW)


class Side(Driver):
    """One session and its driver; `fast` offers every read to the hot path first, as
    `runtime.mysql_listener` does. Dbguard's own state query is answered here (with or without
    DEPRECATE_EOF, as negotiated) and filtered out of the actions."""

    def __init__(self, gate: Gate, *, fast: bool, deprecate_eof: bool = True, journal: bool = False) -> None:
        super().__init__(dataclasses.replace(make_settings(gate), journal=journal))
        self.gate = gate
        self.fast = fast
        self.deprecate_eof = deprecate_eof
        self.fast_client = 0
        self.fast_upstream = 0

    def client(self, data: bytes) -> list[MysqlSessionAction]:
        if self.fast and self.session.client_fast(data):
            self.fast_client += 1
            return [SendUpstream(data)]
        return self.session.client_data(data)

    def upstream(self, data: bytes) -> list[MysqlSessionAction]:
        if self.fast and self.session.upstream_fast(data):
            self.fast_upstream += 1
            return [SendClient(data)]
        return self._answer_state_queries(self.session.upstream_data(data))

    def _answer_state_queries(self, actions: list[MysqlSessionAction]) -> list[MysqlSessionAction]:
        out: list[MysqlSessionAction] = []
        for action in actions:
            if isinstance(action, SendUpstream) and action.data == STATE_QUERY_FRAME:
                self.state_queries += 1
                out += self.upstream(state_answer(*self.server_state, deprecate_eof=self.deprecate_eof))
            else:
                out.append(action)
        return out


def login(side: Side) -> None:
    caps = CLIENT_CAPS if side.deprecate_eof else CLIENT_CAPS & ~C.DEPRECATE_EOF
    resp = m.HandshakeResponse41(caps, 16 * 1024 * 1024, 45, CLIENT_USER.encode(),
                                 auth.scramble_caching_sha2(CLIENT_SECRET.encode(), side.greeting.nonce), b"shop",
                                 auth.CACHING_SHA2_PASSWORD, ((b"program_name", b"pytest"),))
    side.client(pkt(resp.encode(), 1))
    upstream_login(side)
    assert side.session.capabilities & C.DEPRECATE_EOF if side.deprecate_eof else \
        not side.session.capabilities & C.DEPRECATE_EOF


def state(side: Side) -> dict[str, object]:
    """Everything about a session that either path may change."""
    s: MysqlSession = side.session
    resp = s._response
    return {
        "phase": s.phase,
        "response": None if resp is None else (
            resp.command, resp.mode, resp.sql, resp.allowed_infile, resp.remaining, resp.eofs, resp.prepared,
            resp.decision, resp.swallow, resp.refused_seq, resp.init_db, resp.change_user, resp.state is None),
        "server_status": (type(s.server_status), int(s.server_status)),
        "client_seq": s._client_seq,
        "statements": {k: (v.sql, v.decision) for k, v in s.statements.items()},
        "database": s.database,
        "upstream_reader": (s._upstream.expected_sequence, s._upstream.buffered),
        "client_reader": (s._client.expected_sequence, s._client.buffered),
        "close_reason": s.close_reason,
        "decided": s._decided,
        "gate": (list(side.gate.seen), list(side.gate.params)),
        "state_queries": side.state_queries,
        "journal": None if s.journal is None else _journal_events(s),
    }


def _journal_events(s: MysqlSession) -> list[dict[str, object]]:
    """The events the session has journaled so far, without what differs between two sessions
    (their ids and times)."""
    assert s.journal is not None
    out = []
    for item in s.journal._events:
        event = decode_event(item.payload) if isinstance(item, EncodedEvent) else item
        fields = {name: getattr(event, name) for name in event.__dataclass_fields__}
        for varying in ("session_id", "time_us", "duration_us"):
            fields.pop(varying, None)
        out.append({"kind": type(event).__name__, **fields})
    return out


class Pair:
    """A hot-path session and a general-path one, fed the same reads."""

    def __init__(self, *, deprecate_eof: bool = True, journal: bool = False) -> None:
        self.fast = Side(Gate(), fast=True, deprecate_eof=deprecate_eof, journal=journal)
        self.general = Side(Gate(), fast=False, deprecate_eof=deprecate_eof, journal=journal)
        for side in (self.fast, self.general):
            login(side)
        self.check()

    def check(self) -> None:
        assert state(self.fast) == state(self.general)

    def client(self, data: bytes) -> list[MysqlSessionAction]:
        out = self.fast.client(data)
        assert out == self.general.client(data)
        self.check()
        return out

    def upstream(self, data: bytes) -> list[MysqlSessionAction]:
        out = self.fast.upstream(data)
        assert out == self.general.upstream(data)
        self.check()
        return out

    def lockdown(self) -> None:
        for side in (self.fast, self.general):
            side.gate.lockdown = True
            side.session.revalidate()
        self.check()

    @property
    def server_state(self) -> tuple[bytes, bytes, bytes | None]:
        return self.general.server_state

    @server_state.setter
    def server_state(self, value: tuple[bytes, bytes, bytes | None]) -> None:
        self.fast.server_state = self.general.server_state = value


# ----------------------------------------------------------------------------- building responses

OK_AUTOCOMMIT = m.OkPacket(status_flags=S.AUTOCOMMIT).encode(C(0))


def frame(payloads: Sequence[bytes], first_seq: int = 1) -> bytes:
    out = b""
    seq = first_seq
    for payload in payloads:
        data, seq = encode_packets(payload, seq)
        out += data
    return out


def end_packet(status: int, deprecate_eof: bool) -> bytes:
    if deprecate_eof:
        return m.OkPacket(status_flags=S(status), header=0xFE).encode(C(0))
    return m.EofPacket(0, S(status)).encode()


def result_payloads(columns: int, rows: Sequence[bytes], status: int, deprecate_eof: bool) -> list[bytes]:
    payloads = [m.encode_column_count(columns)] + [COLDEF] * columns
    if not deprecate_eof:
        payloads.append(m.EofPacket(0, S.AUTOCOMMIT).encode())
    return payloads + list(rows) + [end_packet(status, deprecate_eof)]


def text_rows(columns: int, count: int) -> list[bytes]:
    return [m.encode_text_row([str(i * 7 + c).encode() * (i % 3 + 1) if (i + c) % 4 else None
                               for c in range(columns)]) for i in range(count)]


def binary_rows(count: int) -> list[bytes]:
    return [m.encode_binary_row([(i).to_bytes(4, "little")], [m.ColumnType.LONG]) for i in range(count)]


def ok(status: int = S.AUTOCOMMIT, affected: int = 0, insert_id: int = 0) -> bytes:
    return m.OkPacket(affected_rows=affected, last_insert_id=insert_id, status_flags=S(status)).encode(C(0))


def query(sql: bytes) -> bytes:
    return pkt(b"\x03" + sql, 0)


def execute(stmt_id: int) -> bytes:
    return pkt(m.ComStmtExecute(stmt_id, 0, 1).encode(), 0)


ERR = m.err(1146, "42S02", "Table 'shop.nope' doesn't exist").encode()


def prepare(pair: Pair, sql: bytes, stmt_id: int) -> None:
    pair.client(pkt(b"\x16" + sql, 0))
    pair.upstream(frame([m.StmtPrepareOk(stmt_id, 0, 1).encode(), COLDEF]
                        + ([] if pair.fast.deprecate_eof else [m.EofPacket(0, S.AUTOCOMMIT).encode()])))
    assert stmt_id in pair.fast.session.statements


# ----------------------------------------------------------------------------- the hot path is taken


@pytest.mark.parametrize("deprecate_eof", [True, False])
def test_allowed_query_and_its_result_take_the_hot_path_as_the_same_objects(deprecate_eof: bool) -> None:
    pair = Pair(deprecate_eof=deprecate_eof)
    q = query(b"SELECT c FROM sbtest1 WHERE id=1")
    assert pair.fast.session.client_fast(q) is True
    assert pair.general.client(q) == [SendUpstream(q)]
    pair.check()
    response = frame(result_payloads(1, text_rows(1, 3), S.AUTOCOMMIT, deprecate_eof))
    assert pair.fast.session.upstream_fast(response) is True
    assert pair.general.upstream(response) == [SendClient(response)]
    pair.check()
    assert not pair.fast.session.busy
    assert pair.fast.gate.seen == [("SELECT c FROM sbtest1 WHERE id=1", StatementSource.SIMPLE_QUERY)]


@pytest.mark.parametrize("deprecate_eof", [True, False])
def test_prepared_execute_round_trip_takes_the_hot_path(deprecate_eof: bool) -> None:
    pair = Pair(deprecate_eof=deprecate_eof)
    prepare(pair, b"SELECT n FROM t WHERE id = ?", 7)
    assert (pair.fast.fast_client, pair.fast.fast_upstream) == (0, 0)  # prepare is the general path's
    for _ in range(3):
        assert pair.client(execute(7)) == [SendUpstream(execute(7))]
        response = frame(result_payloads(1, binary_rows(1), S.AUTOCOMMIT | S.IN_TRANS, deprecate_eof))
        assert pair.upstream(response) == [SendClient(response)]
    assert (pair.fast.fast_client, pair.fast.fast_upstream) == (3, 3)
    assert pair.fast.session.server_status == S.AUTOCOMMIT | S.IN_TRANS
    assert [s for s, _ in pair.fast.gate.seen] == ["SELECT n FROM t WHERE id = ?"]  # decided once, at prepare


def test_results_spread_over_reads_are_relayed_read_by_read() -> None:
    pair = Pair()
    pair.client(query(b"SELECT n FROM t"))
    payloads = result_payloads(2, text_rows(2, 6), S.AUTOCOMMIT, True)
    packets_ = [frame([p], 1 + i) for i, p in enumerate(payloads)]
    # Whole packets in each read: every read takes the hot path.
    for start in range(0, len(packets_), 3):
        read = b"".join(packets_[start:start + 3])
        assert pair.upstream(read) == [SendClient(read)]
    assert pair.fast.fast_upstream == (len(packets_) + 2) // 3
    assert not pair.fast.session.busy


def test_multi_results_take_the_hot_path() -> None:
    pair = Pair()
    pair.client(query(b"SELECT 1; UPDATE t SET n = 1; SELECT 2"))
    more = S.AUTOCOMMIT | S.MORE_RESULTS_EXISTS
    response = frame([*result_payloads(1, text_rows(1, 1), more, True), ok(more, affected=3),
                      *result_payloads(1, text_rows(1, 2), S.AUTOCOMMIT, True)])
    assert pair.upstream(response) == [SendClient(response)]
    assert pair.fast.fast_upstream == 1
    assert not pair.fast.session.busy


# ----------------------------------------------------------------------------- declining


@pytest.mark.parametrize("data", [
    query(b"SELECT 1")[:-2],                                # partial packet
    query(b"SELECT 1") + query(b"SELECT 2"),                 # a second command pipelined
    query(b"SELECT 1") + query(b"SELECT 2")[:3],             # ... or a partial header after it
    pkt(b"\x03SELECT 1", 1),                                 # wrong sequence id
    pkt(b"\x0e", 0),                                         # COM_PING: the general path's
    pkt(b"\x16SELECT 1", 0),                                 # COM_STMT_PREPARE
    pkt(b"\x1c\x07\x00\x00\x00\x01\x00\x00\x00", 0),         # COM_STMT_FETCH
    execute(8),                                              # unknown statement id
    pkt(b"\x17\x07\x00", 0),                                 # truncated execute
    b"\x00\x00\x00\x00",                                     # empty packet
    pkt(b"\x11" + b"x" * 30, 0),                             # COM_CHANGE_USER
])
def test_client_fast_declines_without_changing_anything(data: bytes) -> None:
    pair = Pair()
    prepare(pair, b"SELECT n FROM t WHERE id = ?", 7)
    before = state(pair.fast)
    assert pair.fast.session.client_fast(data) is False
    assert state(pair.fast) == before
    pair.fast.fast = False  # now the general path, on both
    pair.client(data)


@pytest.mark.parametrize(("sql", "refused"), [
    (b"DROP TABLE customers", True),
    (b"SET sql_mode = 'ANSI_QUOTES'", False),   # a barrier: its answer is followed by a state query
    (b"SELECT 'OBSERVED'", False),              # observe-only: runs, but is no plain allow
])
def test_query_decision_is_handed_to_the_general_path(sql: bytes, refused: bool) -> None:
    pair = Pair()
    q = query(sql)
    assert pair.fast.session.client_fast(q) is False
    assert pair.fast.session._decided is not None
    fast_out = pair.fast.session.client_data(q)
    assert fast_out == pair.general.client(q)
    pair.check()
    # The gate was asked exactly once for the statement on the hot-path session too.
    assert pair.fast.gate.seen.count((sql.decode(), StatementSource.SIMPLE_QUERY)) == 1
    if refused:
        assert to_upstream(fast_out) == b""
        assert m.ErrPacket.decode(to_client(fast_out)[4:]).errno == 1227
        return
    assert to_upstream(fast_out) == q
    pair.server_state = (b"ANSI_QUOTES", b"utf8mb4", b"shop")
    pair.upstream(pkt(OK_AUTOCOMMIT, 1))
    assert pair.fast.session._response is None


def test_refused_and_barrier_executes_go_to_the_general_path() -> None:
    pair = Pair()
    prepare(pair, b"SET @a = ?", 3)  # a barrier: the general path reads the state back after it
    assert pair.fast.session.client_fast(execute(3)) is False
    pair.fast.fast = False
    pair.client(execute(3))
    queries = pair.general.state_queries
    pair.upstream(pkt(OK_AUTOCOMMIT, 1))
    assert pair.general.state_queries == queries + 1
    pair.fast.fast = True
    prepare(pair, b"SELECT 1", 4)
    pair.lockdown()  # the reloaded policy refuses what was prepared
    assert pair.fast.session.client_fast(execute(4)) is False
    out = pair.client(execute(4))
    assert m.ErrPacket.decode(to_client(out)[4:]).errno == 1227


RESULT = result_payloads(1, text_rows(1, 2), S.AUTOCOMMIT, True)


@pytest.mark.parametrize("response", [
    frame(RESULT)[:-1],                                              # partial packet at the end
    frame(RESULT)[:9],                                               # partial header
    frame(RESULT, first_seq=2),                                      # wrong sequence id
    frame(RESULT[:3]) + pkt(RESULT[3], 9),                           # a wrong one further on
    frame([ERR]),                                                    # ERR
    frame([*RESULT[:3], ERR]),                                       # ERR mid-result
    frame([m.LocalInfileRequest(b"/etc/passwd").encode()]),         # LOCAL INFILE request
    frame(RESULT) + pkt(OK_AUTOCOMMIT, 5),                          # bytes after the response's end
    frame([*RESULT[:3], b"\xfe\x00\xfc\x01"]),                     # truncated OK terminator
    frame([*RESULT[:3], b"\xfe\x00\x00\x02"]),                     # terminator without its status
    frame([b"\x00\xfb\x00\x02\x00\x00\x00"]),                      # OK with a NULL as affected rows
    frame([b"\xfc\x00\x01"]),                                        # 256 columns: general path
    frame([b"\xfe" + b"\x01" * 8]),                                  # 0xFE as the first packet
    frame([b""]),                                                    # empty packet
    b"\x00\x00\x00\x01",                                             # ... with a header only
])
def test_upstream_fast_declines_without_changing_anything(response: bytes) -> None:
    pair = Pair()
    pair.client(query(b"SELECT n FROM t"))
    before = state(pair.fast)
    assert pair.fast.session.upstream_fast(response) is False
    assert state(pair.fast) == before
    pair.fast.fast = False
    pair.upstream(response)


def test_terminators_without_deprecate_eof_are_checked_as_strictly() -> None:
    for bad in (b"\xfe\x00\x00\x02", b"\xfe\x00\x00\x02\x00\x00"):  # an EOF is exactly 5 bytes
        for before_rows in (True, False):
            pair = Pair(deprecate_eof=False)
            pair.client(query(b"SELECT n FROM t"))
            payloads = result_payloads(1, text_rows(1, 1), S.AUTOCOMMIT, False)
            payloads = [*payloads[:2], bad] if before_rows else [*payloads[:-1], bad]
            response = frame(payloads)
            assert pair.fast.session.upstream_fast(response) is False
            pair.upstream(response)
            assert pair.fast.session.close_reason is not None


def test_a_cursor_goes_to_the_general_path_without_deprecate_eof() -> None:
    pair = Pair(deprecate_eof=False)
    prepare(pair, b"SELECT n FROM t", 3)
    cursor = pkt(m.ComStmtExecute(3, 1, 1).encode(), 0)
    assert pair.client(cursor) == [SendUpstream(cursor)]  # the execute itself is ordinary
    response = frame([m.encode_column_count(1), COLDEF, m.EofPacket(0, S.AUTOCOMMIT | S.CURSOR_EXISTS).encode()])
    assert pair.fast.session.upstream_fast(response) is False
    pair.upstream(response)
    assert not pair.fast.session.busy
    fetch = pkt(m.ComStmtFetch(3, 10).encode(), 0)
    assert pair.fast.session.client_fast(fetch) is False
    pair.client(fetch)
    rows = frame([*binary_rows(2), m.EofPacket(0, S.AUTOCOMMIT | S.LAST_ROW_SENT).encode()])
    assert pair.fast.session.upstream_fast(rows) is False
    pair.upstream(rows)
    assert not pair.fast.session.busy


def test_a_cursor_with_deprecate_eof_matches() -> None:
    pair = Pair()
    prepare(pair, b"SELECT n FROM t", 3)
    pair.client(pkt(m.ComStmtExecute(3, 1, 1).encode(), 0))
    cursor_ok = m.OkPacket(status_flags=S.AUTOCOMMIT | S.CURSOR_EXISTS, header=0xFE).encode(C(0))
    pair.upstream(frame([m.encode_column_count(1), COLDEF, cursor_ok]))
    assert not pair.fast.session.busy
    pair.client(pkt(m.ComStmtFetch(3, 10).encode(), 0))
    last = m.OkPacket(status_flags=S.AUTOCOMMIT | S.LAST_ROW_SENT, header=0xFE).encode(C(0))
    pair.upstream(frame([*binary_rows(2), last]))
    assert not pair.fast.session.busy


def test_a_command_pipelined_behind_a_response_is_taken_by_the_general_path() -> None:
    pair = Pair()
    pair.client(query(b"SELECT 1") + query(b"DROP TABLE t") + query(b"SELECT 2"))
    response = frame(RESULT)
    assert pair.fast.session.upstream_fast(response) is False  # a command waits in the reader
    out = pair.upstream(response)
    data = to_client(out)
    assert data.startswith(response)
    assert m.ErrPacket.decode(data[len(response) + 4:]).errno == 1227
    assert to_upstream(out) == query(b"SELECT 2")
    pair.upstream(pkt(OK_AUTOCOMMIT, 1))
    assert not pair.fast.session.busy
    assert pair.fast.gate.seen == pair.general.gate.seen


def test_local_infile_allowed_and_refused() -> None:
    pair = Pair()
    pair.client(query(b"LOAD DATA LOCAL INFILE 'rows.csv' INTO TABLE t"))
    assert pair.fast.fast_client == 1
    pair.upstream(pkt(m.LocalInfileRequest(b"rows.csv").encode(), 1))
    pair.client(pkt(b"1,2\n", 2) + pkt(b"", 3))
    assert pair.upstream(pkt(ok(affected=1), 4)) == [SendClient(pkt(ok(affected=1), 4))]
    assert not pair.fast.session.busy
    pair.client(query(b"SELECT * FROM t"))
    out = pair.upstream(pkt(m.LocalInfileRequest(b"/etc/passwd").encode(), 1))
    assert to_upstream(out) == pkt(b"", 2)
    out = pair.upstream(pkt(OK_AUTOCOMMIT, 3))
    assert m.ErrPacket.decode(to_client(out)[4:]).errno == 1227


def test_change_user_reset_and_the_state_query_stay_on_the_general_path() -> None:
    pair = Pair()
    for side in (pair.fast, pair.general):
        msg = m.ComChangeUser(CLIENT_USER.encode(), b"x" * 20, b"", 45, auth.MYSQL_NATIVE_PASSWORD)
        [switch] = [a for a in side.client(pkt(msg.encode(CLIENT_CAPS), 0)) if isinstance(a, SendClient)]
        request = m.AuthSwitchRequest.decode(switch.data[4:])
        side.client(pkt(auth.scramble_caching_sha2(CLIENT_SECRET.encode(), request.plugin_data[:-1]), 2))
    pair.check()
    fast_before = pair.fast.fast_upstream
    pair.upstream(pkt(OK_AUTOCOMMIT, 1))  # the reset's OK, then the state query's answer
    assert pair.fast.fast_upstream == fast_before
    assert pair.fast.session.identity is not None
    pair.client(query(b"SELECT 1"))
    assert pair.upstream(pkt(OK_AUTOCOMMIT, 1)) == [SendClient(pkt(OK_AUTOCOMMIT, 1))]


def test_a_16_mib_row_goes_to_the_general_path() -> None:
    pair = Pair()
    pair.client(query(b"SELECT big FROM t"))
    big = m.encode_text_row([b"x" * MAX_PACKET_PAYLOAD])
    head = frame([m.encode_column_count(1), COLDEF])
    assert pair.upstream(head) == [SendClient(head)]
    rest = frame([big, end_packet(S.AUTOCOMMIT, True)], first_seq=3)
    assert pair.fast.session.upstream_fast(rest) is False
    pair.upstream(rest)
    assert not pair.fast.session.busy


def test_an_error_from_the_idle_server_stays_on_the_general_path() -> None:
    pair = Pair()
    seq = pair.fast.session._upstream.expected_sequence
    assert seq is not None
    idle_err = pkt(m.err(4031, "HY000", "The client was disconnected by the server").encode(), seq)
    assert pair.fast.session.upstream_fast(idle_err) is False
    pair.upstream(idle_err)
    assert pair.fast.session.close_reason == "upstream error while idle"


# ----------------------------------------------------------------------------- whole conversations

# What the fake server answers to each statement text.
QUERIES: dict[bytes, str] = {
    b"SELECT c FROM sbtest1 WHERE id=5": "rows:1:1",
    b"SELECT c FROM sbtest2 WHERE id BETWEEN 1 AND 40 ORDER BY c": "rows:1:40",
    b"SELECT id, k, c FROM sbtest3": "rows:3:4",
    b"SELECT 1 FROM empty": "rows:1:0",
    b"UPDATE t SET n = n + 1": "ok",
    b"BEGIN": "ok:in-trans",
    b"SELECT 1; SELECT 2, 3; UPDATE t SET n = 2": "multi",
    b"SELECT * FROM nope": "err",
    b"SELECT c FROM sbtest4 WHERE id < 9": "err-mid",
    b"SET sql_mode = 'ANSI_QUOTES'": "ok",
    b"DROP TABLE t": "refused",
    b"SELECT 'OBSERVED'": "rows:1:1",
    b"LOAD DATA LOCAL INFILE 'x.csv' INTO TABLE t": "infile",
}
PREPARED: dict[int, bytes] = {
    11: b"SELECT c FROM sbtest1 WHERE id=?",
    12: b"SET @v = ?",
    13: b"DROP TABLE t",  # refused at prepare: never known
}


def answer(command: bytes, deprecate_eof: bool) -> bytes:
    """The fake server's answer to one command the proxy forwarded (sequence ids from 1)."""
    code, body = command[0], command[1:]
    if code == 0x16:
        stmt_id = next(k for k, v in PREPARED.items() if v == body)
        return frame([m.StmtPrepareOk(stmt_id, 1, 1).encode(), COLDEF, COLDEF]
                     if deprecate_eof else [m.StmtPrepareOk(stmt_id, 1, 1).encode(), COLDEF,
                                            m.EofPacket(0, S.AUTOCOMMIT).encode(), COLDEF,
                                            m.EofPacket(0, S.AUTOCOMMIT).encode()])
    if code == 0x17:
        stmt_id = int.from_bytes(body[:4], "little")
        if PREPARED[stmt_id].startswith(b"SET"):
            return frame([ok()])
        return frame(result_payloads(1, binary_rows(2), S.AUTOCOMMIT, deprecate_eof))
    if code == 0x0E or code == 0x19:
        return frame([ok()])
    assert code == 0x03, command
    kind = QUERIES[body]
    if kind.startswith("rows"):
        _, columns, rows = kind.split(":")
        return frame(result_payloads(int(columns), text_rows(int(columns), int(rows)), S.AUTOCOMMIT, deprecate_eof))
    if kind == "ok":
        return frame([ok(affected=2)])
    if kind == "ok:in-trans":
        return frame([ok(S.AUTOCOMMIT | S.IN_TRANS)])
    if kind == "multi":
        more = S.AUTOCOMMIT | S.MORE_RESULTS_EXISTS
        return frame(result_payloads(1, text_rows(1, 1), more, deprecate_eof)
                     + result_payloads(2, text_rows(2, 3), more, deprecate_eof) + [ok(S.AUTOCOMMIT, affected=1)])
    if kind == "err":
        return frame([ERR])
    if kind == "err-mid":
        return frame([*result_payloads(1, text_rows(1, 3), S.AUTOCOMMIT, deprecate_eof)[:-1], ERR])
    assert kind == "infile"
    return frame([m.LocalInfileRequest(b"x.csv").encode()])


INFILE = query(b"LOAD DATA LOCAL INFILE 'x.csv' INTO TABLE t")
CLIENT_COMMANDS = (
    [query(sql) for sql in QUERIES]
    + [pkt(b"\x16" + sql, 0) for sql in PREPARED.values()]
    + [execute(stmt_id) for stmt_id in PREPARED] + [execute(99)]
    + [pkt(b"\x0e", 0), pkt(m.ComStmtClose(11).encode(), 0)]
)


def commands_in(data: bytes) -> list[bytes]:
    """The commands (and LOCAL INFILE data) in what the proxy sent upstream: each command
    starts its own sequence, so the packets are read one by one."""
    commands = []
    while data:
        reader = PacketReader(expected_sequence=None)
        reader.feed(data)
        packet = next(reader.packets())
        commands.append(packet.payload)
        data = data[4 + len(packet.payload):]
    return commands


def split(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deprecate_eof=st.booleans(), journal=st.booleans(),
       script=st.lists(st.tuples(st.lists(st.sampled_from(CLIENT_COMMANDS), min_size=1, max_size=3),
                                 st.lists(st.integers(min_value=0, max_value=10_000), max_size=6)),
                       min_size=1, max_size=8))
def test_conversations_match_the_general_path(deprecate_eof: bool, journal: bool,
                                              script: list[tuple[list[bytes], list[int]]]) -> None:
    """...and, with the journal on, both journal the same events (statements, parameters,
    outcomes with their row counts and errors) after every read."""
    pair = Pair(deprecate_eof=deprecate_eof, journal=journal)
    for commands, cuts in script:
        if len(commands) > 1 and INFILE in commands:  # commands behind it would be read as the file
            commands = [c for c in commands if c != INFILE] or [INFILE]
        # The client's commands in one read (pipelined when there are several).
        pending = commands_in(to_upstream(pair.client(b"".join(commands))))
        while pending and pair.fast.session.close_reason is None:
            command = pending.pop(0)
            if command[0] in (0x19, 0x18):
                continue  # no answer to COM_STMT_CLOSE
            response = answer(command, deprecate_eof)
            for read in split(response, cuts):
                out = pair.upstream(read)
                pending += commands_in(to_upstream(out))
            if command[0] == 0x03 and QUERIES.get(command[1:]) == "infile":
                # The client sends its file, the server its OK.
                if pair.fast.session.busy:
                    pair.client(pkt(b"a,b\n", 2) + pkt(b"", 3))
                    pending += commands_in(to_upstream(pair.upstream(pkt(ok(affected=1), 4))))
                else:
                    pending += commands_in(to_upstream(pair.upstream(pkt(ok(), 3))))
        assert not pair.fast.session.busy or pair.fast.session.close_reason is not None
    assert pair.fast.session.close_reason is None
    # The gate was asked once per statement on both sessions (the hot path hands decisions on).
    assert pair.fast.gate.seen == pair.general.gate.seen


@settings(max_examples=100, deadline=None)
@given(columns=st.integers(min_value=1, max_value=4), rows=st.integers(min_value=0, max_value=30),
       results=st.integers(min_value=1, max_value=3), deprecate_eof=st.booleans(),
       err_at=st.one_of(st.none(), st.integers(min_value=1, max_value=60)),
       in_trans=st.booleans(), cuts=st.lists(st.integers(min_value=0, max_value=100_000), max_size=10),
       prepared=st.booleans(), journal=st.booleans())
def test_result_streams_split_anywhere_match_the_general_path(
        columns: int, rows: int, results: int, deprecate_eof: bool, err_at: int | None, in_trans: bool,
        cuts: list[int], prepared: bool, journal: bool) -> None:
    pair = Pair(deprecate_eof=deprecate_eof, journal=journal)
    if prepared:
        prepare(pair, b"SELECT c FROM sbtest1 WHERE id=?", 5)
        pair.client(execute(5))
    else:
        pair.client(query(b"SELECT c FROM sbtest1 WHERE id=5"))
    base = S.AUTOCOMMIT | (S.IN_TRANS if in_trans else S(0))
    payloads: list[bytes] = []
    for index in range(results):
        status = base | (S.MORE_RESULTS_EXISTS if index < results - 1 else S(0))
        if index % 2:
            payloads.append(ok(status, affected=index))
        else:
            payloads += result_payloads(columns, text_rows(columns, rows), status, deprecate_eof)
    failed = err_at is not None and err_at < len(payloads)
    if err_at is not None and failed:
        payloads = [*payloads[:err_at], ERR]
    response = frame(payloads)
    for read in split(response, cuts):
        pair.upstream(read)
    if pair.fast.session.close_reason is None:
        assert not pair.fast.session.busy
        if not failed:
            assert pair.fast.session.server_status == base
    pair.client(query(b"SELECT 1"))


@settings(max_examples=100, deadline=None)
@given(data=st.binary(min_size=0, max_size=40), after_query=st.booleans())
def test_arbitrary_bytes_match_the_general_path(data: bytes, after_query: bool) -> None:
    pair = Pair()
    prepare(pair, b"SELECT 1", 1)
    if after_query:
        pair.client(query(b"SELECT n FROM t"))
        pair.upstream(data)
    else:
        pair.client(data)


def test_journaled_hot_path_records_statements_and_outcomes_like_the_general_path() -> None:
    pair = Pair(journal=True)
    assert pair.fast.session.journal is not None
    assert pair.general.session.journal is not None
    pair.fast.session.journal.take()  # the session_start events
    pair.general.session.journal.take()
    pair.client(query(b"SELECT c FROM sbtest1 WHERE id=5"))
    pair.upstream(frame(result_payloads(1, text_rows(1, 3), S.AUTOCOMMIT, True)))
    prepare(pair, b"SELECT c FROM sbtest1 WHERE id=?", 7)
    parameter = m.QueryAttribute(m.ColumnType.LONG, False, b"", (42).to_bytes(4, "little"))
    pair.client(pkt(m.ComStmtExecute(7, 0, 1, (parameter,)).encode(), 0))
    pair.upstream(frame(result_payloads(1, binary_rows(2), S.AUTOCOMMIT, True)))
    assert pair.fast.fast_client >= 1
    assert pair.fast.fast_upstream >= 1  # the hot path was really taken
    events = _journal_events(pair.fast.session)
    assert events == _journal_events(pair.general.session)
    statements = [e for e in events if e["kind"] == "StatementEvent"]
    outcomes = [e for e in events if e["kind"] == "OutcomeEvent"]
    assert [s["text"] for s in statements] == ["SELECT c FROM sbtest1 WHERE id=5", "SELECT c FROM sbtest1 WHERE id=?"]
    assert statements[1]["parameters"] == ("42",)
    assert [o["rows"] for o in outcomes] == [3, 2]
