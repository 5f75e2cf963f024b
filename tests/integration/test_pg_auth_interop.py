"""dbguard.wire.pg.auth against the real thing: a PostgreSQL 15 server and libpq (psycopg).

- Proxy as client: a tiny raw-socket driver (here, in the test only) logs in to a throwaway
  PostgreSQL with ScramClientExchange (plain TCP, and TLS with SCRAM-SHA-256-PLUS channel
  binding over certificates from dbguard.devdb.certs) and md5_password_message.
- Proxy as server: a tiny fake PostgreSQL (a thread, here too) runs ScramServerExchange while
  libpq connects to it, with and without TLS channel binding.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from psycopg.conninfo import make_conninfo

from dbguard.devdb.certs import CertPair, make_self_signed_cert
from dbguard.devdb.postgres import ThrowawayPostgres
from dbguard.wire.pg.auth import (
    TLS_SERVER_END_POINT,
    AuthenticationFailed,
    ScramClientExchange,
    ScramServerExchange,
    ScramVerifier,
    make_scram_verifier,
    md5_password_message,
    tls_server_end_point_hash,
)
from tests.pgwire import read_message, recv_exact

pytestmark = [pytest.mark.integration]

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
PROTOCOL_3_0 = 196608
IO_TIMEOUT = 15.0


# --------------------------------------------------------------------------- wire helpers


def _message(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!I", len(payload) + 4) + payload


def _error_fields(payload: bytes) -> dict[str, str]:
    return {item[:1].decode(): item[1:].decode() for item in payload.split(b"\0") if item}


def _cert_der(pair: CertPair) -> bytes:
    certificate = x509.load_pem_x509_certificate(pair.cert_path.read_bytes())
    return certificate.public_bytes(serialization.Encoding.DER)


class PgError(Exception):
    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(f"{fields.get('C')}: {fields.get('M')}")
        self.fields = fields


# --------------------------------------------------------------------------- proxy as client


def _login(
    port: int,
    user: str,
    password: str,
    *,
    tls: ssl.SSLContext | None = None,
    bind_channel: bool = True,
) -> str:
    """Log in with dbguard's client-side exchanges; return the method used."""
    sock: socket.socket = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    try:
        channel_binding: tuple[str, bytes] | None = None
        if tls is not None:
            sock.sendall(struct.pack("!II", 8, SSL_REQUEST))
            assert recv_exact(sock, 1) == b"S"
            sock = tls.wrap_socket(sock, server_hostname="localhost")
            peer_der = sock.getpeercert(binary_form=True)
            assert peer_der is not None
            if bind_channel:
                channel_binding = (TLS_SERVER_END_POINT, tls_server_end_point_hash(peer_der))
        body = struct.pack("!I", PROTOCOL_3_0)
        body += b"user\0" + user.encode() + b"\0database\0postgres\0\0"
        sock.sendall(struct.pack("!I", len(body) + 4) + body)

        method = "trust"
        exchange: ScramClientExchange | None = None
        while True:
            kind, payload = read_message(sock)
            if kind == b"E":
                raise PgError(_error_fields(payload))
            if kind == b"Z":
                sock.sendall(_message(b"X", b""))
                return method
            if kind != b"R":
                continue
            (code,) = struct.unpack("!I", payload[:4])
            data = payload[4:]
            if code == 0:  # AuthenticationOk: only after the server proved itself
                assert exchange is None or exchange.completed
            elif code == 5:  # AuthenticationMD5Password
                method = "md5"
                sock.sendall(_message(b"p", md5_password_message(user, password, data) + b"\0"))
            elif code == 10:  # AuthenticationSASL
                mechanisms = [m.decode() for m in data.split(b"\0") if m]
                exchange = ScramClientExchange(user, password, mechanisms, channel_binding=channel_binding)
                method = exchange.mechanism
                first = exchange.client_first()
                initial = method.encode() + b"\0" + struct.pack("!i", len(first)) + first
                sock.sendall(_message(b"p", initial))
            elif code == 11:  # AuthenticationSASLContinue
                assert exchange is not None
                sock.sendall(_message(b"p", exchange.client_final(data)))
            elif code == 12:  # AuthenticationSASLFinal
                assert exchange is not None
                exchange.verify_server_final(data)
            else:
                raise AssertionError(f"unexpected authentication request {code}")
    finally:
        sock.close()


@dataclass(frozen=True)
class RealServer:
    port: int
    certs: CertPair
    verifier_secret: str


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    """A throwaway PostgreSQL with TLS, a SCRAM role, a role whose stored secret dbguard made,
    and an md5 role."""
    certs = make_self_signed_cert(tmp_path_factory.mktemp("certs"))
    verifier_secret = "made by dbguard"
    with ThrowawayPostgres(ssl_cert=certs.cert_path, ssl_key=certs.key_path) as server:
        server.create_role("app", "app-secret")
        # PostgreSQL stores a password given in its SCRAM secret format as is.
        server.create_role("ours", make_scram_verifier(verifier_secret).to_postgres_secret())
        server.create_role("md5user", "md5-secret", password_encryption="md5")
        server.set_hba_method("md5user", "md5")
        yield RealServer(port=server.port, certs=certs, verifier_secret=verifier_secret)


def _verify_full(certs: CertPair) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs.ca_path))


def test_scram_login_to_postgres(real_server: RealServer) -> None:
    assert _login(real_server.port, "app", "app-secret") == "SCRAM-SHA-256"


def test_scram_plus_login_over_tls(real_server: RealServer) -> None:
    tls = _verify_full(real_server.certs)
    assert _login(real_server.port, "app", "app-secret", tls=tls) == "SCRAM-SHA-256-PLUS"
    # Without binding data the client falls back to plain SCRAM, which the server allows.
    plain = _login(real_server.port, "app", "app-secret", tls=tls, bind_channel=False)
    assert plain == "SCRAM-SHA-256"


def test_wrong_password_is_refused_by_postgres(real_server: RealServer) -> None:
    with pytest.raises(PgError) as excinfo:
        _login(real_server.port, "app", "wrong")
    assert excinfo.value.fields["C"] == "28P01"


def test_postgres_accepts_our_verifier(real_server: RealServer) -> None:
    tls = _verify_full(real_server.certs)
    assert _login(real_server.port, "ours", real_server.verifier_secret, tls=tls) == ("SCRAM-SHA-256-PLUS")


def test_md5_login_to_postgres(real_server: RealServer) -> None:
    assert _login(real_server.port, "md5user", "md5-secret") == "md5"
    with pytest.raises(PgError):
        _login(real_server.port, "md5user", "md5-wrong")


# --------------------------------------------------------------------------- proxy as server


@dataclass
class Attempt:
    user: str = ""
    client_first: bytes = b""
    mechanism: str | None = None
    succeeded: bool = False
    log_detail: str = ""


@dataclass
class FakeServer:
    """Accepts connections and authenticates them with ScramServerExchange, nothing more."""

    users: dict[str, ScramVerifier]
    certs: CertPair | None = None
    offer_binding: bool = True
    binding_data: bytes | None = None  # override the real hash, to play a man in the middle
    attempts: list[Attempt] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(IO_TIMEOUT)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(IO_TIMEOUT)
            try:
                self._handle(conn)
            except (OSError, ConnectionError):
                pass  # the client hung up; what happened is in self.attempts
            finally:
                conn.close()

    def _handle(self, sock: socket.socket) -> None:
        channel_binding: tuple[str, bytes] | None = None
        while True:
            (length,) = struct.unpack("!I", recv_exact(sock, 4))
            body = recv_exact(sock, length - 4)
            (code,) = struct.unpack("!I", body[:4])
            if code == SSL_REQUEST and self.certs is not None:
                sock.sendall(b"S")
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(self.certs.cert_path, self.certs.key_path)
                sock = context.wrap_socket(sock, server_side=True)
                if self.offer_binding:
                    data = self.binding_data or tls_server_end_point_hash(_cert_der(self.certs))
                    channel_binding = (TLS_SERVER_END_POINT, data)
            elif code in (SSL_REQUEST, GSSENC_REQUEST):
                sock.sendall(b"N")
            else:
                break
        items = body[4:].split(b"\0")
        parameters = dict(zip(items[0::2], items[1::2], strict=False))
        attempt = Attempt(user=parameters[b"user"].decode())
        self.attempts.append(attempt)
        exchange = ScramServerExchange(self.users.get(attempt.user), channel_binding=channel_binding, user=attempt.user)
        mechanisms = b"".join(m.encode() + b"\0" for m in exchange.mechanisms()) + b"\0"
        sock.sendall(_message(b"R", struct.pack("!I", 10) + mechanisms))
        try:
            kind, payload = read_message(sock)
            assert kind == b"p"
            mechanism, _, rest = payload.partition(b"\0")
            attempt.client_first = rest[4:]
            server_first = exchange.handle_client_first(mechanism.decode(), rest[4:])
            attempt.mechanism = exchange.mechanism
            sock.sendall(_message(b"R", struct.pack("!I", 11) + server_first))
            kind, payload = read_message(sock)
            assert kind == b"p"
            server_final = exchange.handle_client_final(payload)
        except AuthenticationFailed as exc:
            attempt.log_detail = exc.log_detail
            message = f'password authentication failed for user "{attempt.user}"'
            error = f"SFATAL\0VFATAL\0C28P01\0M{message}\0\0"
            sock.sendall(_message(b"E", error.encode()))
            return
        attempt.succeeded = True
        sock.sendall(_message(b"R", struct.pack("!I", 12) + server_final))
        sock.sendall(_message(b"R", struct.pack("!I", 0)))
        for name, value in [
            ("server_version", "15.0"),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
        ]:
            sock.sendall(_message(b"S", f"{name}\0{value}\0".encode()))
        sock.sendall(_message(b"K", struct.pack("!II", 4242, 1234)))
        sock.sendall(_message(b"Z", b"I"))
        while True:  # until Terminate or hang-up; refuse anything else
            kind, _ = read_message(sock)
            if kind == b"X":
                return
            error = "SERROR\0VERROR\0C0A000\0Mthis test server runs no queries\0\0"
            sock.sendall(_message(b"E", error.encode()) + _message(b"Z", b"I"))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPair:
    return make_self_signed_cert(tmp_path_factory.mktemp("fake-pg-certs"))


USERS = {"alice": make_scram_verifier("pencil"), "crab": make_scram_verifier("claws \U0001f980")}


def _libpq_connect(server: FakeServer, user: str, password: str, **options: str) -> None:
    options.setdefault("sslmode", "disable")
    conninfo = make_conninfo(
        host="127.0.0.1",
        port=server.port,
        user=user,
        password=password,
        dbname="app",
        gssencmode="disable",
        connect_timeout=10,
        **options,
    )
    with psycopg.connect(conninfo):
        pass


def test_libpq_logs_in() -> None:
    with FakeServer(USERS) as server:
        _libpq_connect(server, "alice", "pencil")
    (attempt,) = server.attempts
    assert attempt.succeeded
    assert attempt.client_first.startswith(b"n,,n=,r=")  # libpq's empty user name


def test_libpq_wrong_password_and_unknown_user_look_the_same() -> None:
    with FakeServer(USERS) as server:
        with pytest.raises(psycopg.OperationalError) as wrong:
            _libpq_connect(server, "alice", "crayon")
        with pytest.raises(psycopg.OperationalError) as unknown:
            _libpq_connect(server, "alicf", "crayon")
    assert 'password authentication failed for user "alice"' in str(wrong.value)
    assert str(unknown.value) == str(wrong.value).replace('"alice"', '"alicf"')
    assert [a.log_detail for a in server.attempts] == ["wrong password", "unknown user"]


def test_libpq_password_outside_saslprep() -> None:
    # libpq, like our verifier, falls back to the raw bytes when SASLprep refuses a password.
    with FakeServer(USERS) as server:
        _libpq_connect(server, "crab", "claws \U0001f980")
    assert server.attempts[0].succeeded


def test_libpq_channel_binding_required(certs: CertPair) -> None:
    with FakeServer(USERS, certs=certs) as server:
        _libpq_connect(
            server,
            "alice",
            "pencil",
            sslmode="verify-full",
            sslrootcert=str(certs.ca_path),
            channel_binding="require",
        )
    (attempt,) = server.attempts
    assert attempt.mechanism == "SCRAM-SHA-256-PLUS"
    assert attempt.client_first.startswith(b"p=tls-server-end-point,,")
    assert attempt.succeeded


def test_libpq_tls_without_binding_sends_y(certs: CertPair) -> None:
    with FakeServer(USERS, certs=certs, offer_binding=False) as server:
        _libpq_connect(server, "alice", "pencil", sslmode="verify-full", sslrootcert=str(certs.ca_path))
    (attempt,) = server.attempts
    assert attempt.client_first.startswith(b"y,,")
    assert attempt.succeeded


def test_libpq_binding_mismatch_fails(certs: CertPair) -> None:
    # The server end binds to a different certificate than the one the client saw.
    with (
        FakeServer(USERS, certs=certs, binding_data=b"\x00" * 32) as server,
        pytest.raises(psycopg.OperationalError),
    ):
        _libpq_connect(
            server,
            "alice",
            "pencil",
            sslmode="verify-full",
            sslrootcert=str(certs.ca_path),
            channel_binding="require",
        )
    (attempt,) = server.attempts
    assert not attempt.succeeded
    assert "channel binding" in attempt.log_detail
