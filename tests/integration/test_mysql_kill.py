"""KILL through a MySQL listener, with the ids clients really have (session.mysql_kill).

A client's connection id comes from dbguard's greeting; the mariadb CLI's Ctrl-C, PyMySQL's
`kill()` and mysql-connector's `cmd_process_kill` all send `KILL [QUERY] <that id>`. Through a
real `dbguard serve` in front of MariaDB: that KILL ends the right server thread; another
identity's KILL of it is an unknown thread (1094), whichever id it uses; COM_PROCESS_KILL works
the same way; and the policy still decides KILL like any statement.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pymysql
import pymysql.connections
import pytest

from dbguard.devdb.mariadb import ThrowawayMariaDB
from dbguard.session.mysql_kill import DBGUARD_ID_FLOOR
from dbguard.wire.mysql import messages as m
from dbguard.wire.mysql.packets import PacketReader, encode_packets
from tests.integration.harness import ProxyFactory, ProxyProcess

pytestmark = pytest.mark.integration

NO_KILL_FOR_AGENTS = """
rules:
  - id: agents-do-not-kill
    description: agents may not end sessions
    when: {identity_kind: agent, features: [system_admin]}
    action: block
"""


def _connect(proxy: ProxyProcess, user: str) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(host=proxy.host, port=proxy.port, user=user, password=proxy.secrets[user],
                           database="app", connect_timeout=10, autocommit=True, ssl_disabled=True)


def _greeting_id(conn: pymysql.connections.Connection[Any]) -> int:
    """The connection id from the greeting (PyMySQL's thread_id(), which its kill() uses)."""
    return int(vars(conn)["server_thread_id"][0])


def _com_process_kill(conn: pymysql.connections.Connection[Any], thread_id: int) -> bytes:
    """Send COM_PROCESS_KILL on a logged-in connection (no client sends it any more); the answer."""
    sock: socket.socket = vars(conn)["_sock"]
    sock.sendall(encode_packets(m.ComProcessKill(thread_id).encode(), 0)[0])
    reader = PacketReader(expected_sequence=1)
    while True:
        reader.feed(sock.recv(65536))
        for packet in reader.packets():
            return packet.payload


class Sleeper:
    """A session running SELECT SLEEP(30) in a thread; `result` is what it got."""

    def __init__(self, proxy: ProxyProcess, user: str) -> None:
        self.conn = _connect(proxy, user)
        self.greeting_id = _greeting_id(self.conn)
        with self.conn.cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
            row = cur.fetchone()
            assert row is not None
            self.server_id = int(row[0])
        self.result: list[object] = []
        self.thread = threading.Thread(target=self._sleep)
        self.thread.start()

    def _sleep(self) -> None:
        try:
            with self.conn.cursor() as cur:
                cur.execute("SELECT SLEEP(30)")
                self.result.append(cur.fetchone())
        except pymysql.err.MySQLError as exc:
            self.result.append(exc.args[0])

    def wait_running(self, server: ThrowawayMariaDB) -> None:
        for _ in range(200):
            rows = server.run_sql(f"SELECT COUNT(*) FROM information_schema.processlist WHERE id = {self.server_id} "
                                  "AND info LIKE 'SELECT SLEEP(30)%'")
            if rows[0][0] == 1:
                return
            threading.Event().wait(0.05)
        raise AssertionError("the sleeping statement never started")

    def finished(self) -> list[object]:
        self.thread.join(20)  # a KILL QUERY that works ends SLEEP(30) at once
        assert not self.thread.is_alive(), "the KILL did not end the statement"
        return self.result


@pytest.fixture
def proxy(mariadb_server: ThrowawayMariaDB, proxy_factory: ProxyFactory, tmp_path: Path) -> ProxyProcess:
    rules = tmp_path / "rules.yaml"
    rules.write_text(NO_KILL_FOR_AGENTS, encoding="utf-8")
    return proxy_factory(mariadb_server.dsn(), extra_yaml=f"rules: {rules}\n", protocol="mysql")


def test_greeting_ids_are_dbguards(proxy: ProxyProcess) -> None:
    conn = _connect(proxy, "alice")
    assert _greeting_id(conn) >= DBGUARD_ID_FLOOR
    conn.close()


def test_kill_query_with_the_greeting_id_ends_the_statement(mariadb_server: ThrowawayMariaDB,
                                                            proxy: ProxyProcess) -> None:
    sleeper = Sleeper(proxy, "alice")
    sleeper.wait_running(mariadb_server)
    other = _connect(proxy, "alice")
    with other.cursor() as cur:
        cur.execute(f"KILL QUERY {sleeper.greeting_id}")  # what the mariadb CLI's Ctrl-C sends
    assert sleeper.finished() == [1317]  # ER_QUERY_INTERRUPTED
    with sleeper.conn.cursor() as cur:  # KILL QUERY leaves the connection
        cur.execute("SELECT 2")
        assert cur.fetchone() == (2,)
    sleeper.conn.close()
    other.close()


def test_another_identity_cannot_kill_it_by_either_id(mariadb_server: ThrowawayMariaDB,
                                                      proxy: ProxyProcess, proxy_factory: ProxyFactory) -> None:
    sleeper = Sleeper(proxy, "alice")
    sleeper.wait_running(mariadb_server)
    intruder = _connect(proxy, "migrator")
    for thread in (sleeper.greeting_id, sleeper.server_id):
        with intruder.cursor() as cur, pytest.raises(pymysql.err.MySQLError) as info:
            cur.execute(f"KILL {thread}")
        assert info.value.args[0] == 1094
    # COM_PROCESS_KILL is mapped and checked the same way.
    answer = _com_process_kill(intruder, sleeper.greeting_id)
    assert m.is_err(answer)
    assert m.ErrPacket.decode(answer).errno == 1094
    owner = _connect(proxy, "alice")
    assert m.is_ok(_com_process_kill(owner, sleeper.greeting_id))
    assert sleeper.finished() != []  # ended: the connection is gone
    intruder.close()
    owner.close()


def test_the_policy_decides_kill_first(mariadb_server: ThrowawayMariaDB, proxy: ProxyProcess) -> None:
    sleeper = Sleeper(proxy, "copilot")
    sleeper.wait_running(mariadb_server)
    agent = _connect(proxy, "copilot")
    with agent.cursor() as cur, pytest.raises(pymysql.err.MySQLError) as info:
        cur.execute(f"KILL QUERY {sleeper.greeting_id}")
    assert info.value.args[0] == 1227
    assert "agents-do-not-kill" in info.value.args[1]
    agent.close()
    owner_human = _connect(proxy, "alice")  # alice is not copilot: an unknown thread to her
    with owner_human.cursor() as cur, pytest.raises(pymysql.err.MySQLError) as info:
        cur.execute(f"KILL QUERY {sleeper.greeting_id}")
    assert info.value.args[0] == 1094
    owner_human.close()
    mariadb_server.run_sql(f"KILL QUERY {sleeper.server_id}")  # the DBA, directly
    assert sleeper.finished() == [1317]  # ER_QUERY_INTERRUPTED
    sleeper.conn.close()
