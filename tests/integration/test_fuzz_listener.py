"""Integration: a real `dbguard serve` fed garbage on raw sockets keeps serving everyone else.

Covers: random bytes before the startup packet, invalid startup lengths, 2 GiB message lengths
before and after login (on inspected and relayed message types), an SSLRequest followed by
garbage, a complete SCRAM login followed by unknown, malformed or random typed messages,
truncated messages followed by a close, and many half-open connections held in every startup
state. Each bad connection gets a FATAL 08P01 (where an answer is due) or is closed, never
left hanging; meanwhile one healthy psycopg connection through the same proxy keeps running
queries, new logins keep working, the proxy process stays alive and logs no traceback.
Bounded: a fixed, seeded set of inputs and a few seconds in total.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import time
from collections.abc import Iterator

import psycopg
import pytest

from dbguard.wire.pg import messages as m
from dbguard.wire.pg.auth import ScramClientExchange
from dbguard.wire.pg.framing import Frame, MessageScanner, frame, frame_untyped
from tests.integration.harness import ProxyProcess

ALL_TYPES = frozenset(bytes([i]) for i in range(256))
# How long a bad connection may take to be answered and closed.
CLOSE_TIMEOUT = 5.0
# Types the proxy relays undecoded once READY (the server judges them).
RELAYED_TYPES = frozenset(b"BEDCHdcf")


# ----------------------------------------------------------------------------- helpers


class Healthy:
    """One ordinary client that must be unaffected by everything else."""

    def __init__(self, proxy: ProxyProcess) -> None:
        self.proxy = proxy
        self.conn = psycopg.connect(proxy.dsn("copilot"), autocommit=True, connect_timeout=10)
        self.log_offset = len(proxy.log())
        self.queries = 0

    def check(self) -> None:
        n = self.queries
        row = self.conn.execute("SELECT %s::int + 1, count(*) >= 0 FROM customers", (n,)).fetchone()
        assert row == (n + 1, True)
        self.queries += 1
        assert self.proxy.alive
        new_log = self.proxy.log()[self.log_offset :]
        assert "Traceback" not in new_log, new_log[-4000:]


@pytest.fixture(scope="module")
def healthy(proxy: ProxyProcess) -> Iterator[Healthy]:
    h = Healthy(proxy)
    try:
        yield h
        # A fresh login still works after everything this module did.
        with psycopg.connect(proxy.dsn("copilot"), connect_timeout=10) as conn:
            assert conn.execute("SELECT 'still here'").fetchone() == ("still here",)
        h.check()
    finally:
        h.conn.close()


def connect(proxy: ProxyProcess) -> socket.socket:
    return socket.create_connection((proxy.host, proxy.port), timeout=CLOSE_TIMEOUT)


def read_until_closed(sock: socket.socket, timeout: float = CLOSE_TIMEOUT) -> tuple[bytes, bool]:
    """Everything the proxy sends until it closes (True) or `timeout` passes (False)."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return data, False
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data, False
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk


def backend_messages(data: bytes) -> list[m.BackendMessage]:
    scanner = MessageScanner(ALL_TYPES)
    scanner.feed(data)
    out = []
    for seg in scanner.segments():
        assert isinstance(seg, Frame)
        out.append(m.decode_backend(seg.type, seg.payload))
    assert scanner.at_boundary, f"the proxy sent a partial message: {data!r}"
    return out


def errors_in(data: bytes) -> list[m.ErrorOrNotice]:
    return [x for x in backend_messages(data) if isinstance(x, m.ErrorOrNotice) and not x.notice]


def assert_08p01_then_closed(sock: socket.socket) -> m.ErrorOrNotice:
    """The proxy answers FATAL 08P01 and closes without being asked to."""
    data, closed = read_until_closed(sock)
    assert closed, f"connection left open after {data!r}"
    errs = errors_in(data)
    assert len(errs) == 1, data
    assert errs[0].get("S") == "FATAL"
    assert errs[0].sqlstate == "08P01", errs[0].fields
    return errs[0]


def assert_08p01_or_closed(sock: socket.socket, received: bytes = b"", allowed: tuple[str, ...] = ("08P01",)) -> None:
    """After the client half-closes: either a FATAL 08P01 (or another of `allowed`) or a
    plain close, nothing else."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
    data, closed = read_until_closed(sock)
    assert closed, f"connection left open after {data!r}"
    errs = errors_in(received + data)
    for err in errs:
        assert err.sqlstate in allowed, err.fields
    if errs:
        assert errs[-1].get("S") == "FATAL"


def raw_login(proxy: ProxyProcess) -> socket.socket:
    """A complete SCRAM login as copilot on a raw socket, returned at ReadyForQuery."""
    sock = connect(proxy)
    sock.sendall(m.StartupMessage(196608, {"user": "copilot", "database": "app"}).encode())
    scanner = MessageScanner(ALL_TYPES)
    scram: ScramClientExchange | None = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        assert chunk, "proxy closed during login"
        scanner.feed(chunk)
        for seg in scanner.segments():
            assert isinstance(seg, Frame)
            msg = m.decode_backend(seg.type, seg.payload)
            if isinstance(msg, m.Authentication) and msg.code == m.AUTH_SASL:
                scram = ScramClientExchange("copilot", proxy.secrets["copilot"], list(msg.mechanisms))
                sock.sendall(m.encode_sasl_initial_response(scram.mechanism, scram.client_first()))
            elif isinstance(msg, m.Authentication) and msg.code == m.AUTH_SASL_CONTINUE:
                assert scram is not None
                sock.sendall(m.PasswordLike(scram.client_final(msg.data)).encode())
            elif isinstance(msg, m.Authentication) and msg.code == m.AUTH_SASL_FINAL:
                assert scram is not None
                scram.verify_server_final(msg.data)
            elif isinstance(msg, m.ErrorOrNotice) and not msg.notice:
                raise AssertionError(f"login failed: {msg.fields}")
            elif isinstance(msg, m.ReadyForQuery):
                return sock
    raise AssertionError("login did not finish")


def random_bytes(rng: random.Random, low: int, high: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(rng.randint(low, high)))


# ----------------------------------------------------------------------------- before startup


def test_random_bytes_before_startup(proxy: ProxyProcess, healthy: Healthy) -> None:
    rng = random.Random(20240229)
    answered = 0
    for _ in range(25):
        with connect(proxy) as sock:
            sock.sendall(random_bytes(rng, 1, 300))
            data, closed = read_until_closed(sock, timeout=0.3)
            if data:
                answered += 1
                assert closed
                assert [e.sqlstate for e in errors_in(data)] == ["08P01"]
            else:
                assert_08p01_or_closed(sock)
        healthy.check()
    assert answered > 0  # most random lengths are out of bounds: answered at once


@pytest.mark.parametrize(
    "packet",
    [
        b"\x00\x00\x00\x00",
        b"\x00\x00\x00\x07\x00\x03\x00",  # below the minimum of 8
        b"\x00\x00\x27\x11",  # 10001: over PostgreSQL's startup packet limit
        b"\x80\x00\x00\x00\x00\x03\x00\x00",  # 2 GiB
        b"\xff\xff\xff\xff",
        frame_untyped(struct.pack("!I", 2 << 16) + b"user\x00copilot\x00\x00"),  # protocol 2.0
        frame_untyped(struct.pack("!I", 1234) + b"x" * 20),
        m.SSL_REQUEST,  # answered 'N', then garbage follows
    ],
    ids=["len0", "len7", "len10001", "len2GiB", "lenFFFFFFFF", "proto2", "code1234", "ssl"],
)
def test_invalid_startup_packets(proxy: ProxyProcess, healthy: Healthy, packet: bytes) -> None:
    with connect(proxy) as sock:
        if packet == m.SSL_REQUEST:
            # No TLS on this listener: 'N', then the garbage that follows is refused.
            sock.sendall(packet)
            assert sock.recv(1) == b"N"
            sock.sendall(b"\x00\x00\x00\x03garbage")
        else:
            sock.sendall(packet)
        assert_08p01_then_closed(sock)
    healthy.check()


def test_truncated_startup_then_close(proxy: ProxyProcess, healthy: Healthy) -> None:
    startup = m.StartupMessage(196608, {"user": "copilot", "database": "app"}).encode()
    for cut in (1, 3, 4, 7, len(startup) - 1):
        with connect(proxy) as sock:
            sock.sendall(startup[:cut])
            assert_08p01_or_closed(sock)
    healthy.check()


# ----------------------------------------------------------------------------- after login


def test_two_gib_length_after_login(proxy: ProxyProcess, healthy: Healthy) -> None:
    for msg_type in (b"Q", b"P", b"B", b"d"):
        with raw_login(proxy) as sock:
            sock.sendall(msg_type + b"\x80\x00\x00\x00" + b"x" * 16)
            assert_08p01_then_closed(sock)
        healthy.check()


def test_max_int32_length_relayed_type_after_login(proxy: ProxyProcess, healthy: Healthy) -> None:
    # A legal length for the proxy's streaming relay; the server refuses it (over 1 GiB) and
    # drops the connection, which the client may learn as 08P01 or as the lost upstream (08006).
    with raw_login(proxy) as sock:
        sock.sendall(b"d\x7f\xff\xff\xff" + b"x" * 100)
        assert_08p01_or_closed(sock, allowed=("08P01", "08006"))
    healthy.check()


@pytest.mark.parametrize(
    "garbage",
    [
        frame(b"z", b"garbage!"),
        frame(b"\x00", b""),
        frame(b"\xff", b"\xff" * 10),
        b"Q\x00\x00\x00\x06ab",  # query without its terminator
        b"Q\x00\x00\x00\x02",  # length below 4
        frame(b"P", b"\x00SELECT 1"),  # Parse without terminators
        frame(b"p", b"password\x00"),  # a password message after authentication
    ],
    ids=["type-z", "type-nul", "type-ff", "query-no-nul", "length-2", "parse-no-nul", "password"],
)
def test_garbage_typed_message_after_login(
    proxy: ProxyProcess, healthy: Healthy, garbage: bytes
) -> None:
    with raw_login(proxy) as sock:
        sock.sendall(garbage)
        assert_08p01_then_closed(sock)
    healthy.check()


def query_on(sock: socket.socket, sql: bytes) -> list[m.BackendMessage]:
    sock.sendall(m.Query(sql).encode())
    data = b""
    while not data.endswith(b"Z\x00\x00\x00\x05I"):
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return backend_messages(data)


def test_fastpath_call_is_refused_whatever_its_payload(
    proxy: ProxyProcess, healthy: Healthy
) -> None:
    # FunctionCall never reaches the server, so even a malformed one only earns the 0A000
    # refusal; the session goes on.
    with raw_login(proxy) as sock:
        for payload in (b"\x00", b"", m.FunctionCall(1598).encode()[5:]):
            sock.sendall(frame(b"F", payload))
            data = b""
            while not data.endswith(b"Z\x00\x00\x00\x05I"):
                chunk = sock.recv(65536)
                assert chunk
                data += chunk
            assert [e.sqlstate for e in errors_in(data)] == ["0A000"]
        assert m.DataRow((b"8",)) in query_on(sock, b"SELECT 8")
    healthy.check()


def test_garbage_after_a_valid_query(proxy: ProxyProcess, healthy: Healthy) -> None:
    with raw_login(proxy) as sock:
        sock.sendall(m.Query(b"SELECT 1").encode() + frame(b"z", b"garbage!"))
        data, closed = read_until_closed(sock)
        assert closed
        errs = errors_in(data)
        assert [e.sqlstate for e in errs] == ["08P01"]
    healthy.check()


def test_random_bytes_after_login(proxy: ProxyProcess, healthy: Healthy) -> None:
    rng = random.Random(77)
    for _ in range(12):
        garbage = random_bytes(rng, 1, 200)
        with raw_login(proxy) as sock:
            sock.sendall(garbage)
            # Unknown types and out-of-bounds lengths are refused by the proxy at once; a
            # relayed type with a plausible length is streamed and the server judges it.
            data, closed = read_until_closed(sock, timeout=0.3)
            if garbage[0] not in RELAYED_TYPES and data:
                assert closed
            assert_08p01_or_closed(sock, data)
        healthy.check()


def test_truncated_message_then_close(proxy: ProxyProcess, healthy: Healthy) -> None:
    for partial in (
        b"Q\x00\x00\x01\x00SELECT",  # an inspected message cut short
        b"Q\x00\x00",  # a header cut short
        b"B\x00\x00\x01\x00\x00\x00",  # a relayed message cut short (already partly upstream)
    ):
        sock = raw_login(proxy)
        sock.sendall(partial)
        sock.close()
        healthy.check()
    # The session after a truncated relayed message is gone; a new one works normally.
    with raw_login(proxy) as sock:
        assert m.DataRow((b"7",)) in query_on(sock, b"SELECT 7")


# ----------------------------------------------------------------------------- half-open


def test_many_half_open_connections(proxy: ProxyProcess, healthy: Healthy) -> None:
    startup = m.StartupMessage(196608, {"user": "copilot", "database": "app"}).encode()
    held: list[socket.socket] = []
    try:
        for i in range(60):
            sock = connect(proxy)
            kind = i % 4
            if kind == 1:
                sock.sendall(startup[:6])  # startup packet cut short
            elif kind == 2:
                sock.sendall(startup)  # waits in authentication forever
            elif kind == 3:
                sock.sendall(m.SSL_REQUEST)  # asked about TLS, then silence
            held.append(sock)
            if i % 15 == 14:
                healthy.check()
        # Logins still succeed and queries still run while all of them hang around.
        with psycopg.connect(proxy.dsn("copilot"), connect_timeout=10) as conn:
            assert conn.execute("SELECT 5").fetchone() == (5,)
        for _ in range(5):
            healthy.check()
        # The ones that spoke were answered as usual, not dropped.
        for i, sock in enumerate(held):
            if i % 4 == 2:
                sock.settimeout(CLOSE_TIMEOUT)
                messages = backend_messages(sock.recv(65536))
                assert isinstance(messages[0], m.Authentication)
                assert messages[0].code == m.AUTH_SASL
            elif i % 4 == 3:
                sock.settimeout(CLOSE_TIMEOUT)
                assert sock.recv(1) == b"N"
    finally:
        for sock in held:
            sock.close()
    healthy.check()
