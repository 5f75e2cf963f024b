"""Unit tests for dbguard.session.mysql: the MysqlSession state machine driven purely, no sockets.

A fake client and a fake upstream are played with the codec's own encoders, byte by byte.
Covers: the greeting (capabilities, no COMPRESS and a clear refusal of it, SSL only with TLS), client login with
mysql_native_password, caching_sha2_password fast path and RSA full authentication, an auth
switch, wrong secret for known and unknown names answered alike (1045 after a throttling
Sleep), the upstream login (native, caching_sha2 full auth with the RSA key request, an
upstream ERR), the command phase: a query relayed both ways byte-identically, a refusal with
ERR 1227 at the right sequence id and the session working afterwards, a multi-statement
query decided once as a whole, prepare refused, prepare + execute + close relayed, an unknown
statement id, multi-results, cursors (execute + fetch), COM_STATISTICS and COM_FIELD_LIST,
pipelined commands held until the response is over, refused commands (COM_PROCESS_KILL,
COM_BINLOG_DUMP, unknown bytes), COM_CHANGE_USER re-authenticating against dbguard identities
(success resets the upstream session and reopens the gate; a wrong secret closes with 1045),
malformed packets, LOCAL INFILE refused and allowed, upstream TLS with mysql_clear_password,
client_ed25519, and the upstream closing mid-response.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest

from dbguard.model import Action, Decision, Gate, Identity, IdentityKind, SessionInfo, StatementSource
from dbguard.session.journal import SessionJournal
from dbguard.session.mysql import PROXY_CAPABILITIES, MysqlSession, Phase
from dbguard.session.mysql_actions import (
    MysqlIdentityEntry,
    MysqlListenerSettings,
    MysqlSessionAction,
    MysqlStartClientTls,
)
from dbguard.session.mysql_state_sync import STATE_QUERY, ServerSessionState, StateReader
from dbguard.session.pg_actions import (
    Close,
    ConnectUpstream,
    SendClient,
    SendUpstream,
    Sleep,
    StartUpstreamTls,
    UpstreamSettings,
    UpstreamTlsMode,
)
from dbguard.session.throttle import LoginThrottle
from dbguard.wire.mysql import auth
from dbguard.wire.mysql import messages as m
from dbguard.wire.mysql.packets import Packet, PacketReader, ProtocolViolation, encode_packets

C = m.Capability
CLIENT_USER = "copilot"
CLIENT_SECRET = "secret"
UPSTREAM_USER = "svc_dbguard"
UPSTREAM_PASSWORD = "upstream-password"
CLIENT_ADDRESS = "192.0.2.10:50123"
RSA_KEY = auth.RsaKeyPair.generate()
UPSTREAM_RSA_KEY = auth.RsaKeyPair.generate()
SERVER_NONCE = bytes(range(1, 21))
SERVER_CAPS = PROXY_CAPABILITIES | C.SESSION_TRACK | C.COMPRESS
CLIENT_CAPS = (PROXY_CAPABILITIES | C.COMPRESS) & ~C.COMPRESS


class BlockDrops:
    """A gate that refuses any text containing DROP; records what it saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, StatementSource]] = []
        self.params: list[tuple[str, str]] = []

    def open(self, session: SessionInfo, startup: Mapping[str, str]) -> BlockDrops:
        return self

    def server_parameter(self, name: str, value: str) -> None:
        self.params.append((name, value))

    def decide(self, sql: bytes, source: StatementSource, name: str) -> Decision:
        text = sql.decode()
        self.seen.append((text, source))
        if "DROP" in text:
            return Decision(Action.BLOCK, ("no-drop",), reason="dbguard: blocked by rule no-drop: no drops",
                            details={"rule": "no-drop", "action": "block"})
        return Decision(Action.ALLOW)


def make_settings(gate: Gate | None = None, **kw: object) -> MysqlListenerSettings:
    identity = Identity(CLIENT_USER, IdentityKind.AGENT, ("readers",))
    settings = MysqlListenerSettings(
        name="unit-mysql",
        identities={CLIENT_USER: MysqlIdentityEntry.from_secret(identity, CLIENT_SECRET)},
        upstream=UpstreamSettings(host="db.internal.example", port=3306, user=UPSTREAM_USER,
                                  password=UPSTREAM_PASSWORD, database="dsn_db",
                                  tls_mode=UpstreamTlsMode.DISABLE),
        gate=gate or BlockDrops(),
        rsa_key=RSA_KEY,
    )
    return dataclasses.replace(settings, **kw)  # type: ignore[arg-type]


def pkt(payload: bytes, seq: int) -> bytes:
    return encode_packets(payload, seq)[0]


def packets(data: bytes) -> list[Packet]:
    reader = PacketReader(expected_sequence=None)
    reader.feed(data)
    result = list(reader.packets())
    assert reader.at_boundary, "the proxy must only ever send whole packets"
    return result


def to_client(actions: list[MysqlSessionAction]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, SendClient))


def to_upstream(actions: list[MysqlSessionAction]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, SendUpstream))


def single_err(data: bytes) -> tuple[int, m.ErrPacket]:
    [p] = packets(data)
    return p.sequence_id, m.ErrPacket.decode(p.payload)


STATE_QUERY_FRAME = pkt(STATE_QUERY, 0)


def state_answer(sql_mode: bytes, charset: bytes = b"utf8mb4", database: bytes | None = b"shop",
                 *, deprecate_eof: bool = True) -> bytes:
    """A server's answer to dbguard's session state query."""
    payloads = [m.encode_column_count(3), COLDEF, COLDEF, COLDEF]
    if not deprecate_eof:
        payloads.append(m.EofPacket(0, m.ServerStatus.AUTOCOMMIT).encode())
    payloads.append(m.encode_text_row([sql_mode, charset, database]))
    payloads.append(OK_FE if deprecate_eof else m.EofPacket(0, m.ServerStatus.AUTOCOMMIT).encode())
    return b"".join(pkt(p, i + 1) for i, p in enumerate(payloads))


class Driver:
    """Plays the asyncio driver: feeds bytes and events, records the greeting. Plays the server's
    part of dbguard's session state query too (answering with `server_state`), so that tests
    see only the client's traffic; `state_queries` counts them."""

    def __init__(self, settings: MysqlListenerSettings | None = None, *, client_tls: bool = False) -> None:
        self.server_state: tuple[bytes, bytes, bytes | None] = (b"STRICT_TRANS_TABLES", b"utf8mb4", b"shop")
        self.state_queries = 0
        self.settings = settings or make_settings()
        self.throttle = LoginThrottle(clock=lambda: 1000.0)
        self.session = MysqlSession(self.settings, client_address=CLIENT_ADDRESS, throttle=self.throttle,
                                    client_tls=client_tls)
        [p] = packets(to_client(self.session.start()))
        assert p.sequence_id == 0
        self.greeting = m.HandshakeV10.decode(p.payload)

    def client(self, data: bytes) -> list[MysqlSessionAction]:
        return self.session.client_data(data)

    def upstream(self, data: bytes) -> list[MysqlSessionAction]:
        return self._answer_state_queries(self.session.upstream_data(data))

    def _answer_state_queries(self, actions: list[MysqlSessionAction]) -> list[MysqlSessionAction]:
        out: list[MysqlSessionAction] = []
        for action in actions:
            if isinstance(action, SendUpstream) and action.data == STATE_QUERY_FRAME:
                self.state_queries += 1
                out += self._answer_state_queries(self.session.upstream_data(state_answer(*self.server_state)))
            else:
                out.append(action)
        return out


def handshake_response(d: Driver, secret: str = CLIENT_SECRET, user: str = CLIENT_USER,
                       plugin: bytes | None = auth.CACHING_SHA2_PASSWORD) -> bytes:
    nonce = d.greeting.nonce
    if plugin == auth.MYSQL_NATIVE_PASSWORD:
        scramble = auth.scramble_native_password(secret.encode(), nonce)
    elif plugin == auth.CACHING_SHA2_PASSWORD:
        scramble = auth.scramble_caching_sha2(secret.encode(), nonce)
    else:
        scramble = b"whatever"
    resp = m.HandshakeResponse41(CLIENT_CAPS, 16 * 1024 * 1024, 45, user.encode(), scramble, b"shop", plugin,
                                 ((b"program_name", b"pytest"),))
    return pkt(resp.encode(), 1)


def client_login(d: Driver, secret: str = CLIENT_SECRET, user: str = CLIENT_USER,
                 plugin: bytes | None = auth.CACHING_SHA2_PASSWORD) -> list[MysqlSessionAction]:
    """The client's side of the login; returns the actions answering its last packet."""
    actions = d.client(handshake_response(d, secret, user, plugin))
    if d.settings.force_full_auth and plugin == auth.CACHING_SHA2_PASSWORD:
        [p] = packets(to_client(actions))
        assert (p.sequence_id, p.payload) == (2, b"\x01\x04")  # perform full authentication
        actions = d.client(pkt(auth.CACHING_SHA2_REQUEST_PUBLIC_KEY, 3))
        [p] = packets(to_client(actions))
        assert p.sequence_id == 4
        pem = m.AuthMoreData.decode(p.payload).data
        assert pem == RSA_KEY.public_key_pem()
        actions = d.client(pkt(auth.rsa_encrypt_password(secret.encode(), d.greeting.nonce, pem), 5))
    return actions


def server_greeting(plugin: bytes = auth.MYSQL_NATIVE_PASSWORD, caps: C = SERVER_CAPS) -> bytes:
    return pkt(m.HandshakeV10(b"11.4.2-MariaDB", 77, SERVER_NONCE + b"\x00", caps, 45,
                              m.ServerStatus.AUTOCOMMIT, plugin).encode(), 0)


def upstream_login(d: Driver, plugin: bytes = auth.MYSQL_NATIVE_PASSWORD) -> list[MysqlSessionAction]:
    """The fake server's side; returns the actions answering its OK."""
    assert d.session.phase is Phase.UPSTREAM_CONNECT
    assert d.session.upstream_connected() == []
    [p] = packets(to_upstream(d.upstream(server_greeting(plugin))))
    assert p.sequence_id == 1
    resp = m.HandshakeResponse41.decode(p.payload)
    assert resp.username == UPSTREAM_USER.encode()
    assert resp.database == b"shop"
    assert not resp.capabilities & (C.COMPRESS | C.SSL | C.SESSION_TRACK)
    assert resp.connect_attrs == ((b"program_name", b"pytest"),)
    seq = 2
    if plugin == auth.MYSQL_NATIVE_PASSWORD:
        verifier = auth.NativePasswordVerifier.from_password(UPSTREAM_PASSWORD.encode())
        assert verifier.verify(SERVER_NONCE, resp.auth_response)
    else:
        # caching_sha2 with a cache miss: full authentication over RSA (no TLS upstream).
        sha2 = auth.CachingSha2Verifier.from_password(UPSTREAM_PASSWORD.encode())
        assert sha2.verify_scramble(SERVER_NONCE, resp.auth_response)
        [p] = packets(to_upstream(d.upstream(pkt(m.AuthMoreData(b"\x04").encode(), 2))))
        assert (p.sequence_id, p.payload) == (3, b"\x02")
        [p] = packets(to_upstream(d.upstream(pkt(m.AuthMoreData(UPSTREAM_RSA_KEY.public_key_pem()).encode(), 4))))
        assert p.sequence_id == 5
        assert sha2.verify_cleartext(UPSTREAM_RSA_KEY.decrypt_password(p.payload, SERVER_NONCE))
        seq = 6
    return d.upstream(pkt(m.OkPacket(status_flags=m.ServerStatus.AUTOCOMMIT).encode(C(0)), seq))


def ready(gate: BlockDrops | None = None, **kw: object) -> Driver:
    d = Driver(make_settings(gate, **kw))
    actions = client_login(d)
    assert actions[-1] == ConnectUpstream("db.internal.example", 3306)
    actions = upstream_login(d)
    [ok] = packets(to_client(actions))
    assert m.is_ok(ok.payload)
    assert d.session.phase is Phase.READY
    return d


# ----------------------------------------------------------------------------- greeting and login


def test_greeting_offers_what_the_proxy_supports() -> None:
    d = Driver()
    caps = d.greeting.capabilities
    for flag in (C.PROTOCOL_41, C.PLUGIN_AUTH, C.PLUGIN_AUTH_LENENC_CLIENT_DATA, C.SECURE_CONNECTION,
                 C.CONNECT_WITH_DB, C.CONNECT_ATTRS, C.DEPRECATE_EOF, C.MULTI_STATEMENTS, C.MULTI_RESULTS,
                 C.PS_MULTI_RESULTS, C.TRANSACTIONS, C.LOCAL_FILES):
        assert caps & flag, flag
    assert not caps & (C.COMPRESS | C.SSL | C.SESSION_TRACK | C.QUERY_ATTRIBUTES)
    assert len(d.greeting.nonce) == 20
    assert d.greeting.auth_plugin_name == auth.CACHING_SHA2_PASSWORD
    assert Driver(make_settings(tls_available=True)).greeting.capabilities & C.SSL
    assert Driver().greeting.nonce != d.greeting.nonce


def test_ssl_request_starts_client_tls_with_the_pipelined_bytes() -> None:
    d = Driver(make_settings(tls_available=True))
    ssl = pkt(m.SSLRequest(CLIENT_CAPS, 1 << 24, 45).encode(), 1)
    actions = d.client(ssl + b"\x16\x03\x01hello")
    assert actions == [MysqlStartClientTls(b"\x16\x03\x01hello")]
    assert d.session.phase is Phase.CLIENT_TLS
    assert d.session.client_tls_started() == []
    resp = m.HandshakeResponse41(CLIENT_CAPS | C.SSL, 1 << 24, 45, CLIENT_USER.encode(),
                                 auth.scramble_caching_sha2(CLIENT_SECRET.encode(), d.greeting.nonce), b"shop",
                                 auth.CACHING_SHA2_PASSWORD)
    actions = d.client(pkt(resp.encode(), 2))
    [p] = packets(to_client(actions))
    assert (p.sequence_id, p.payload) == (3, b"\x01\x03")
    assert isinstance(actions[-1], ConnectUpstream)


def test_login_with_caching_sha2_fast_path() -> None:
    d = Driver()
    actions = client_login(d)
    [p] = packets(to_client(actions))
    assert (p.sequence_id, p.payload) == (2, b"\x01\x03")  # fast auth success
    assert actions[-1] == ConnectUpstream("db.internal.example", 3306)
    [ok] = packets(to_client(upstream_login(d)))
    assert ok.sequence_id == 3
    assert m.is_ok(ok.payload)
    assert d.session.identity is not None
    assert d.session.identity.name == CLIENT_USER
    assert d.session.info is not None
    assert d.session.info.application_name == "pytest"
    assert d.session.database == "shop"


def test_login_with_native_password_and_upstream_caching_sha2_rsa() -> None:
    d = Driver()
    actions = client_login(d, plugin=auth.MYSQL_NATIVE_PASSWORD)
    assert to_client(actions) == b""
    assert isinstance(actions[-1], ConnectUpstream)
    [ok] = packets(to_client(upstream_login(d, auth.CACHING_SHA2_PASSWORD)))
    assert ok.sequence_id == 2
    assert d.session.phase is Phase.READY


def test_login_with_caching_sha2_full_auth_over_rsa() -> None:
    d = Driver(make_settings(force_full_auth=True))
    actions = client_login(d)
    assert to_client(actions) == b""
    assert isinstance(actions[-1], ConnectUpstream)
    [ok] = packets(to_client(upstream_login(d)))
    assert ok.sequence_id == 6


def test_full_auth_cleartext_over_tls() -> None:
    d = Driver(make_settings(force_full_auth=True, tls_available=True), client_tls=True)
    d.client(handshake_response(d))
    actions = d.client(pkt(auth.clear_password_response(CLIENT_SECRET.encode()), 3))
    assert isinstance(actions[-1], ConnectUpstream)


def test_auth_switch_when_the_client_used_another_plugin() -> None:
    d = Driver()
    actions = d.client(handshake_response(d, plugin=b"mysql_clear_password"))
    [p] = packets(to_client(actions))
    assert p.sequence_id == 2
    switch = m.AuthSwitchRequest.decode(p.payload)
    assert switch.plugin_name == auth.CACHING_SHA2_PASSWORD
    nonce = switch.plugin_data[:-1]
    assert nonce != d.greeting.nonce
    actions = d.client(pkt(auth.scramble_caching_sha2(CLIENT_SECRET.encode(), nonce), 3))
    [p] = packets(to_client(actions))
    assert (p.sequence_id, p.payload) == (4, b"\x01\x03")
    assert isinstance(actions[-1], ConnectUpstream)


def test_empty_native_response_is_switched_not_refused() -> None:
    """libmysqlclient (mysql-connector's C extension with auth_plugin=mysql_native_password)
    names its plugin with an empty response when the greeting named another, and waits for an
    auth switch: answering 1045 refused every such client."""
    d = Driver()
    resp = m.HandshakeResponse41(CLIENT_CAPS, 16 * 1024 * 1024, 45, CLIENT_USER.encode(), b"", b"shop",
                                 auth.MYSQL_NATIVE_PASSWORD)
    [p] = packets(to_client(d.client(pkt(resp.encode(), 1))))
    assert p.sequence_id == 2
    switch = m.AuthSwitchRequest.decode(p.payload)
    assert switch.plugin_name == auth.CACHING_SHA2_PASSWORD
    actions = d.client(pkt(auth.scramble_caching_sha2(CLIENT_SECRET.encode(), switch.plugin_data[:-1]), 3))
    [p] = packets(to_client(actions))
    assert (p.sequence_id, p.payload) == (4, b"\x01\x03")
    assert isinstance(actions[-1], ConnectUpstream)
    # An empty response for the greeting's own plugin is a wrong (empty) password, as before.
    d = Driver()
    resp = dataclasses.replace(resp, auth_plugin_name=auth.CACHING_SHA2_PASSWORD)
    seq, err = single_err(to_client([a for a in d.client(pkt(resp.encode(), 1)) if not isinstance(a, Sleep)]))
    assert (seq, err.errno) == (2, 1045)


@pytest.mark.parametrize(("user", "secret", "plugin"), [
    (CLIENT_USER, "wrong", auth.CACHING_SHA2_PASSWORD),
    ("nobody", CLIENT_SECRET, auth.CACHING_SHA2_PASSWORD),
    (CLIENT_USER, "wrong", auth.MYSQL_NATIVE_PASSWORD),
    ("nobody", CLIENT_SECRET, auth.MYSQL_NATIVE_PASSWORD),
])
def test_wrong_secret_and_unknown_user_get_the_same_1045(user: str, secret: str, plugin: bytes) -> None:
    d = Driver()
    actions = d.client(handshake_response(d, secret, user, plugin))
    assert [type(a) for a in actions] == [Sleep, SendClient, Close]
    seq, e = single_err(to_client(actions))
    assert seq == 2
    assert (e.errno, e.sqlstate) == (1045, b"28000")
    assert e.message == f"Access denied for user '{user}'@'192.0.2.10' (using password: YES)".encode()
    assert d.throttle.failures("192.0.2.10") == 1
    assert d.session.phase is Phase.CLOSED


def test_wrong_secret_in_full_auth_is_1045() -> None:
    d = Driver(make_settings(force_full_auth=True))
    actions = client_login(d, secret="wrong")
    assert [type(a) for a in actions] == [Sleep, SendClient, Close]
    seq, e = single_err(to_client(actions))
    assert (seq, e.errno) == (6, 1045)


def test_upstream_refusing_the_login_gives_a_clear_error() -> None:
    d = Driver()
    client_login(d)
    d.session.upstream_connected()
    d.upstream(server_greeting())
    actions = d.upstream(pkt(m.err(1045, "28000", "Access denied for user 'svc_dbguard'").encode(), 2))
    assert [type(a) for a in actions] == [SendClient, Close]
    seq, e = single_err(to_client(actions))
    assert seq == 3
    assert (e.errno, e.sqlstate) == (1043, b"08004")
    assert e.message == b"dbguard: the database server rejected dbguard's credentials (server errno 1045)"


def test_other_upstream_login_errors_are_relayed_without_the_service_account() -> None:
    d = Driver()
    client_login(d)
    d.session.upstream_connected()
    d.upstream(server_greeting())
    message = f"User '{UPSTREAM_USER}' has exceeded the 'max_user_connections' resource"
    actions = d.upstream(pkt(m.err(1226, "42000", message).encode(), 2))
    _, e = single_err(to_client(actions))
    assert (e.errno, e.sqlstate) == (1226, b"42000")
    assert UPSTREAM_USER.encode() not in e.message
    assert b"<dbguard service account>" in e.message


def test_malformed_handshake_response_closes() -> None:
    d = Driver()
    actions = d.client(pkt(b"\x01\x02\x03", 1))
    assert [type(a) for a in actions] == [SendClient, Close]
    _, e = single_err(to_client(actions))
    assert e.sqlstate == b"08S01"


# ----------------------------------------------------------------------------- command phase

COLDEF = m.ColumnDefinition41(b"def", b"shop", b"t", b"t", b"n", b"n", 63, 11, m.ColumnType.LONG,
                              m.ColumnFlag(0), 0).encode()
OK_FE = m.OkPacket(status_flags=m.ServerStatus.AUTOCOMMIT, header=0xFE).encode(C(0))
OK = m.OkPacket().encode(C(0))


def resultset(first_seq: int = 1, more: bool = False) -> bytes:
    status = m.ServerStatus.AUTOCOMMIT | (m.ServerStatus.MORE_RESULTS_EXISTS if more else 0)
    end = m.OkPacket(status_flags=status, header=0xFE).encode(C(0))
    payloads = [m.encode_column_count(1), COLDEF, m.encode_text_row([b"1"]), end]
    return b"".join(pkt(p, first_seq + i) for i, p in enumerate(payloads))


def query(sql: bytes) -> bytes:
    return pkt(b"\x03" + sql, 0)


def test_query_allowed_is_relayed_unchanged() -> None:
    gate = BlockDrops()
    d = ready(gate)
    q = query(b"SELECT n FROM t")
    actions = d.client(q)
    assert actions == [SendUpstream(q)]
    assert gate.seen == [("SELECT n FROM t", StatementSource.SIMPLE_QUERY)]
    assert d.session.busy
    response = resultset()
    assert to_client(d.upstream(response)) == response
    assert not d.session.busy


def test_response_split_across_reads() -> None:
    d = ready()
    d.client(query(b"SELECT n FROM t"))
    response = resultset()
    got = b"".join(to_client(d.upstream(response[i:i + 7])) for i in range(0, len(response), 7))
    assert got == response
    assert not d.session.busy


def test_refused_query_gets_1227_and_the_session_continues() -> None:
    d = ready()
    actions = d.client(query(b"DROP TABLE customers"))
    assert to_upstream(actions) == b""
    seq, e = single_err(to_client(actions))
    assert seq == 1
    assert (e.errno, e.sqlstate) == (1227, b"42000")
    assert e.message == b"dbguard: blocked by rule no-drop: no drops (rule=no-drop action=block)"
    assert d.session.phase is Phase.READY
    q = query(b"SELECT 1")
    assert d.client(q) == [SendUpstream(q)]
    assert to_client(d.upstream(pkt(OK, 1))) == pkt(OK, 1)


def test_multi_statement_is_decided_once_as_a_whole() -> None:
    gate = BlockDrops()
    d = ready(gate)
    text = b"SELECT 1; DROP TABLE t; SELECT 2"
    actions = d.client(query(text))
    assert to_upstream(actions) == b""
    assert single_err(to_client(actions))[1].errno == 1227
    assert gate.seen == [(text.decode(), StatementSource.SIMPLE_QUERY)]


def test_multi_results_are_relayed_to_the_end() -> None:
    d = ready()
    d.client(query(b"SELECT 1; SELECT 2"))
    first = resultset(1, more=True)
    assert to_client(d.upstream(first)) == first
    assert d.session.busy
    second = resultset(5)
    assert to_client(d.upstream(second)) == second
    assert not d.session.busy


def test_pipelined_command_waits_for_the_response() -> None:
    d = ready()
    actions = d.client(query(b"SELECT 1") + query(b"DROP TABLE t"))
    assert actions == [SendUpstream(query(b"SELECT 1"))]
    actions = d.upstream(pkt(OK, 1))
    data = to_client(actions)
    assert data.startswith(pkt(OK, 1))
    seq, e = single_err(data[len(pkt(OK, 1)):])
    assert (seq, e.errno) == (1, 1227)
    assert not d.session.busy


def test_prepare_refused() -> None:
    gate = BlockDrops()
    d = ready(gate)
    actions = d.client(pkt(b"\x16DROP TABLE t", 0))
    assert to_upstream(actions) == b""
    seq, e = single_err(to_client(actions))
    assert (seq, e.errno) == (1, 1227)
    assert gate.seen == [("DROP TABLE t", StatementSource.PARSE)]


def test_prepare_execute_close_relayed() -> None:
    d = ready()
    prep = pkt(b"\x16SELECT n FROM t WHERE n = ?", 0)
    assert d.client(prep) == [SendUpstream(prep)]
    param = m.ColumnDefinition41(b"def", b"", b"", b"", b"?", b"", 63, 0, m.ColumnType.LONGLONG,
                                 m.ColumnFlag(0), 0).encode()
    response = (pkt(m.StmtPrepareOk(7, 1, 1).encode(), 1) + pkt(param, 2) + pkt(COLDEF, 3))
    assert to_client(d.upstream(response)) == response
    assert not d.session.busy
    assert 7 in d.session.statements
    execute = m.ComStmtExecute(7, 0, 1, (m.QueryAttribute(m.ColumnType.LONGLONG, False, b"",
                                                          (1).to_bytes(8, "little")),)).encode()
    assert d.client(pkt(execute, 0)) == [SendUpstream(pkt(execute, 0))]
    row = m.encode_binary_row([(1).to_bytes(4, "little")], [m.ColumnType.LONG])
    binary = pkt(m.encode_column_count(1), 1) + pkt(COLDEF, 2) + pkt(row, 3) + pkt(OK_FE, 4)
    assert to_client(d.upstream(binary)) == binary
    assert not d.session.busy
    close = pkt(m.ComStmtClose(7).encode(), 0)
    assert d.client(close) == [SendUpstream(close)]
    assert not d.session.busy
    assert 7 not in d.session.statements
    q = query(b"SELECT 1")
    assert d.client(q) == [SendUpstream(q)]


def test_execute_of_unknown_statement_is_refused() -> None:
    d = ready()
    execute = m.ComStmtExecute(99, 0, 1).encode()
    actions = d.client(pkt(execute, 0))
    assert to_upstream(actions) == b""
    seq, e = single_err(to_client(actions))
    assert (seq, e.errno) == (1, 1243)


@pytest.mark.parametrize(("payload", "errno"), [
    (b"\x12" + b"\x00" * 10, 1235),  # COM_BINLOG_DUMP
    (b"\x06app", 1235),  # COM_DROP_DB: drops a database without any SQL text
    (b"\x05newdb", 1235),  # COM_CREATE_DB
    (b"\x08\x00", 1235),  # COM_SHUTDOWN
    (b"\x07\x01", 1235),  # COM_REFRESH
    (b"\xfa\x01\x00\x00\x00", 1235),  # MariaDB's COM_STMT_BULK_EXECUTE
    (b"\xee", 1047),
])
def test_refused_commands_keep_the_session(payload: bytes, errno: int) -> None:
    d = ready()
    actions = d.client(pkt(payload, 0))
    assert to_upstream(actions) == b""
    seq, e = single_err(to_client(actions))
    assert (seq, e.errno) == (1, errno)
    assert d.session.phase is Phase.READY
    ping = pkt(b"\x0e", 0)
    assert d.client(ping) == [SendUpstream(ping)]


def test_init_db_tells_the_gate() -> None:
    gate = BlockDrops()
    d = ready(gate)
    d.client(pkt(b"\x02other", 0))
    d.upstream(pkt(OK, 1))
    assert gate.params[-1] == ("database", "other")
    assert d.session.database == "other"


def test_malformed_command_packet_closes_the_connection() -> None:
    d = ready()
    actions = d.client(pkt(b"\x03SELECT 1", 5))  # a command must start at sequence id 0
    assert [type(a) for a in actions] == [SendClient, Close]
    _, e = single_err(to_client(actions))
    assert e.sqlstate == b"08S01"
    assert d.session.phase is Phase.CLOSED


def test_oversized_length_in_a_ping_is_malformed() -> None:
    d = ready()
    actions = d.client(pkt(b"\x0eextra", 0))
    assert [type(a) for a in actions] == [SendClient, Close]


def test_local_infile_refused_when_the_statement_does_not_load_a_file() -> None:
    d = ready()
    d.client(query(b"SELECT * FROM t"))
    actions = d.upstream(pkt(m.LocalInfileRequest(b"/etc/passwd").encode(), 1))
    assert to_client(actions) == b""
    assert to_upstream(actions) == pkt(b"", 2)  # "no file" to the server
    actions = d.upstream(pkt(OK, 3))
    seq, e = single_err(to_client(actions))
    assert (seq, e.errno, e.sqlstate) == (1, 1227, b"42000")
    assert not d.session.busy
    q = query(b"SELECT 1")
    assert d.client(q) == [SendUpstream(q)]


def test_local_infile_relayed_when_the_statement_was_allowed() -> None:
    d = ready()
    d.client(query(b"LOAD DATA LOCAL INFILE 'rows.csv' INTO TABLE t"))
    request = pkt(m.LocalInfileRequest(b"rows.csv").encode(), 1)
    assert to_client(d.upstream(request)) == request
    upload = pkt(b"1,2\n", 2) + pkt(b"", 3)
    assert to_upstream(d.client(upload)) == upload
    assert to_client(d.upstream(pkt(OK, 4))) == pkt(OK, 4)
    assert not d.session.busy


def test_upstream_closing_mid_response_errors_the_client() -> None:
    d = ready()
    d.client(query(b"SELECT 1"))
    d.upstream(pkt(m.encode_column_count(1), 1) + pkt(COLDEF, 2))
    actions = d.session.upstream_closed()
    assert [type(a) for a in actions] == [SendClient, Close]
    seq, e = single_err(to_client(actions))
    assert (seq, e.errno) == (3, 1053)


# ----------------------------------------------------------------------------- more upstream logins


def logged_in_client(settings: MysqlListenerSettings | None = None) -> Driver:
    d = Driver(settings)
    client_login(d)
    d.session.upstream_connected()
    return d


def test_upstream_tls_then_clear_password_switch() -> None:
    upstream = dataclasses.replace(make_settings().upstream, tls_mode=UpstreamTlsMode.REQUIRE)
    d = logged_in_client(make_settings(upstream=upstream))
    actions = d.upstream(server_greeting(caps=SERVER_CAPS | C.SSL))
    [p] = packets(to_upstream(actions))
    assert p.sequence_id == 1
    assert isinstance(m.decode_client_handshake(p.payload), m.SSLRequest)
    assert [type(a) for a in actions][-1] is StartUpstreamTls
    [p] = packets(to_upstream(d.session.upstream_tls_started()))
    assert p.sequence_id == 2
    assert m.HandshakeResponse41.decode(p.payload).capabilities & C.SSL
    switch = m.AuthSwitchRequest(auth.MYSQL_CLEAR_PASSWORD, b"").encode()
    [p] = packets(to_upstream(d.upstream(pkt(switch, 3))))
    assert (p.sequence_id, p.payload) == (4, UPSTREAM_PASSWORD.encode() + b"\x00")
    [ok] = packets(to_client(d.upstream(pkt(OK, 5))))
    assert ok.sequence_id == 3
    assert d.session.phase is Phase.READY


def test_upstream_tls_required_but_not_offered() -> None:
    upstream = dataclasses.replace(make_settings().upstream, tls_mode=UpstreamTlsMode.REQUIRE)
    d = logged_in_client(make_settings(upstream=upstream))
    actions = d.upstream(server_greeting())
    assert [type(a) for a in actions] == [SendClient, Close]
    assert single_err(to_client(actions))[1].sqlstate == b"08004"


def test_upstream_clear_password_refused_without_tls() -> None:
    d = logged_in_client()
    d.upstream(server_greeting())
    actions = d.upstream(pkt(m.AuthSwitchRequest(auth.MYSQL_CLEAR_PASSWORD, b"").encode(), 2))
    assert to_upstream(actions) == b""
    assert [type(a) for a in actions] == [SendClient, Close]


def test_upstream_ed25519_switch() -> None:
    d = logged_in_client()
    d.upstream(server_greeting())
    nonce = bytes(range(100, 132))
    [p] = packets(to_upstream(d.upstream(pkt(m.AuthSwitchRequest(auth.CLIENT_ED25519, nonce).encode(), 2))))
    assert p.sequence_id == 3
    assert auth.Ed25519Verifier.from_password(UPSTREAM_PASSWORD.encode()).verify(nonce, p.payload)
    [ok] = packets(to_client(d.upstream(pkt(OK, 4))))
    assert m.is_ok(ok.payload)


def test_query_pipelined_during_login_waits_for_ready() -> None:
    d = Driver()
    d.client(handshake_response(d) + query(b"SELECT 1"))
    actions = upstream_login(d)
    q = query(b"SELECT 1")
    assert to_upstream(actions) == q
    assert m.is_ok(packets(to_client(actions))[0].payload)


def test_cursor_execute_and_fetch() -> None:
    d = ready()
    d.client(pkt(b"\x16SELECT n FROM t", 0))
    d.upstream(pkt(m.StmtPrepareOk(3, 1, 0).encode(), 1) + pkt(COLDEF, 2))
    assert not d.session.busy
    execute = pkt(m.ComStmtExecute(3, 1, 1).encode(), 0)  # CURSOR_TYPE_READ_ONLY
    assert d.client(execute) == [SendUpstream(execute)]
    cursor_ok = m.OkPacket(status_flags=m.ServerStatus.AUTOCOMMIT | m.ServerStatus.CURSOR_EXISTS,
                           header=0xFE).encode(C(0))
    response = pkt(m.encode_column_count(1), 1) + pkt(COLDEF, 2) + pkt(cursor_ok, 3)
    assert to_client(d.upstream(response)) == response
    assert not d.session.busy
    fetch = pkt(m.ComStmtFetch(3, 10).encode(), 0)
    assert d.client(fetch) == [SendUpstream(fetch)]
    row = m.encode_binary_row([(1).to_bytes(4, "little")], [m.ColumnType.LONG])
    rows = pkt(row, 1) + pkt(row, 2) + pkt(OK_FE, 3)
    assert to_client(d.upstream(rows)) == rows
    assert not d.session.busy


def test_statistics_and_field_list() -> None:
    d = ready()
    d.client(pkt(b"\x09", 0))
    stats = pkt(b"Uptime: 5  Threads: 1", 1)
    assert to_client(d.upstream(stats)) == stats
    assert not d.session.busy
    d.client(pkt(b"\x04t\x00", 0))
    fields = pkt(COLDEF, 1) + pkt(OK_FE, 2)
    assert to_client(d.upstream(fields)) == fields
    assert not d.session.busy


def test_quit_closes_after_forwarding() -> None:
    d = ready()
    quit_ = pkt(b"\x01", 0)
    assert d.client(quit_) == [SendUpstream(quit_)]
    assert d.session.upstream_closed() == [Close("upstream closed")]


def change_user(d: Driver, user: str, secret: str, schema: bytes = b"") -> list[MysqlSessionAction]:
    msg = m.ComChangeUser(user.encode(), b"x" * 20, schema, 45, auth.MYSQL_NATIVE_PASSWORD)
    actions = d.client(pkt(msg.encode(CLIENT_CAPS), 0))
    assert to_upstream(actions) == b""
    [p] = packets(to_client(actions))
    assert p.sequence_id == 1
    switch = m.AuthSwitchRequest.decode(p.payload)
    assert switch.plugin_name == auth.CACHING_SHA2_PASSWORD
    scramble = auth.scramble_caching_sha2(secret.encode(), switch.plugin_data[:-1])
    return d.client(pkt(scramble, 2))


def test_change_user_reauthenticates_and_reopens_the_gate() -> None:
    gate = BlockDrops()
    settings = make_settings(gate)
    other = Identity("analyst", IdentityKind.HUMAN)
    settings = dataclasses.replace(settings, identities={
        **settings.identities, "analyst": MysqlIdentityEntry.from_secret(other, "pw2")})
    d = Driver(settings)
    client_login(d)
    upstream_login(d)
    actions = change_user(d, "analyst", "pw2", b"reports")
    [p] = packets(to_client(actions))
    assert (p.sequence_id, p.payload) == (3, b"\x01\x03")
    assert to_upstream(actions) == pkt(b"\x1f", 0)  # COM_RESET_CONNECTION
    actions = d.upstream(pkt(OK, 1))
    assert to_client(actions) == b""
    assert to_upstream(actions) == pkt(b"\x02reports", 0)  # COM_INIT_DB
    d.server_state = (b"", b"utf8mb4", b"reports")
    queries = d.state_queries
    [ok] = packets(to_client(d.upstream(pkt(OK, 1))))
    assert d.state_queries == queries + 1  # the reset put the server's defaults back: read them
    assert ok.sequence_id == 4
    assert m.is_ok(ok.payload)
    assert d.session.identity == other
    assert d.session.info is not None
    assert d.session.info.identity == other
    assert d.session.database == "reports"
    q = query(b"SELECT 1")
    assert d.client(q) == [SendUpstream(q)]


def test_change_user_with_a_wrong_secret_closes_with_1045() -> None:
    d = ready()
    actions = change_user(d, CLIENT_USER, "wrong")
    assert [type(a) for a in actions] == [Sleep, SendClient, Close]
    seq, e = single_err(to_client(actions))
    assert (seq, e.errno) == (3, 1045)
    assert d.session.identity is None


# ----------------------------------------------------------------------------- session state sync


class RecordsModeAtDecision(BlockDrops):
    """Records the last sql_mode it was told of when each statement was decided."""

    def __init__(self) -> None:
        super().__init__()
        self.modes_at_decision: list[str | None] = []

    def decide(self, sql: bytes, source: StatementSource, name: str) -> Decision:
        modes = [value for key, value in self.params if key == "sql_mode"]
        self.modes_at_decision.append(modes[-1] if modes else None)
        return super().decide(sql, source, name)


def test_login_reads_the_servers_sql_mode_before_the_first_command() -> None:
    gate = RecordsModeAtDecision()
    d = Driver(make_settings(gate))
    d.server_state = (b"ANSI_QUOTES,NO_BACKSLASH_ESCAPES", b"gbk", None)
    d.client(handshake_response(d) + query(b"SELECT 1"))
    actions = upstream_login(d)
    assert d.state_queries == 1
    assert ("sql_mode", "ANSI_QUOTES,NO_BACKSLASH_ESCAPES") in gate.params
    assert ("character_set_client", "gbk") in gate.params
    # The pipelined query was decided only after the gate knew the server's modes.
    assert gate.modes_at_decision == ["ANSI_QUOTES,NO_BACKSLASH_ESCAPES"]
    assert gate.seen == [("SELECT 1", StatementSource.SIMPLE_QUERY)]
    assert to_upstream(actions) == query(b"SELECT 1")
    assert d.session.database == ""


class BarrierOnSet(BlockDrops):
    """Like BlockDrops, and SET statements change how later text reads (a barrier)."""

    def decide(self, sql: bytes, source: StatementSource, name: str) -> Decision:
        decision = super().decide(sql, source, name)
        if sql.upper().startswith(b"SET "):
            return dataclasses.replace(decision, barrier=True)
        return decision


def test_a_barrier_statement_is_followed_by_a_state_query_before_the_next_command() -> None:
    gate = BarrierOnSet()
    d = ready(gate)
    before = d.state_queries
    d.client(query(b"SET sql_mode = 'NO_BACKSLASH_ESCAPES'") + query(b"SELECT 2"))
    d.server_state = (b"NO_BACKSLASH_ESCAPES", b"utf8mb4", b"shop")
    actions = d.upstream(pkt(OK, 1))
    assert d.state_queries == before + 1
    assert gate.params[-3:] == [("sql_mode", "NO_BACKSLASH_ESCAPES"), ("character_set_client", "utf8mb4"),
                                ("database", "shop")]
    assert to_client(actions) == pkt(OK, 1)  # the state query's answer is not relayed
    assert to_upstream(actions) == query(b"SELECT 2")
    # A plain statement is not followed by one.
    d.upstream(resultset())
    assert d.state_queries == before + 1


def test_a_prepared_set_syncs_after_prepare_and_after_each_execute() -> None:
    gate = BarrierOnSet()
    d = ready(gate)
    before = d.state_queries
    d.client(pkt(b"\x16SET sql_mode = 'ANSI_QUOTES'", 0))
    d.upstream(pkt(m.StmtPrepareOk(5, 0, 0).encode(), 1))
    assert d.state_queries == before + 1  # prepared only: the server's answer says nothing changed
    d.client(pkt(m.ComStmtExecute(5, 0, 1).encode(), 0))
    d.upstream(pkt(OK, 1))
    assert d.state_queries == before + 2


def test_a_failing_state_query_closes_the_session() -> None:
    gate = BarrierOnSet()
    d = ready(gate)
    d.client(query(b"SET sql_mode = ''"))
    actions = d.session.upstream_data(pkt(OK, 1))
    assert to_upstream(actions) == STATE_QUERY_FRAME
    actions = d.session.upstream_data(pkt(m.err(1105, "HY000", "boom").encode(), 1))
    assert [type(a) for a in actions] == [SendClient, Close]
    assert single_err(to_client(actions))[1].errno == 1053
    assert d.session.phase is Phase.CLOSED


def test_state_answer_without_deprecate_eof() -> None:
    reader = StateReader(deprecate_eof=False)
    results = [reader.feed(p.payload) for p in packets(state_answer(b"ANSI", b"latin1", None, deprecate_eof=False))]
    assert results[:-1] == [None] * (len(results) - 1)
    assert results[-1] == ServerSessionState("ANSI", "latin1", "")


def test_state_answer_with_two_rows_is_a_protocol_violation() -> None:
    reader = StateReader(deprecate_eof=True)
    row = m.encode_text_row([b"", b"utf8mb4", None])
    for payload in (m.encode_column_count(3), COLDEF, COLDEF, COLDEF, row):
        assert reader.feed(payload) is None
    with pytest.raises(ProtocolViolation):
        reader.feed(row)


def test_a_client_asking_for_compression_is_told_it_is_not_supported() -> None:
    d = Driver()
    resp = m.HandshakeResponse41(CLIENT_CAPS | C.COMPRESS, 16 * 1024 * 1024, 45, CLIENT_USER.encode(),
                                 auth.scramble_caching_sha2(CLIENT_SECRET.encode(), d.greeting.nonce), b"shop",
                                 auth.CACHING_SHA2_PASSWORD)
    actions = d.client(pkt(resp.encode(), 1))
    assert [type(a) for a in actions] == [SendClient, Close]
    seq, e = single_err(to_client(actions))
    assert (seq, e.errno, e.sqlstate) == (2, 1235, b"08004")
    assert b"compression is not supported" in e.message


# ----------------------------------------------------------------------------- KILL


class TwoSessions:
    """A KillDirectory: dbguard id 0x40000005 is copilot's on server thread 11; 0x40000006 alice's on 12."""

    def upstream_thread(self, connection_id: int) -> tuple[str, int] | None:
        return {0x40000005: (CLIENT_USER, 11), 0x40000006: ("alice", 12)}.get(connection_id)

    def thread_owner(self, thread_id: int) -> str | None:
        return {11: CLIENT_USER, 12: "alice"}.get(thread_id)

    def journal_of(self, thread_id: int) -> SessionJournal | None:
        return None


def ready_with_kills() -> Driver:
    d = Driver()
    d.session = MysqlSession(d.settings, client_address=CLIENT_ADDRESS, throttle=d.throttle, kills=TwoSessions())
    [p] = packets(to_client(d.session.start()))
    d.greeting = m.HandshakeV10.decode(p.payload)
    client_login(d)
    upstream_login(d)
    assert d.session.phase is Phase.READY
    return d


def test_kill_of_a_dbguard_id_is_mapped_to_the_server_thread() -> None:
    d = ready_with_kills()
    assert not d.session.client_fast(query(b"KILL QUERY 1073741829"))  # the hot path leaves KILL alone
    actions = d.client(query(b"KILL QUERY 1073741829"))
    assert to_upstream(actions) == query(b"KILL QUERY 11")
    assert to_client(d.upstream(pkt(OK, 1))) == pkt(OK, 1)


def test_kill_of_another_identitys_session_is_an_unknown_thread() -> None:
    d = ready_with_kills()
    for sql in (b"KILL 1073741830", b"kill connection 12"):
        actions = d.client(query(sql))
        assert to_upstream(actions) == b""
        seq, e = single_err(to_client(actions))
        assert (seq, e.errno, e.sqlstate) == (1, 1094, b"HY000")
    q = query(b"KILL 999")  # not a dbguard session's thread: as written, the policy decided
    assert d.client(q) == [SendUpstream(q)]


def test_com_process_kill_is_decided_and_mapped() -> None:
    gate = BlockDrops()
    d = ready_with_kills()
    d.session.gate = gate
    actions = d.client(pkt(m.ComProcessKill(0x40000005).encode(), 0))
    assert to_upstream(actions) == pkt(m.ComProcessKill(11).encode(), 0)
    assert gate.seen == [("KILL CONNECTION 1073741829", StatementSource.SIMPLE_QUERY)]
    assert to_client(d.upstream(pkt(OK, 1))) == pkt(OK, 1)
    _, e = single_err(to_client(d.client(pkt(m.ComProcessKill(0x40000006).encode(), 0))))
    assert e.errno == 1094
