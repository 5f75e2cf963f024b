"""Faults between the proxy and the database: clients get a proper error, never a hang.

Covers: upstream unreachable (08001), upstream restarted or a backend terminated mid-session
(57P01 relayed, the session closes, new sessions work), wrong service credentials upstream
(08004 without leaking the service account), a database that does not exist (3D000 relayed),
and a client that disconnects mid-result releasing its upstream backend.
"""

from __future__ import annotations

import socket
import time

import psycopg
import pytest
from psycopg import errors

from dbguard.devdb.postgres import ThrowawayPostgres
from dbguard.wire.pg import messages as m
from dbguard.wire.pg.auth import ScramClientExchange
from dbguard.wire.pg.framing import Frame, MessageScanner
from tests.integration.harness import ProxyFactory, ProxyProcess, free_port


def _backends(server: ThrowawayPostgres, query_like: str) -> int:
    out = server.run_sql(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app_owner' "
        f"AND query LIKE '{query_like}' AND pid <> pg_backend_pid()"
    )
    return int(out.strip())


def test_upstream_unreachable_gives_08001_quickly(proxy_factory: ProxyFactory) -> None:
    dead_port = free_port()
    proxy = proxy_factory(f"postgresql://svc:pw@127.0.0.1:{dead_port}/app?sslmode=disable")
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(proxy.dsn("copilot"), connect_timeout=10)
    assert time.monotonic() - started < 5
    assert "dbguard: could not connect to the database server" in str(info.value)
    assert proxy.alive


def test_backend_terminated_mid_session(fresh_pg_server: ThrowawayPostgres, proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(fresh_pg_server.dsn(sslmode="disable"))
    conn = psycopg.connect(proxy.dsn("copilot"), autocommit=True)
    assert conn.execute("SELECT 1").fetchone() == (1,)
    fresh_pg_server.run_sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE usename = 'app_owner' AND pid <> pg_backend_pid()"
    )
    with pytest.raises(psycopg.OperationalError) as info:
        conn.execute("SELECT 1")
    assert "terminating connection due to administrator command" in str(info.value)
    conn.close()
    with psycopg.connect(proxy.dsn("copilot")) as again:
        assert again.execute("SELECT 2").fetchone() == (2,)


def test_upstream_restart_then_new_sessions_work(fresh_pg_server: ThrowawayPostgres,
                                                 proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(fresh_pg_server.dsn(sslmode="disable"))
    conn = psycopg.connect(proxy.dsn("copilot"), autocommit=True)
    conn.execute("SELECT 1")
    fresh_pg_server.restart()
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    assert time.monotonic() - started < 5
    conn.close()
    with psycopg.connect(proxy.dsn("copilot")) as again:
        assert again.execute("SELECT count(*) FROM customers").fetchone() == (50,)
    assert proxy.alive


def test_wrong_upstream_credentials_do_not_leak(pg_server: ThrowawayPostgres, proxy_factory: ProxyFactory) -> None:
    upstream = pg_server.dsn(password="definitely-wrong", sslmode="disable")
    proxy = proxy_factory(upstream)
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(proxy.dsn("copilot"))
    text = str(info.value)
    assert "rejected dbguard's credentials" in text
    assert "app_owner" not in text  # the service account is not the client's business
    assert "definitely-wrong" not in text


def test_unknown_database_is_relayed(proxy: ProxyProcess) -> None:
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(proxy.dsn("copilot", database="no_such_db"))
    assert 'database "no_such_db" does not exist' in str(info.value)


def _raw_login(proxy: ProxyProcess, identity: str = "copilot") -> socket.socket:
    """Authenticate through the proxy with a raw socket, return it at ReadyForQuery."""
    sock = socket.create_connection((proxy.host, proxy.port), timeout=10)
    sock.sendall(m.StartupMessage(196608, {"user": identity, "database": "app"}).encode())
    scanner = MessageScanner(frozenset(bytes([i]) for i in range(256)))
    scram: ScramClientExchange | None = None
    while True:
        scanner.feed(sock.recv(65536))
        for seg in scanner.segments():
            assert isinstance(seg, Frame)  # every type is inspected
            msg = m.decode_backend(seg.type, seg.payload)
            if isinstance(msg, m.Authentication) and msg.code == m.AUTH_SASL:
                scram = ScramClientExchange(identity, proxy.secrets[identity], list(msg.mechanisms))
                sock.sendall(m.encode_sasl_initial_response(scram.mechanism, scram.client_first()))
            elif isinstance(msg, m.Authentication) and msg.code == m.AUTH_SASL_CONTINUE:
                assert scram is not None
                sock.sendall(m.PasswordLike(scram.client_final(msg.data)).encode())
            elif isinstance(msg, m.ErrorOrNotice) and not msg.notice:
                raise AssertionError(f"login failed: {msg.fields}")
            elif isinstance(msg, m.ReadyForQuery):
                return sock


def test_client_disconnect_mid_result_releases_backend(pg_server: ThrowawayPostgres, proxy: ProxyProcess) -> None:
    sock = _raw_login(proxy)
    marker = "dbguard_disconnect_marker"
    sql = f"SELECT g, repeat('x', 200) AS {marker} FROM generate_series(1, 20000000) g"
    sock.sendall(m.Query(sql.encode()).encode())
    received = 0
    while received < 1_000_000:
        chunk = sock.recv(65536)
        assert chunk
        received += len(chunk)
    sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _backends(pg_server, f"%{marker}%") == 0:
            break
        time.sleep(0.2)
    assert _backends(pg_server, f"%{marker}%") == 0
    with psycopg.connect(proxy.dsn("copilot")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_client_half_closing_mid_result_releases_backend(pg_server: ThrowawayPostgres, proxy: ProxyProcess) -> None:
    """A client that shuts its side down (FIN) but keeps the socket and stops reading: the
    proxy must not hold the backend while its unread result waits for a reader."""
    sock = _raw_login(proxy)
    marker = "dbguard_half_close_marker"
    sql = f"SELECT g, repeat('x', 200) AS {marker} FROM generate_series(1, 20000000) g"
    sock.sendall(m.Query(sql.encode()).encode())
    assert sock.recv(65536)
    sock.shutdown(socket.SHUT_WR)  # FIN; the descriptor stays open and nothing more is read
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and _backends(pg_server, f"%{marker}%") != 0:
        time.sleep(0.2)
    assert _backends(pg_server, f"%{marker}%") == 0
    sock.close()


def test_refused_replication_connection(proxy: ProxyProcess) -> None:
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(proxy.dsn("copilot"), replication="database")
    assert "replication connections are not supported" in str(info.value)


def test_server_error_keeps_session(proxy: ProxyProcess) -> None:
    with psycopg.connect(proxy.dsn("copilot")) as conn:
        with pytest.raises(errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        conn.rollback()
        assert conn.execute("SELECT 3").fetchone() == (3,)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slow_reader_does_not_make_the_proxy_buffer_the_result(pg_server: ThrowawayPostgres,
                                                               proxy: ProxyProcess) -> None:
    """Backpressure: a client that stops reading a ~400 MB result makes the proxy stop reading
    the upstream, instead of buffering the result in memory."""
    before = _rss_kib(proxy.proc.pid)
    sock = _raw_login(proxy)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sql = "SELECT g, repeat('y', 400) AS dbguard_slow_reader FROM generate_series(1, 1000000) g"
    sock.sendall(m.Query(sql.encode()).encode())
    first = sock.recv(65536)  # the result has started
    assert first
    time.sleep(3)  # the client reads nothing: the server could have produced it all by now
    grown = _rss_kib(proxy.proc.pid) - before
    assert grown < 32 * 1024, f"proxy RSS grew by {grown} KiB while the client was not reading"
    # Reading resumes and the whole result arrives intact, ending in ReadyForQuery.
    scanner = MessageScanner(frozenset({b"Z", b"C", b"E"}))
    scanner.feed(first)
    tail = [s for s in scanner.segments() if isinstance(s, Frame)]
    sock.settimeout(60)
    while not any(f.type == b"Z" for f in tail):
        chunk = sock.recv(1 << 20)
        assert chunk, "proxy closed the connection"
        scanner.feed(chunk)
        tail += [s for s in scanner.segments() if isinstance(s, Frame)]
    assert [f.type for f in tail] == [b"C", b"Z"]
    assert tail[0].payload == b"SELECT 1000000\x00"
    sock.close()
