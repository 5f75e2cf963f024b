"""`dbguard serve` with a `protocol: mysql` listener in front of a throwaway MariaDB.

PyMySQL and the mariadb CLI connect through a real `dbguard serve` subprocess: login with both
client auth plugins and wrong secrets, a round trip with parameters (PyMySQL interpolates them,
so these are COM_QUERY), multi-statements, refusals by rule and of unparseable text (the
connection stays usable), a BLOB larger than one 16 MiB packet, and the CLI.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pymysql
import pymysql.connections
import pytest
from pymysql.constants import CLIENT

from dbguard.devdb.mariadb import ThrowawayMariaDB
from tests.integration.harness import ProxyProcess
from tests.integration.mysql_harness import AnswersWithNative, AnswersWithSha256, connect, serve_in_front_of

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mysql_proxy(mariadb_server: ThrowawayMariaDB) -> Iterator[ProxyProcess]:
    # Room for the 20 MB statement (the server default is 16 MiB); new sessions see it.
    root = pymysql.connect(**mariadb_server.connect_kwargs(user="root"))
    with root.cursor() as cur:
        cur.execute("SELECT @@GLOBAL.max_allowed_packet")
        row = cur.fetchone()
        assert row is not None
        original_max_packet = int(row[0])
        cur.execute("SET GLOBAL max_allowed_packet = 67108864")
    root.close()
    try:
        yield from serve_in_front_of(mariadb_server)
    finally:
        # The server is shared by the session: leave `app` empty and the setting as found.
        root = pymysql.connect(**mariadb_server.connect_kwargs(user="root"))
        with root.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS app.t, app.blobs")
            cur.execute(f"SET GLOBAL max_allowed_packet = {original_max_packet}")
        root.close()


def _select_one(conn: pymysql.connections.Connection[Any]) -> Any:
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        return cur.fetchone()


def test_login_with_both_plugins_and_wrong_secrets(mysql_proxy: ProxyProcess) -> None:
    # PyMySQL's default: the greeting's plugin (caching_sha2_password, fast path).
    conn = connect(mysql_proxy)
    assert _select_one(conn) == (1,)
    conn.close()
    conn = connect(mysql_proxy, "alice")
    assert _select_one(conn) == (1,)
    conn.close()
    # mysql_native_password, answered directly.
    native = AnswersWithNative(host=mysql_proxy.host, port=mysql_proxy.port, user="copilot",
                          password="copilot-secret", database="app", connect_timeout=10)
    assert _select_one(native) == (1,)
    native.close()
    # A plugin the proxy does not take: switched to caching_sha2_password.
    switched = AnswersWithSha256(host=mysql_proxy.host, port=mysql_proxy.port, user="copilot",
                                  password="copilot-secret", database="app", connect_timeout=10)
    assert _select_one(switched) == (1,)
    switched.close()
    for user in ("copilot", "nobody"):
        with pytest.raises(pymysql.err.OperationalError) as info:
            connect(mysql_proxy, user, "wrong-secret")
        assert info.value.args[0] == 1045
    with pytest.raises(pymysql.err.OperationalError) as info:
        AnswersWithNative(host=mysql_proxy.host, port=mysql_proxy.port, user="copilot", password="nope",
                     database="app", connect_timeout=10)
    assert info.value.args[0] == 1045


def test_round_trip_multi_statements_and_refusals(mysql_proxy: ProxyProcess,
                                                  mariadb_server: ThrowawayMariaDB) -> None:
    conn = connect(mysql_proxy, client_flag=CLIENT.MULTI_STATEMENTS, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS t (id INT PRIMARY KEY, name VARCHAR(50))")
        cur.execute("DELETE FROM t WHERE id IN (%s, %s)", (1, 2))
        cur.execute("INSERT INTO t (id, name) VALUES (%s, %s), (%s, %s)", (1, "one", 2, "it's two"))
        cur.execute("SELECT name FROM t WHERE id = %s", (2,))
        assert cur.fetchall() == (("it's two",),)

        cur.execute("SELECT 1; SELECT id FROM t WHERE id = 1")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset()
        assert cur.fetchall() == ((1,),)
        assert not cur.nextset()

        with pytest.raises(pymysql.err.MySQLError) as info:
            cur.execute("DROP TABLE t")
        assert info.value.args[0] == 1227
        assert str(info.value.args[1]).startswith("dbguard: blocked by rule no-drop")

        with pytest.raises(pymysql.err.MySQLError) as info:
            cur.execute("SELEC nonsense FROM")
        assert info.value.args[0] == 1227

        # A multi-statement whose second part is refused: nothing of it runs.
        with pytest.raises(pymysql.err.MySQLError) as info:
            cur.execute("SELECT 1; DROP TABLE t")
        assert info.value.args[0] == 1227

        cur.execute("SELECT COUNT(*) FROM t")
        assert cur.fetchone() == (2,)
    conn.close()

    direct = pymysql.connect(**mariadb_server.connect_kwargs())
    with direct.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'app' "
                    "AND table_name = 't'")
        assert cur.fetchone() == (1,)
    direct.close()


def test_blob_across_the_16_mib_packet_boundary(mysql_proxy: ProxyProcess) -> None:
    """A 20 MB BLOB goes up inline in one INSERT (PyMySQL interpolates parameters: ~40 MB of
    escaped text in three packets) and comes back across the 16 MiB packet boundary. Long
    literals are lexed but not parsed; a statement with more than 1 Mi characters outside its
    literals is still refused as unanalysable, and the connection stays usable."""
    size = 20 * 1024 * 1024
    blob = (bytes(range(256)) * (size // 256 + 1))[:size]
    conn = connect(mysql_proxy, autocommit=True, max_allowed_packet=64 * 1024 * 1024)
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS blobs (id INT PRIMARY KEY, data LONGBLOB)")
        cur.execute("DELETE FROM blobs WHERE id IN (1, 2)")
        cur.execute("INSERT INTO blobs (id, data) VALUES (1, %s)", (blob,))
        cur.execute("SELECT data FROM blobs WHERE id = 1")
        row = cur.fetchone()
        assert row is not None
        assert bytes(row[0]) == blob

        ids = ", ".join(str(i) for i in range(300_000))  # ~2 MB of SQL that is not a literal
        with pytest.raises(pymysql.err.MySQLError) as info:
            cur.execute(f"INSERT INTO blobs (id, data) SELECT 2, 'x' FROM DUAL WHERE 2 IN ({ids})")
        assert info.value.args[0] == 1227
        assert "statement_longer_than_1048576_characters" in info.value.args[1]
        cur.execute("SELECT COUNT(*) FROM blobs WHERE id = 2")
        assert cur.fetchone() == (0,)
        # A long literal hidden where its text would matter fails closed.
        with pytest.raises(pymysql.err.MySQLError) as info:
            cur.execute("PREPARE p FROM %s", ("DROP TABLE blobs; -- " + "x" * 70_000,))
        assert info.value.args[0] == 1227
    conn.close()


def test_mariadb_cli_through_the_proxy(mysql_proxy: ProxyProcess, mariadb_server: ThrowawayMariaDB) -> None:
    cli = mariadb_server.client_binary("mariadb")
    result = subprocess.run(
        [str(cli), "--no-defaults", "--protocol=TCP", "-h", mysql_proxy.host, "-P", str(mysql_proxy.port),
         "-u", "copilot", "-pcopilot-secret", "--skip-ssl", "-N", "-B", "app", "-e", "SELECT 1"],
        capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr + mysql_proxy.log()[-3000:]
    assert result.stdout.strip() == "1"


def test_use_changes_what_unqualified_names_mean(mysql_proxy: ProxyProcess,
                                                 mariadb_server: ThrowawayMariaDB) -> None:
    """After `USE`, the gate resolves unqualified names in the new database (a rule on
    `app.*` must not be dodged by switching databases)."""
    conn = connect(mysql_proxy, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("USE information_schema")
        cur.execute("SELECT COUNT(*) FROM tables WHERE table_schema = 'app'")
        row = cur.fetchone()
        assert row is not None
        assert row[0] >= 1
        with pytest.raises(pymysql.err.MySQLError) as info:
            cur.execute("DROP TABLE app.t")
        assert info.value.args[0] == 1227
    conn.close()
