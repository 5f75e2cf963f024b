"""Unit tests for dbguard.session.pg: the PgSession state machine driven purely, no sockets.

Covers: the startup phase (SSLRequest with and without TLS, data pipelined after an
SSLRequest, GSSENCRequest, unknown protocol versions, replication refused), client SCRAM
authentication (success, wrong secret and unknown user answered alike after a throttling
Sleep), the upstream handshake with the DSN's own credentials (SCRAM played by a
ScramServerExchange, the StartupMessage's parameters, the SSLRequest to the upstream, an
AuthenticationOk that skips the server's SCRAM proof), what the client is sent when the
session starts (AuthenticationOk, the server's ParameterStatus, a proxy-owned BackendKeyData,
ReadyForQuery), cancel requests, and the READY phase: byte-identical forwarding and relaying,
transaction status, FunctionCall refused in order with pipelined queries, garbage from the
client, and the upstream closing mid-message, at a boundary, after a FATAL, or refusing the
service account's credentials during startup.
"""

from __future__ import annotations

import random
import struct

import pytest

from dbguard.model import AllowAllGate, Identity, IdentityKind
from dbguard.session.pg import PgSession, Phase
from dbguard.session.pg_actions import (
    CancelTargets,
    Close,
    ConnectUpstream,
    ForwardCancel,
    IdentityEntry,
    PgListenerSettings,
    SendClient,
    SendUpstream,
    SessionAction,
    SessionStarted,
    Sleep,
    StartClientTls,
    StartUpstreamTls,
    UpstreamSettings,
    UpstreamTlsMode,
)
from dbguard.session.throttle import LoginThrottle
from dbguard.wire.pg import messages as m
from dbguard.wire.pg.auth import ScramClientExchange, ScramServerExchange, make_scram_verifier
from dbguard.wire.pg.framing import (
    GSSENC_REQUEST_CODE,
    PROTOCOL_3_0,
    Frame,
    MessageScanner,
    StartupReader,
    frame,
    frame_untyped,
)

CLIENT_USER = "copilot"
CLIENT_SECRET = "secret"
# PBKDF2 is the slow part of SCRAM: derive each verifier once for the module.
CLIENT_VERIFIER = make_scram_verifier(CLIENT_SECRET)
UPSTREAM_USER = "svc_dbguard_upstream"
UPSTREAM_PASSWORD = "upstream-password"
UPSTREAM_VERIFIER = make_scram_verifier(UPSTREAM_PASSWORD)
UPSTREAM_KEY = (4242, b"\xde\xad\xbe\xef")
UPSTREAM_PARAMS = {
    "application_name": "pytest-app",
    "client_encoding": "UTF8",
    "server_version": "17.2",
    "standard_conforming_strings": "on",
    "TimeZone": "UTC",
}
CLIENT_ADDRESS = "192.0.2.10:50123"
CLIENT_HOST = "192.0.2.10"  # the throttle counts failures per host, whatever the source port

ALL_TYPES = frozenset(bytes([i]) for i in range(256))

# A response to "SELECT 1 AS n, NULL::text AS t, 'x'::text AS u", as PostgreSQL 15 sent it.
SELECT_RESPONSE = (
    b"T\x00\x00\x00B\x00\x03"
    b"n\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00"
    b"t\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x19\xff\xff\xff\xff\xff\xff\x00\x00"
    b"u\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x19\xff\xff\xff\xff\xff\xff\x00\x00"
    b"D\x00\x00\x00\x14\x00\x03\x00\x00\x00\x011\xff\xff\xff\xff\x00\x00\x00\x01x"
    b"C\x00\x00\x00\rSELECT 1\x00"
    b"Z\x00\x00\x00\x05I"
)
QUERY = m.Query(b"SELECT 1 AS n, NULL::text AS t, 'x'::text AS u").encode()
FUNCTION_CALL = m.FunctionCall(1598).encode()  # random()


# ----------------------------------------------------------------------------- helpers


def make_settings(
    *,
    tls_available: bool = False,
    tls_mode: UpstreamTlsMode = UpstreamTlsMode.DISABLE,
) -> PgListenerSettings:
    identity = Identity(CLIENT_USER, IdentityKind.AGENT, ("readers",))
    return PgListenerSettings(
        name="unit-pg",
        identities={CLIENT_USER: IdentityEntry(identity, CLIENT_VERIFIER)},
        upstream=UpstreamSettings(
            host="db.internal.example",
            port=6543,
            user=UPSTREAM_USER,
            password=UPSTREAM_PASSWORD,
            database="dsn_database",
            tls_mode=tls_mode,
        ),
        gate=AllowAllGate(),
        tls_available=tls_available,
    )


class Driver:
    """Plays the asyncio driver: feeds bytes and events, records actions."""

    def __init__(
        self,
        settings: PgListenerSettings | None = None,
        *,
        cancel_targets: CancelTargets | None = None,
        throttle: LoginThrottle | None = None,
    ) -> None:
        self.settings = settings or make_settings()
        self.cancel_targets = cancel_targets if cancel_targets is not None else CancelTargets()
        self.throttle = throttle or LoginThrottle(clock=lambda: 1000.0)
        self.session = PgSession(
            self.settings,
            client_address=CLIENT_ADDRESS,
            cancel_targets=self.cancel_targets,
            throttle=self.throttle,
        )

    def client(self, data: bytes) -> list[SessionAction]:
        return self.session.client_data(data)

    def upstream(self, data: bytes) -> list[SessionAction]:
        return self.session.upstream_data(data)


def to_client(actions: list[SessionAction]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, SendClient))


def to_upstream(actions: list[SessionAction]) -> bytes:
    return b"".join(a.data for a in actions if isinstance(a, SendUpstream))


def typed_frames(data: bytes) -> list[Frame]:
    scanner = MessageScanner(ALL_TYPES)
    scanner.feed(data)
    frames = [s for s in scanner.segments() if isinstance(s, Frame)]
    assert scanner.at_boundary, "the proxy must only ever send whole messages"
    return frames


def backend_messages(data: bytes) -> list[m.BackendMessage]:
    return [m.decode_backend(f.type, f.payload) for f in typed_frames(data)]


def single_error(data: bytes) -> m.ErrorOrNotice:
    messages = backend_messages(data)
    assert len(messages) == 1, messages
    err = messages[0]
    assert isinstance(err, m.ErrorOrNotice)
    assert not err.notice
    return err


def assert_fatal_then_close(actions: list[SessionAction], sqlstate: str) -> m.ErrorOrNotice:
    assert [type(a) for a in actions] == [SendClient, Close], actions
    err = single_error(to_client(actions))
    assert err.get("S") == "FATAL"
    assert err.get("V") == "FATAL"
    assert err.sqlstate == sqlstate
    return err


def startup_message(user: str = CLIENT_USER, **params: str) -> bytes:
    return m.StartupMessage(PROTOCOL_3_0, {"user": user, **params}).encode()


def client_login(
    d: Driver, user: str = CLIENT_USER, secret: str = CLIENT_SECRET, **params: str
) -> list[SessionAction]:
    """Run the client's SCRAM exchange; return the actions answering its last message."""
    params.setdefault("database", "shop")
    params.setdefault("application_name", "pytest-app")
    actions = d.client(startup_message(user, **params))
    [request] = backend_messages(to_client(actions))
    assert request == m.Authentication(m.AUTH_SASL, mechanisms=("SCRAM-SHA-256",))
    scram = ScramClientExchange(user, secret, list(request.mechanisms))
    actions = d.client(m.encode_sasl_initial_response(scram.mechanism, scram.client_first()))
    if any(isinstance(a, Close) for a in actions):
        return actions
    [cont] = backend_messages(to_client(actions))
    assert isinstance(cont, m.Authentication)
    assert cont.code == m.AUTH_SASL_CONTINUE
    actions = d.client(m.PasswordLike(scram.client_final(cont.data)).encode())
    if not any(isinstance(a, Close) for a in actions):
        [final] = backend_messages(to_client(actions))
        assert isinstance(final, m.Authentication)
        assert final.code == m.AUTH_SASL_FINAL
        scram.verify_server_final(final.data)  # the proxy proved it knows the verifier
        assert scram.completed
    return actions


def read_startup(data: bytes) -> dict[str, str]:
    reader = StartupReader()
    reader.feed(data)
    packet = reader.next_packet()
    assert packet is not None
    assert packet.code == PROTOCOL_3_0
    assert reader.take_rest() == b""
    return m.decode_startup_parameters(packet.body)


def upstream_password_message(actions: list[SessionAction]) -> bytes:
    [f] = typed_frames(to_upstream(actions))
    assert f.type == b"p"
    return f.payload


def upstream_login(d: Driver) -> tuple[dict[str, str], list[SessionAction]]:
    """Play the upstream server's SCRAM login and startup; return the StartupMessage's
    parameters and the actions answering the server's final burst."""
    actions = d.session.upstream_connected()
    params = read_startup(to_upstream(actions))
    server = ScramServerExchange(UPSTREAM_VERIFIER)
    actions = d.upstream(
        m.Authentication(m.AUTH_SASL, mechanisms=tuple(server.mechanisms())).encode()
    )
    mechanism, client_first = m.decode_sasl_initial_response(upstream_password_message(actions))
    server_first = server.handle_client_first(mechanism, client_first)
    actions = d.upstream(m.Authentication(m.AUTH_SASL_CONTINUE, server_first).encode())
    server_final = server.handle_client_final(upstream_password_message(actions))
    assert server.succeeded  # the proxy used the DSN's password, not the client's secret
    burst = [
        m.Authentication(m.AUTH_SASL_FINAL, server_final).encode(),
        m.Authentication(m.AUTH_OK).encode(),
        *[m.ParameterStatus(k, v).encode() for k, v in UPSTREAM_PARAMS.items()],
        m.BackendKeyData(*UPSTREAM_KEY).encode(),
        m.ReadyForQuery(b"I").encode(),
    ]
    return params, d.upstream(b"".join(burst))


def ready_driver(cancel_targets: CancelTargets | None = None) -> tuple[Driver, SessionStarted]:
    d = Driver(cancel_targets=cancel_targets)
    actions = client_login(d)
    assert actions[-1] == d.settings.upstream.target
    _, actions = upstream_login(d)
    started = actions[0]
    assert isinstance(started, SessionStarted)
    assert d.session.phase is Phase.READY
    return d, started


def copy_state(d: Driver) -> bytes | None:
    return d.session.in_copy


def chunks_of(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    pos = 0
    while pos < len(data):
        n = rng.randint(1, 9)
        out.append(data[pos : pos + n])
        pos += n
    return out


# ----------------------------------------------------------------------------- startup phase


def test_ssl_request_without_tls_is_answered_n_and_startup_continues() -> None:
    d = Driver()
    assert d.client(m.SSL_REQUEST) == [SendClient(b"N")]
    actions = d.client(startup_message(database="shop"))
    assert backend_messages(to_client(actions)) == [
        m.Authentication(m.AUTH_SASL, mechanisms=("SCRAM-SHA-256",))
    ]
    assert d.session.phase is Phase.CLIENT_AUTH


def test_ssl_request_with_tls_is_answered_s_and_upgrades() -> None:
    d = Driver(make_settings(tls_available=True))
    assert d.client(m.SSL_REQUEST) == [SendClient(b"S"), StartClientTls()]
    assert d.session.phase is Phase.CLIENT_TLS
    assert d.session.client_tls_started(None) == []
    assert d.session.client_tls
    actions = client_login(d)
    assert actions[-1] == d.settings.upstream.target


def test_data_pipelined_after_ssl_request_is_refused() -> None:
    # CVE-2021-23214: bytes sent before the TLS handshake must not be read as if encrypted.
    d = Driver(make_settings(tls_available=True))
    actions = d.client(m.SSL_REQUEST + startup_message(database="shop"))
    assert SendClient(b"S") not in actions
    assert not any(isinstance(a, StartClientTls) for a in actions)
    assert_fatal_then_close(actions, "08P01")
    assert d.session.phase is Phase.CLOSED


def test_plaintext_during_the_tls_handshake_closes_without_an_answer() -> None:
    d = Driver(make_settings(tls_available=True))
    d.client(m.SSL_REQUEST)
    actions = d.client(startup_message())
    assert [type(a) for a in actions] == [Close]


def test_gssenc_request_is_answered_n() -> None:
    d = Driver(make_settings(tls_available=True))
    assert d.client(m.GSSENC_REQUEST) == [SendClient(b"N")]
    assert d.session.phase is Phase.STARTUP
    assert frame_untyped(struct.pack("!I", GSSENC_REQUEST_CODE)) == m.GSSENC_REQUEST


@pytest.mark.parametrize("code", [2 << 16, 4 << 16, 1234, 0])
def test_unknown_protocol_code_is_a_protocol_violation(code: int) -> None:
    d = Driver()
    actions = d.client(frame_untyped(struct.pack("!I", code) + b"user\x00copilot\x00\x00"))
    assert_fatal_then_close(actions, "08P01")


@pytest.mark.parametrize("length", [b"\x00\x00\x00\x04", b"\x00\x00\x27\x11", b"\x80\x00\x00\x00"])
def test_invalid_startup_length_is_a_protocol_violation(length: bytes) -> None:
    actions = Driver().client(length + b"\x00\x03\x00\x00")
    assert_fatal_then_close(actions, "08P01")


def test_startup_byte_at_a_time() -> None:
    d = Driver()
    data = startup_message(database="shop")
    for byte in data[:-1]:
        assert d.client(bytes([byte])) == []
    actions = d.client(data[-1:])
    assert backend_messages(to_client(actions)) == [
        m.Authentication(m.AUTH_SASL, mechanisms=("SCRAM-SHA-256",))
    ]


@pytest.mark.parametrize("value", ["database", "true", "on", "1"])
def test_replication_connections_are_refused(value: str) -> None:
    d = Driver()
    actions = d.client(startup_message(database="shop", replication=value))
    err = assert_fatal_then_close(actions, "0A000")
    assert "replication" in (err.message or "")
    assert d.session.phase is Phase.CLOSED


def test_replication_false_is_an_ordinary_connection() -> None:
    d = Driver()
    actions = client_login(d, replication="false")
    assert actions[-1] == d.settings.upstream.target


def test_startup_without_user_is_refused() -> None:
    actions = Driver().client(m.StartupMessage(PROTOCOL_3_0, {"database": "shop"}).encode())
    assert_fatal_then_close(actions, "28000")


# ----------------------------------------------------------------------------- client auth


def test_successful_login_connects_upstream() -> None:
    d = Driver()
    actions = client_login(d)
    assert [type(a) for a in actions] == [SendClient, ConnectUpstream]
    assert actions[-1] == ConnectUpstream("db.internal.example", 6543, None)
    assert d.session.phase is Phase.UPSTREAM_CONNECT
    assert d.session.identity == Identity(CLIENT_USER, IdentityKind.AGENT, ("readers",))


def failed_login(user: str, secret: str) -> tuple[list[SessionAction], LoginThrottle]:
    d = Driver()
    actions = client_login(d, user=user, secret=secret)
    return actions, d.throttle


def test_wrong_secret_sleeps_then_fatal_28p01() -> None:
    actions, throttle = failed_login(CLIENT_USER, "not-the-secret")
    assert [type(a) for a in actions] == [Sleep, SendClient, Close]
    sleep = actions[0]
    assert isinstance(sleep, Sleep)
    assert sleep.seconds > 0
    err = single_error(to_client(actions))
    assert err.get("S") == "FATAL"
    assert err.sqlstate == "28P01"
    assert err.message == f'password authentication failed for user "{CLIENT_USER}"'
    assert throttle.failures(CLIENT_HOST) == 1


def test_unknown_user_is_answered_exactly_like_a_wrong_secret() -> None:
    # The exchange must look like a real user's (AuthenticationSASLContinue with a salt),
    # and fail at the same step with the same message: no user enumeration.
    wrong_secret, _ = failed_login(CLIENT_USER, "not-the-secret")
    unknown, throttle = failed_login("mallory", CLIENT_SECRET)
    assert [type(a) for a in unknown] == [type(a) for a in wrong_secret]
    assert [type(a) for a in unknown] == [Sleep, SendClient, Close]
    err_known = single_error(to_client(wrong_secret))
    err_unknown = single_error(to_client(unknown))
    assert err_unknown.fields == tuple(
        (code, value.replace(CLIENT_USER, "mallory")) for code, value in err_known.fields
    )
    assert throttle.failures(CLIENT_HOST) == 1


def test_repeated_failures_sleep_longer() -> None:
    d1 = Driver()
    first = client_login(d1, secret="wrong-1")
    d2 = Driver(throttle=d1.throttle)
    second = client_login(d2, secret="wrong-2")
    assert isinstance(first[0], Sleep)
    assert isinstance(second[0], Sleep)
    assert second[0].seconds > first[0].seconds


def test_non_password_message_during_auth_is_a_protocol_violation() -> None:
    d = Driver()
    d.client(startup_message(database="shop"))
    actions = d.client(QUERY)
    assert_fatal_then_close(actions, "08P01")
    assert not any(isinstance(a, ConnectUpstream) for a in actions)


# ----------------------------------------------------------------------------- upstream handshake


def test_upstream_startup_uses_dsn_user_and_client_database_and_application_name() -> None:
    d = Driver()
    client_login(d, database="shop", application_name="agent-7", replication="false",
                 options="-c search_path=app")
    params, _ = upstream_login(d)
    assert params["user"] == UPSTREAM_USER
    assert params["database"] == "shop"
    assert params["application_name"] == "agent-7"
    assert params["options"] == "-c search_path=app"
    assert "replication" not in params
    assert CLIENT_USER not in params.values()


def test_upstream_database_defaults_to_the_client_user_name_like_postgres() -> None:
    # PostgreSQL's rule: no database parameter means a database named like the user.
    d = Driver()
    client_login(d, database="")
    params, _ = upstream_login(d)
    assert params["database"] == CLIENT_USER


def test_client_sees_auth_ok_server_parameters_own_key_and_ready() -> None:
    d = Driver()
    client_login(d)
    _, actions = upstream_login(d)
    assert [type(a) for a in actions] == [SessionStarted, SendClient]
    started = actions[0]
    assert isinstance(started, SessionStarted)
    assert started.upstream_key == UPSTREAM_KEY
    data = to_client(actions)
    messages = backend_messages(data)
    assert messages[0] == m.Authentication(m.AUTH_OK)
    assert {x.name: x.value for x in messages if isinstance(x, m.ParameterStatus)} == UPSTREAM_PARAMS
    keys = [x for x in messages if isinstance(x, m.BackendKeyData)]
    assert len(keys) == 1
    assert (keys[0].process_id, keys[0].secret_key) == started.proxy_key
    # docs/postgres.md: the backend's real pid, but a cancel secret issued by dbguard.
    assert keys[0].process_id == UPSTREAM_KEY[0]
    assert keys[0].secret_key != UPSTREAM_KEY[1]
    assert UPSTREAM_KEY[1] not in data
    assert messages[-1] == m.ReadyForQuery(b"I")
    assert d.session.transaction_status == b"I"
    assert d.session.server_params == UPSTREAM_PARAMS


def test_proxy_keys_differ_between_sessions() -> None:
    _, first = ready_driver()
    _, second = ready_driver()
    assert first.proxy_key != second.proxy_key


def test_upstream_ssl_request_then_plain_startup_when_refused() -> None:
    d = Driver(make_settings(tls_mode=UpstreamTlsMode.PREFER))
    client_login(d)
    assert d.session.upstream_connected() == [SendUpstream(m.SSL_REQUEST)]
    actions = d.upstream(b"N")
    assert read_startup(to_upstream(actions))["user"] == UPSTREAM_USER


def test_upstream_ssl_request_accepted_starts_upstream_tls() -> None:
    d = Driver(make_settings(tls_mode=UpstreamTlsMode.REQUIRE))
    client_login(d)
    d.session.upstream_connected()
    actions = d.upstream(b"S")
    assert actions == [
        StartUpstreamTls(UpstreamTlsMode.REQUIRE, "db.internal.example", None)
    ]


def test_upstream_without_tls_when_required_fails_08001() -> None:
    d = Driver(make_settings(tls_mode=UpstreamTlsMode.REQUIRE))
    client_login(d)
    d.session.upstream_connected()
    assert_fatal_then_close(d.upstream(b"N"), "08001")


def test_upstream_auth_ok_before_the_scram_proof_is_not_believed() -> None:
    # A server (or a man in the middle) that skips AuthenticationSASLFinal has not proved it
    # knows the password's verifier; the auth module says such an AuthenticationOk must not
    # be believed, so the session must not start.
    d = Driver()
    client_login(d)
    d.session.upstream_connected()
    d.upstream(m.Authentication(m.AUTH_SASL, mechanisms=("SCRAM-SHA-256",)).encode())
    actions = d.upstream(
        m.Authentication(m.AUTH_OK).encode()
        + m.BackendKeyData(*UPSTREAM_KEY).encode()
        + m.ReadyForQuery(b"I").encode()
    )
    assert not any(isinstance(a, SessionStarted) for a in actions)
    assert d.session.phase is Phase.CLOSED
    err = single_error(to_client(actions))
    assert err.get("S") == "FATAL"
    assert (err.sqlstate or "").startswith("08")
    assert isinstance(actions[-1], Close)


def test_upstream_28p01_is_reported_as_08004_without_the_service_account() -> None:
    d = Driver()
    client_login(d)
    d.session.upstream_connected()
    upstream_error = m.error_response(
        "28P01", f'password authentication failed for user "{UPSTREAM_USER}"', severity="FATAL"
    ).encode()
    actions = d.upstream(upstream_error)
    err = assert_fatal_then_close(actions, "08004")
    data = to_client(actions)
    assert UPSTREAM_USER.encode() not in data
    assert UPSTREAM_USER not in repr(err)
    assert d.session.phase is Phase.CLOSED


def test_upstream_28000_during_scram_is_hidden_too() -> None:
    d = Driver()
    client_login(d)
    d.session.upstream_connected()
    d.upstream(m.Authentication(m.AUTH_SASL, mechanisms=("SCRAM-SHA-256",)).encode())
    actions = d.upstream(m.error_response(
        "28000", f'no pg_hba.conf entry for host "10.1.1.1", user "{UPSTREAM_USER}"',
        severity="FATAL").encode())
    assert_fatal_then_close(actions, "08004")
    assert UPSTREAM_USER.encode() not in to_client(actions)


def test_upstream_startup_error_of_another_class_is_relayed() -> None:
    d = Driver()
    client_login(d, database="nosuchdb")
    d.session.upstream_connected()
    actions = d.upstream(m.error_response(
        "3D000", 'database "nosuchdb" does not exist', severity="FATAL").encode())
    err = assert_fatal_then_close(actions, "3D000")
    assert err.message == 'database "nosuchdb" does not exist'


def test_query_pipelined_during_the_upstream_handshake_is_sent_once_ready() -> None:
    d = Driver()
    client_login(d)
    assert d.client(QUERY) == []
    _, actions = upstream_login(d)
    assert to_upstream(actions) == QUERY
    # The client is told about the session before its query is forwarded.
    kinds = [type(a) for a in actions]
    assert kinds.index(SendClient) < kinds.index(SendUpstream)


# ----------------------------------------------------------------------------- cancel


def test_cancel_with_the_proxy_key_is_forwarded_with_the_upstream_key() -> None:
    targets = CancelTargets()
    d, started = ready_driver(cancel_targets=targets)
    # The driver registers the key when it executes SessionStarted.
    assert started.upstream_key is not None
    targets.register(started.proxy_key, d.settings.upstream.target, started.upstream_key)
    other = Driver(cancel_targets=targets)
    actions = other.client(m.CancelRequest(*started.proxy_key).encode())
    assert actions[0] == ForwardCancel(d.settings.upstream.target, *UPSTREAM_KEY)
    assert [type(a) for a in actions] == [ForwardCancel, Close]
    assert other.session.phase is Phase.CLOSED


@pytest.mark.parametrize("key", [(1, b"\x00\x00\x00\x00"), UPSTREAM_KEY])
def test_cancel_with_an_unknown_key_just_closes(key: tuple[int, bytes]) -> None:
    targets = CancelTargets()
    d, started = ready_driver(cancel_targets=targets)
    assert started.upstream_key is not None
    targets.register(started.proxy_key, d.settings.upstream.target, started.upstream_key)
    # Neither a made-up key nor the upstream's own key (which the client never saw) works.
    actions = Driver(cancel_targets=targets).client(m.CancelRequest(*key).encode())
    assert [type(a) for a in actions] == [Close]


# ----------------------------------------------------------------------------- ready phase


def test_query_is_forwarded_byte_identical() -> None:
    d, _ = ready_driver()
    assert d.client(QUERY) == [SendUpstream(QUERY)]
    assert d.session.busy


def test_extended_batch_is_forwarded_byte_identical() -> None:
    d, _ = ready_driver()
    batch = (
        m.Parse("", b"SELECT $1::int", (23,)).encode()
        + m.Bind("", "", (0,), (b"42",), (0,)).encode()
        + m.Describe(b"P", "").encode()
        + m.Execute("", 0).encode()
        + m.Bare(b"S").encode()
    )
    sent = b"".join(to_upstream(d.client(chunk)) for chunk in chunks_of(batch, 1))
    assert sent == batch


def test_parse_with_40000_parameter_types_is_forwarded() -> None:
    # PostgreSQL accepts up to 65535 parameters (the count is unsigned 16-bit; verified on
    # PostgreSQL 15 with 40000): a client binding that many must not be cut off.
    n = 40_000
    parse = frame(
        b"P", b"\x00SELECT $40000::int\x00" + struct.pack("!H", n) + struct.pack("!I", 23) * n
    )
    d, _ = ready_driver()
    actions = d.client(parse + m.Bare(b"S").encode())
    assert to_client(actions) == b""
    assert to_upstream(actions) == parse + m.Bare(b"S").encode()


@pytest.mark.parametrize("seed", range(5))
def test_upstream_response_is_relayed_byte_identical(seed: int) -> None:
    d, _ = ready_driver()
    d.client(QUERY)
    relayed = b""
    for chunk in chunks_of(SELECT_RESPONSE, seed):
        actions = d.upstream(chunk)
        assert to_upstream(actions) == b""
        relayed += to_client(actions)
    assert relayed == SELECT_RESPONSE
    assert not d.session.busy


def test_transaction_status_is_tracked() -> None:
    d, _ = ready_driver()
    d.client(m.Query(b"BEGIN").encode())
    d.upstream(m.CommandComplete("BEGIN").encode() + m.ReadyForQuery(b"T").encode())
    assert d.session.transaction_status == b"T"
    d.client(m.Query(b"SELECT 1/0").encode())
    d.upstream(m.error_response("22012", "division by zero").encode() + m.ReadyForQuery(b"E").encode())
    assert d.session.transaction_status == b"E"
    d.client(m.Query(b"ROLLBACK").encode())
    d.upstream(m.CommandComplete("ROLLBACK").encode() + m.ReadyForQuery(b"I").encode())
    assert d.session.transaction_status == b"I"


def test_function_call_is_refused_without_reaching_upstream() -> None:
    d, _ = ready_driver()
    actions = d.client(FUNCTION_CALL)
    assert to_upstream(actions) == b""
    messages = backend_messages(to_client(actions))
    assert len(messages) == 2
    err = messages[0]
    assert isinstance(err, m.ErrorOrNotice)
    assert err.get("S") == "ERROR"
    assert err.sqlstate == "0A000"
    assert messages[1] == m.ReadyForQuery(b"I")
    assert d.session.phase is Phase.READY


def test_function_call_refusal_carries_the_transaction_status() -> None:
    d, _ = ready_driver()
    d.client(m.Query(b"BEGIN").encode())
    d.upstream(m.CommandComplete("BEGIN").encode() + m.ReadyForQuery(b"T").encode())
    messages = backend_messages(to_client(d.client(FUNCTION_CALL)))
    assert messages[-1] == m.ReadyForQuery(b"T")


def test_function_call_pipelined_after_a_query_is_answered_after_its_ready() -> None:
    d, _ = ready_driver()
    actions = d.client(QUERY + FUNCTION_CALL)
    assert to_upstream(actions) == QUERY
    assert to_client(actions) == b""  # nothing may overtake the query's answer
    client = b""
    before_ready = SELECT_RESPONSE[:-6]
    for chunk in chunks_of(before_ready, 7):
        client += to_client(d.upstream(chunk))
    assert client == before_ready  # still no synthetic error
    client += to_client(d.upstream(SELECT_RESPONSE[-6:]))
    assert client.startswith(SELECT_RESPONSE)
    tail = backend_messages(client[len(SELECT_RESPONSE) :])
    assert len(tail) == 2
    assert isinstance(tail[0], m.ErrorOrNotice)
    assert tail[0].sqlstate == "0A000"
    assert tail[1] == m.ReadyForQuery(b"I")


def test_function_call_pipelined_after_begin_reports_the_new_status() -> None:
    # The synthetic ReadyForQuery is built when released, after BEGIN's own ReadyForQuery.
    d, _ = ready_driver()
    d.client(m.Query(b"BEGIN").encode() + FUNCTION_CALL)
    begin = m.CommandComplete("BEGIN").encode() + m.ReadyForQuery(b"T").encode()
    client = to_client(d.upstream(begin))
    assert client.startswith(begin)
    assert backend_messages(client[len(begin) :])[-1] == m.ReadyForQuery(b"T")


def test_function_call_between_two_queries_keeps_every_answer_in_order() -> None:
    d, _ = ready_driver()
    second_query = m.Query(b"SELECT 2").encode()
    second_response = (
        m.CommandComplete("SELECT 1").encode() + m.ReadyForQuery(b"I").encode()
    )
    actions = d.client(QUERY + FUNCTION_CALL + second_query)
    assert to_upstream(actions) == QUERY + second_query
    client = to_client(actions)
    client += to_client(d.upstream(SELECT_RESPONSE + second_response))
    messages = backend_messages(client)
    kinds = [(type(x).__name__, getattr(x, "sqlstate", None)) for x in messages]
    assert kinds == [
        ("RowDescription", None), ("DataRow", None), ("CommandComplete", None),
        ("ReadyForQuery", None),
        ("ErrorOrNotice", "0A000"), ("ReadyForQuery", None),
        ("CommandComplete", None), ("ReadyForQuery", None),
    ]


def test_malformed_query_is_a_protocol_violation() -> None:
    d, _ = ready_driver()
    actions = d.client(b"Q\x00\x00\x00\x06ab")  # no terminator
    assert_fatal_then_close(actions, "08P01")
    assert d.session.phase is Phase.CLOSED


@pytest.mark.parametrize("length", [b"\x00\x00\x00\x02", b"\x80\x00\x00\x00"])
def test_invalid_length_is_a_protocol_violation(length: bytes) -> None:
    d, _ = ready_driver()
    assert_fatal_then_close(d.client(b"Q" + length), "08P01")


@pytest.mark.parametrize("msg_type", [b"z", b"\x00", b"\xff", b"A", b"p"])
def test_garbage_typed_message_is_a_protocol_violation(msg_type: bytes) -> None:
    d, _ = ready_driver()
    actions = d.client(frame(msg_type, b"garbage!"))
    assert to_upstream(actions) == b"", "a message the proxy cannot read must not go upstream"
    assert_fatal_then_close(actions, "08P01")


def test_garbage_after_a_valid_query_in_one_packet_sends_nothing_upstream() -> None:
    d, _ = ready_driver()
    actions = d.client(QUERY + frame(b"z", b"garbage!"))
    assert_fatal_then_close([a for a in actions if not isinstance(a, SendUpstream)], "08P01")
    assert b"garbage" not in to_upstream(actions)


def test_copy_in_data_is_relayed_byte_identical() -> None:
    d, _ = ready_driver()
    d.client(m.Query(b"COPY t FROM STDIN").encode())
    d.upstream(m.CopyResponse(b"G", 0, (0, 0)).encode())
    assert copy_state(d) == b"G"
    copy = b"".join(m.Bare(b"d", b"%d\tx\n" % i).encode() for i in range(50)) + m.Bare(b"c").encode()
    sent = b"".join(to_upstream(d.client(c)) for c in chunks_of(copy, 3))
    assert sent == copy


def test_terminate_is_forwarded_and_closes() -> None:
    d, _ = ready_driver()
    actions = d.client(m.Bare(b"X").encode())
    assert actions == [SendUpstream(m.Bare(b"X").encode()), Close("client terminated")]


@pytest.mark.parametrize("cut", [3, 9, 40])
def test_upstream_closing_mid_message_just_closes(cut: int) -> None:
    d, _ = ready_driver()
    d.client(QUERY)
    relayed = to_client(d.upstream(SELECT_RESPONSE[:cut]))
    actions = d.session.upstream_closed()
    assert actions == [Close("upstream closed")]
    assert SELECT_RESPONSE.startswith(relayed)


def test_upstream_closing_mid_passthrough_message_just_closes() -> None:
    d, _ = ready_driver()
    d.client(QUERY)
    first_row = SELECT_RESPONSE.index(b"D\x00")
    relayed = to_client(d.upstream(SELECT_RESPONSE[: first_row + 8]))
    assert relayed == SELECT_RESPONSE[: first_row + 8]  # relayed bytes already left
    assert d.session.upstream_closed() == [Close("upstream closed")]


def test_upstream_closing_at_a_boundary_sends_08006_then_closes() -> None:
    d, _ = ready_driver()
    d.client(QUERY)
    d.upstream(SELECT_RESPONSE)
    actions = d.session.upstream_closed()
    assert_fatal_then_close(actions, "08006")
    assert d.session.phase is Phase.CLOSED
    assert d.session.upstream_closed() == []


def test_upstream_fatal_is_relayed_then_close_without_a_second_error() -> None:
    d, _ = ready_driver()
    d.client(QUERY)
    fatal = m.error_response(
        "57P01", "terminating connection due to administrator command", severity="FATAL"
    ).encode()
    actions = d.upstream(fatal)
    assert to_client(actions) == fatal
    assert d.session.upstream_closed() == [Close("upstream closed")]


def test_upstream_invalid_ready_for_query_is_08006() -> None:
    d, _ = ready_driver()
    d.client(QUERY)
    actions = d.upstream(b"Z\x00\x00\x00\x05Q")
    assert_fatal_then_close(actions, "08006")


def test_notices_and_notifications_outside_a_query_are_relayed() -> None:
    d, _ = ready_driver()
    data = (
        m.NotificationResponse(99, "jobs", "done").encode()
        + m.error_response("01000", "heads up", severity="WARNING", notice=True).encode()
        + m.ParameterStatus("TimeZone", "Europe/Paris").encode()
    )
    assert to_client(d.upstream(data)) == data
    assert d.session.server_params["TimeZone"] == "Europe/Paris"


def test_copy_out_is_tracked_and_relayed() -> None:
    d, _ = ready_driver()
    d.client(m.Query(b"COPY t TO STDOUT").encode())
    head = m.CopyResponse(b"H", 0, (0,)).encode() + m.Bare(b"d", b"1\n").encode()
    assert to_client(d.upstream(head)) == head
    assert copy_state(d) == b"H"
    tail = m.Bare(b"c").encode() + m.CommandComplete("COPY 1").encode() + m.ReadyForQuery(b"I").encode()
    assert to_client(d.upstream(tail)) == tail
    assert copy_state(d) is None
    assert not d.session.busy


def test_every_split_of_a_login_and_query_gives_the_same_bytes() -> None:
    # The whole READY conversation, fed in odd pieces from both sides, yields the same bytes.
    for seed in range(3):
        d, _ = ready_driver()
        upstream = b"".join(to_upstream(d.client(c)) for c in chunks_of(QUERY + QUERY, seed))
        assert upstream == QUERY + QUERY
        client = b"".join(
            to_client(d.upstream(c)) for c in chunks_of(SELECT_RESPONSE * 2, seed + 100)
        )
        assert client == SELECT_RESPONSE * 2
        assert not d.session.busy
