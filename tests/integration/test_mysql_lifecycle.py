"""A `protocol: mysql` listener's life and faults: what clients see when things go wrong.

Covers, against throwaway MariaDB servers and a real `dbguard serve`: the upstream unreachable
or refusing dbguard's credentials (a clear error, quickly, without the service account), the
server killed or restarted mid-session (an error, not a hang; new sessions work once it is
back), `max_connections` (1040), `idle_timeout`, SIGTERM draining (the running statement
finishes), a malformed packet (that connection only), a client that vanishes mid-result (its
upstream query stops), a client that stops reading (the proxy stops reading too instead of
buffering), and a rules reload that reaches open sessions and the statements they prepared.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mysql.connector
import pymysql
import pymysql.connections
import pymysql.cursors
import pytest

from dbguard.devdb.mariadb import ThrowawayMariaDB
from dbguard.wire.mysql import messages as m
from dbguard.wire.mysql.packets import PacketReader, encode_packets
from tests.integration.harness import ProxyFactory, ProxyProcess, free_port

pytestmark = pytest.mark.integration

MYSQL = {"protocol": "mysql"}


def _connect(proxy: ProxyProcess, user: str = "copilot", **kwargs: Any) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(host=proxy.host, port=proxy.port, user=user, password=proxy.secrets[user],
                           database="app", connect_timeout=10, autocommit=True, **kwargs)


def _scalar(conn: pymysql.connections.Connection[Any], sql: str) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql)
        row = cur.fetchone()
        assert row is not None
        return row[0]


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _running_queries(server: ThrowawayMariaDB, marker: str) -> int:
    rows = server.run_sql(f"SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE '%{marker}%' "
                          "AND id <> CONNECTION_ID()")
    return int(rows[0][0])


def test_upstream_unreachable_gives_an_error_quickly(proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(f"mysql://svc:pw@127.0.0.1:{free_port()}/app", **MYSQL)
    started = time.monotonic()
    with pytest.raises(pymysql.err.OperationalError) as info:
        _connect(proxy)
    assert time.monotonic() - started < 5
    assert info.value.args[0] == 1043
    assert "cannot reach the upstream server" in info.value.args[1]
    assert proxy.alive


def test_wrong_upstream_credentials_do_not_leak(mariadb_server: ThrowawayMariaDB,
                                                proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(mariadb_server.dsn(password="definitely-wrong"), **MYSQL)
    with pytest.raises(pymysql.err.OperationalError) as info:
        _connect(proxy)
    text = str(info.value)
    assert info.value.args[0] == 1043
    assert "rejected dbguard's credentials" in text
    assert mariadb_server.app_user not in text  # the service account is not the client's business
    assert "definitely-wrong" not in text
    assert proxy.alive


def test_server_killed_mid_session_then_back(fresh_mariadb_server: ThrowawayMariaDB,
                                             proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(fresh_mariadb_server.dsn(), **MYSQL)
    conn = _connect(proxy)
    assert _scalar(conn, "SELECT 1") == 1
    fresh_mariadb_server.kill()
    started = time.monotonic()
    with pytest.raises(pymysql.err.OperationalError):
        _scalar(conn, "SELECT 1")
    assert time.monotonic() - started < 5
    conn.close()
    with pytest.raises(pymysql.err.OperationalError) as info:
        _connect(proxy)
    assert info.value.args[0] == 1043
    fresh_mariadb_server.start()
    again = _connect(proxy)
    assert _scalar(again, "SELECT 2") == 2
    again.close()
    assert proxy.alive


def test_server_side_kill_of_the_connection(mariadb_server: ThrowawayMariaDB, proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(mariadb_server.dsn(), **MYSQL)
    conn = _connect(proxy)
    upstream_id = _scalar(conn, "SELECT CONNECTION_ID()")
    mariadb_server.run_sql(f"KILL CONNECTION {int(upstream_id)}")
    with pytest.raises(pymysql.err.OperationalError):
        _scalar(conn, "SELECT 1")
    conn.close()
    with _connect(proxy) as again:
        assert _scalar(again, "SELECT 3") == 3


def test_max_connections_answers_1040(mariadb_server: ThrowawayMariaDB, proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(mariadb_server.dsn(), listener_extra={"max_connections": 2}, **MYSQL)
    first, second = _connect(proxy), _connect(proxy)
    with pytest.raises(pymysql.err.OperationalError) as info:
        _connect(proxy)
    assert info.value.args[0] == 1040
    assert "too many connections" in info.value.args[1]
    first.close()
    assert _wait_for(lambda: _can_connect(proxy))
    assert _scalar(second, "SELECT 4") == 4
    second.close()


def _can_connect(proxy: ProxyProcess) -> bool:
    try:
        _connect(proxy).close()
    except pymysql.err.OperationalError:
        return False
    return True


def test_idle_timeout_closes_idle_sessions_only(mariadb_server: ThrowawayMariaDB,
                                                proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(mariadb_server.dsn(), listener_extra={"idle_timeout": "1s"}, **MYSQL)
    conn = _connect(proxy)
    # A statement running longer than the idle timeout is not idleness.
    with conn.cursor() as cur:
        cur.execute("SELECT SLEEP(1.6), 'done'")
        assert cur.fetchone() == (0, "done")
    time.sleep(0.5)
    assert _scalar(conn, "SELECT 1") == 1  # activity restarted the clock
    time.sleep(1.8)
    with pytest.raises(pymysql.err.OperationalError):
        _scalar(conn, "SELECT 1")
    assert "session.idle_timeout" in proxy.log()


def test_sigterm_drains(mariadb_server: ThrowawayMariaDB, proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(mariadb_server.dsn(), **MYSQL)
    idle = _connect(proxy)
    busy = _connect(proxy)
    result: list[object] = []

    def run_statement() -> None:
        try:
            with busy.cursor() as cur:
                cur.execute("SELECT SLEEP(1.5), 'finished'")
                result.append(cur.fetchone())
        except pymysql.err.MySQLError as exc:
            result.append(exc)

    worker = threading.Thread(target=run_statement)
    worker.start()
    time.sleep(0.5)
    proxy.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(pymysql.err.OperationalError):  # no new connections once draining
        _connect(proxy)
    worker.join(10)
    assert result == [(0, "finished")]  # the running statement completed
    with pytest.raises(pymysql.err.OperationalError):
        _scalar(idle, "SELECT 1")
    assert proxy.proc.wait(10) == 0


def _raw_greeting(proxy: ProxyProcess) -> socket.socket:
    sock = socket.create_connection((proxy.host, proxy.port), timeout=10)
    reader = PacketReader(expected_sequence=0)
    while True:
        reader.feed(sock.recv(65536))
        for packet in reader.packets():
            m.HandshakeV10.decode(packet.payload)
            return sock


def test_malformed_packet_closes_that_connection_only(mariadb_server: ThrowawayMariaDB,
                                                      proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(mariadb_server.dsn(), **MYSQL)
    bystander = _connect(proxy)
    sock = _raw_greeting(proxy)
    sock.sendall(encode_packets(b"\x01\x02garbage that is no handshake response", 1)[0])
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    assert data[4:5] == b"\xff"  # an ERR, then the close
    assert _scalar(bystander, "SELECT 5") == 5
    bystander.close()
    assert proxy.alive


def test_client_vanishing_mid_result_stops_its_upstream_query(mariadb_server: ThrowawayMariaDB,
                                                              proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(mariadb_server.dsn(), **MYSQL)
    marker = "dbguard_vanish_marker"
    conn = _connect(proxy)
    # Drive the query on the logged-in socket, then vanish without COM_QUIT, as a crashed client does.
    sock: socket.socket = vars(conn)["_sock"]
    sql = f"SELECT seq, REPEAT('x', 200) AS {marker} FROM seq_1_to_20000000"
    sock.sendall(encode_packets(bytes((m.Command.QUERY,)) + sql.encode(), 0)[0])
    assert sock.recv(65536)  # the result has started
    assert _wait_for(lambda: _running_queries(mariadb_server, marker) == 1)
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()
    # The proxy closes the upstream connection; the server ends the query at its next write.
    assert _wait_for(lambda: _running_queries(mariadb_server, marker) == 0, timeout=30), proxy.log()[-3000:]
    assert proxy.alive


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_slow_reader_does_not_make_the_proxy_buffer_the_result(mariadb_server: ThrowawayMariaDB,
                                                               proxy_factory: ProxyFactory) -> None:
    """Backpressure: a client that stops reading a ~400 MB result makes the proxy stop reading
    the upstream instead of buffering the result; once it reads again, every row arrives."""
    proxy = proxy_factory(mariadb_server.dsn(), **MYSQL)
    conn = _connect(proxy, cursorclass=pymysql.cursors.SSCursor)
    before = _rss_kib(proxy.proc.pid)
    cur = conn.cursor()
    cur.execute("SELECT seq, REPEAT('y', 400) FROM seq_1_to_1000000")
    assert cur.fetchone() is not None
    time.sleep(3)  # the client reads nothing: the server could have produced it all by now
    grown = _rss_kib(proxy.proc.pid) - before
    assert grown < 32 * 1024, f"proxy RSS grew by {grown} KiB while the client was not reading"
    count, total = 1, 1
    for row in cur:
        count += 1
        total += row[0]
    assert (count, total) == (1_000_000, 1_000_000 * 1_000_001 // 2)
    conn.close()


def test_reload_reaches_open_sessions_and_their_prepared_statements(mariadb_server: ThrowawayMariaDB,
                                                                    proxy_factory: ProxyFactory,
                                                                    tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("defaults: {action: allow}\nrules: []\n", encoding="utf-8")
    proxy = proxy_factory(mariadb_server.dsn(), extra_yaml=f"rules: {rules}\n", **MYSQL)
    mariadb_server.run_sql("CREATE TABLE IF NOT EXISTS reload_t (id INT PRIMARY KEY); "
                           "REPLACE INTO reload_t VALUES (1), (2)", mariadb_server.app_database, as_root=False)
    try:
        conn = mysql.connector.connect(host=proxy.host, port=proxy.port, user="copilot",
                                       password=proxy.secrets["copilot"], database="app", use_pure=True)
        prepared = conn.cursor(prepared=True)
        prepared.execute("SELECT COUNT(*) FROM reload_t WHERE id > ?", (0,))
        assert prepared.fetchall() == [(2,)]
        text = conn.cursor()
        rules.write_text("rules:\n  - id: no-reload-t\n    when: {reads: [app.reload_t]}\n    action: block\n",
                         encoding="utf-8")
        proxy.reload()
        assert _wait_for(lambda: "rules.reloaded" in proxy.log() or "config.reloaded" in proxy.log())
        with pytest.raises(mysql.connector.Error) as info:
            text.execute("SELECT COUNT(*) FROM reload_t")
        assert info.value.errno == 1227
        # The statement prepared under the old rules is refused now too, and the session lives on.
        with pytest.raises(mysql.connector.Error) as info:
            prepared.execute("SELECT COUNT(*) FROM reload_t WHERE id > ?", (0,))
        assert info.value.errno == 1227
        assert "no-reload-t" in str(info.value)
        text.execute("SELECT 6")
        assert text.fetchall() == [(6,)]
        conn.close()
    finally:
        mariadb_server.run_sql("DROP TABLE IF EXISTS reload_t", mariadb_server.app_database, as_root=False)


def _greeting_version(conn: pymysql.connections.Connection[Any]) -> str:
    """The version string of the greeting this connection got (PyMySQL keeps it as is)."""
    return str(vars(conn)["server_version"])


def test_greetings_announce_the_servers_version(mariadb_server: ThrowawayMariaDB, proxy_factory: ProxyFactory,
                                                fresh_mariadb_server: ThrowawayMariaDB) -> None:
    """Drivers pick their dialect from the greeting's version: the listener reads the server's
    at start, or, when the server was down then, from the first login."""
    proxy = proxy_factory(mariadb_server.dsn(), **MYSQL)
    direct = pymysql.connect(**mariadb_server.connect_kwargs())
    real = _greeting_version(direct)
    direct.close()
    first = _connect(proxy)
    assert _greeting_version(first) == real
    assert _scalar(first, "SELECT VERSION()") in real
    first.close()

    fresh_mariadb_server.stop()
    late = proxy_factory(fresh_mariadb_server.dsn(), **MYSQL)
    # The listener reads the version after it starts listening: wait until that has failed,
    # so the server is not back before the listener gave up on it.
    assert _wait_for(lambda: "listener.upstream_version_unknown" in late.log()), late.log()
    fresh_mariadb_server.start()
    before_login = _connect(late)  # its greeting went out before dbguard had seen the server
    assert _greeting_version(before_login) == "5.5.5-10.11.0-MariaDB-dbguard"
    before_login.close()
    after_login = _connect(late)
    assert _greeting_version(after_login) == real
    after_login.close()
