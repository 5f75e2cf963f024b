"""Client authentication at the proxy, seen from real clients and from the wire.

Covers: a wrong secret and an unknown identity get the same answer (SQLSTATE 28P01, the
server's own message shape); a correct secret works over SCRAM-SHA-256 without the client
ever knowing the upstream password, which appears in no byte the proxy sends to a client
(nor in its log), even when the upstream rejects the proxy's credentials; repeated failures
from one address are slowed down; sslmode=require against a listener without TLS fails
cleanly (the proxy answers 'N' and the connection can go on in plaintext).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import psycopg
import pytest

from dbguard.devdb.postgres import ThrowawayPostgres
from tests.integration.harness import ProxyProcess

ProxyFactory = Callable[..., ProxyProcess]
SSL_REQUEST = struct.pack("!ii", 8, 80877103)
PROTOCOL_3_0 = 196608


@pytest.fixture
def own_proxy(proxy_factory: Any, pg_server: ThrowawayPostgres) -> ProxyProcess:
    """A proxy of this test's own: authentication failures slow down later attempts from the
    same address, which must not leak into other tests through the shared proxy."""
    made: ProxyProcess = proxy_factory(pg_server.dsn(sslmode="disable"))
    return made


class RecordingRelay:
    """A TCP relay in front of the proxy that keeps every byte the proxy sends to clients."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port: int = self.listener.getsockname()[1]
        self.to_client = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            for source, target, record in ((client, upstream, False),
                                           (upstream, client, True)):
                pump = threading.Thread(target=self._pump, args=(source, target, record),
                                        daemon=True)
                pump.start()
                self._threads.append(pump)

    def _pump(self, source: socket.socket, target: socket.socket, record: bool) -> None:
        try:
            while data := source.recv(65536):
                if record:
                    with self._lock:
                        self.to_client += data
                target.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a pump blocked in recv()
            sock.close()
        for thread in self._threads:
            thread.join(timeout=2)

    def received(self) -> bytes:
        with self._lock:
            return bytes(self.to_client)


@pytest.fixture
def relay_factory() -> Iterator[Callable[[int], RecordingRelay]]:
    relays: list[RecordingRelay] = []

    def make(port: int) -> RecordingRelay:
        relays.append(RecordingRelay(port))
        return relays[-1]

    yield make
    for relay in relays:
        relay.close()


def login_error(dsn: str) -> asyncpg.PostgresError:
    async def attempt() -> asyncpg.PostgresError:
        try:
            conn = await asyncpg.connect(dsn, ssl=False)
        except asyncpg.PostgresError as exc:
            return exc
        await conn.close()
        raise AssertionError("the login was accepted")

    return asyncio.run(attempt())


def psycopg_login_message(dsn: str) -> str:
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(dsn, sslmode="disable").close()
    return str(caught.value)


def test_wrong_secret_and_unknown_identity_get_the_same_answer(
        own_proxy: ProxyProcess, pg_server: ThrowawayPostgres) -> None:
    wrong_secret = login_error(own_proxy.dsn("copilot", secret="not-the-secret"))
    unknown = login_error(own_proxy.dsn("nobody", secret="whatever"))
    empty = login_error(own_proxy.dsn("alice", secret=""))
    for exc, user in ((wrong_secret, "copilot"), (unknown, "nobody"), (empty, "alice")):
        assert isinstance(exc, asyncpg.InvalidPasswordError)
        assert exc.sqlstate == "28P01"
        assert str(exc) == f'password authentication failed for user "{user}"'

    # psycopg shows the same text for both, and the same as a real server's wrong password.
    def shape(message: str, user: str, port: int) -> str:
        return message.replace(f'"{user}"', '"USER"').replace(f"port {port}", "port PORT")

    messages = {
        "wrong secret": shape(psycopg_login_message(own_proxy.dsn("copilot", secret="nope")),
                              "copilot", own_proxy.port),
        "unknown identity": shape(psycopg_login_message(own_proxy.dsn("ghost", secret="nope")),
                                  "ghost", own_proxy.port),
        "server, wrong password": shape(
            psycopg_login_message(pg_server.dsn(password="nope")), pg_server.app_user,
            pg_server.port),
    }
    assert set(messages.values()) == {
        'connection failed: connection to server at "127.0.0.1", port PORT failed: '
        'FATAL:  password authentication failed for user "USER"'}, messages


def test_correct_secret_works_over_scram(own_proxy: ProxyProcess,
                                         pg_server: ThrowawayPostgres) -> None:
    # require_auth makes libpq refuse anything but a SCRAM exchange with the proxy.
    with psycopg.connect(own_proxy.dsn("alice", require_auth="scram-sha-256")) as conn:
        row = conn.execute("SELECT current_database(), count(*) FROM customers").fetchone()
        assert row == ("app", 50)
        assert conn.info.user == "alice"  # the client only ever knew its dbguard identity
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(own_proxy.dsn("alice", require_auth="password")).close()


def test_the_upstream_password_never_reaches_the_client(
        own_proxy: ProxyProcess, pg_server: ThrowawayPostgres,
        relay_factory: Callable[[int], RecordingRelay]) -> None:
    secret = pg_server.app_password.encode()
    relay = relay_factory(own_proxy.port)
    dsn = own_proxy.dsn("copilot").replace(f":{own_proxy.port}/", f":{relay.port}/")
    with psycopg.connect(dsn, sslmode="disable", autocommit=True) as conn:
        conn.execute("SHOW ALL").fetchall()
        conn.execute("SELECT * FROM pg_settings").fetchall()
        conn.execute("SELECT * FROM pg_stat_activity").fetchall()
        conn.execute("SELECT current_user, session_user, inet_server_port(), version()")
        conn.execute("SELECT rolname, rolpassword FROM pg_roles").fetchall()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT rolpassword FROM pg_authid")
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM no_such_table")
        for name in ("application_name", "session_authorization", "server_version"):
            assert secret.decode() not in (conn.info.parameter_status(name) or "")
    received = relay.received()
    assert b"session_authorization" in received
    assert b"rolpassword" in received
    assert secret not in received
    assert secret not in own_proxy.log().encode()


def test_rejected_upstream_credentials_are_not_revealed(
        proxy_factory: Any, pg_server: ThrowawayPostgres,
        relay_factory: Callable[[int], RecordingRelay]) -> None:
    bad_password = "wrong-upstream-password-7c1e"
    upstream = pg_server.dsn(password=bad_password, sslmode="disable")
    broken: ProxyProcess = proxy_factory(upstream)
    relay = relay_factory(broken.port)
    dsn = broken.dsn("copilot").replace(f":{broken.port}/", f":{relay.port}/")
    exc = login_error(dsn)
    assert exc.sqlstate == "08004"
    assert "dbguard" in str(exc)
    received = relay.received()
    assert b"08004" in received
    assert bad_password.encode() not in received
    assert pg_server.app_password.encode() not in received
    assert bad_password not in broken.log()


def test_startup_errors_from_the_server_are_relayed(
        own_proxy: ProxyProcess, pg_server: ThrowawayPostgres) -> None:
    through_proxy = login_error(own_proxy.dsn("copilot", database="no_such_database"))
    direct = login_error(pg_server.dsn(database="no_such_database"))
    assert isinstance(through_proxy, asyncpg.InvalidCatalogNameError)
    assert (through_proxy.sqlstate, str(through_proxy)) == (
        "3D000", 'database "no_such_database" does not exist')
    assert (through_proxy.sqlstate, str(through_proxy)) == (direct.sqlstate, str(direct))


def test_repeated_failures_are_slowed_down(own_proxy: ProxyProcess) -> None:
    """Each failure from one address within a window doubles the wait before the answer."""
    waits = []
    for _ in range(4):
        started = time.monotonic()
        login_error(own_proxy.dsn("copilot", secret="guess"))
        waits.append(time.monotonic() - started)
    assert waits[0] >= 0.2
    assert waits[3] >= 1.0, f"no slow-down after four failures in a row: {waits}"
    # A correct secret still works, and resets the count.
    with psycopg.connect(own_proxy.dsn("copilot")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_sslmode_require_without_tls_fails_cleanly(own_proxy: ProxyProcess) -> None:
    with pytest.raises(psycopg.OperationalError,
                       match="server does not support SSL, but SSL was required"):
        psycopg.connect(own_proxy.dsn("copilot", sslmode="require")).close()

    # On the wire: exactly one 'N', then the same connection goes on in plaintext.
    with socket.create_connection(("127.0.0.1", own_proxy.port), timeout=5) as sock:
        sock.sendall(SSL_REQUEST)
        assert sock.recv(16) == b"N"
        params = b"user\0copilot\0database\0app\0\0"
        sock.sendall(struct.pack("!ii", 8 + len(params), PROTOCOL_3_0) + params)
        header = sock.recv(5)
        assert header[:1] == b"R"
        (length,) = struct.unpack("!i", header[1:5])
        body = b""
        while len(body) < length - 4:
            body += sock.recv(length - 4 - len(body))
        (code,) = struct.unpack("!i", body[:4])
        assert code == 10  # AuthenticationSASL
        assert b"SCRAM-SHA-256\0" in body

    # sslmode=prefer (libpq's default) falls back to plaintext and works.
    with psycopg.connect(own_proxy.dsn("copilot", sslmode="prefer")) as conn:
        assert conn.info.pgconn.ssl_in_use is False
        assert conn.execute("SELECT 'plain'").fetchone() == ("plain",)



def test_privilege_changing_startup_settings_are_refused(proxy: ProxyProcess) -> None:
    """A `role` in the startup packet would switch privileges with no statement for policy
    to see: refused before authentication, naming the setting; harmless settings pass."""
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(proxy.dsn("copilot"), options="-c role=app_owner")
    assert 'the startup setting "role" is not allowed through the proxy' in str(info.value)

    async def via_asyncpg() -> None:
        with pytest.raises(asyncpg.PostgresError) as refused:
            await asyncpg.connect(proxy.dsn("copilot"), server_settings={"session_authorization": "app_owner"})
        assert refused.value.sqlstate == "42501"
        conn = await asyncpg.connect(proxy.dsn("copilot"), server_settings={"statement_timeout": "5000"})
        try:
            assert await conn.fetchval("SHOW statement_timeout") == "5s"
        finally:
            await conn.close()

    asyncio.run(via_asyncpg())
