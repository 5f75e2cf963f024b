# tests/integration/test_throwaway_mariadb.py — the throwaway MariaDB fixture, for real.
# Owns: proof that dbguard.devdb.mariadb gives what the MySQL side of the suite will rely on:
# password login for a non-root app owner confined to `app`, stop/start/kill keeping data on the
# same port, DSNs the mariadb CLI accepts, independent servers, ed25519 users and optional TLS.
# Talks to the servers with PyMySQL and the mariadb CLI (the CLI for ed25519: no PyNaCl here).
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql
import pytest

from dbguard.devdb import DevDbError, ThrowawayMariaDB, find_mariadb_binaries

pytestmark = pytest.mark.integration

ER_ACCESS_DENIED = 1045
ER_DBACCESS_DENIED = 1044
ER_TABLEACCESS_DENIED = 1142
CR_CONN_HOST_ERROR = 2003


def connect(server: ThrowawayMariaDB, **overrides: Any) -> Any:
    return pymysql.connect(**{**server.connect_kwargs(), **overrides})


def query(server: ThrowawayMariaDB, sql: str, **overrides: Any) -> list[tuple[Any, ...]]:
    conn = connect(server, **overrides)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return [tuple(row) for row in cursor.fetchall()]
    finally:
        conn.close()


def mariadb_cli(server: ThrowawayMariaDB, dsn: str, sql: str) -> subprocess.CompletedProcess[str]:
    """Run the mariadb CLI with the DSN's credentials (never reading /etc/mysql option files)."""
    parts = urlsplit(dsn)
    assert parts.hostname is not None
    assert parts.port is not None
    command = [
        str(server.client_binary("mariadb")),
        "--no-defaults",
        "--batch",
        "--skip-column-names",
        f"--host={parts.hostname}",
        f"--port={parts.port}",
        "--protocol=TCP",
        f"--user={unquote(parts.username or '')}",
        f"--execute={sql}",
    ]
    database = parts.path.lstrip("/")
    if database:
        command.append(f"--database={unquote(database)}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYSQL")}
    env["MYSQL_PWD"] = unquote(parts.password or "")
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=30, check=False)


# ----------------------------------------------------------------------------- binaries, DSNs


def test_binaries_are_found() -> None:
    server_bin, install_db = find_mariadb_binaries()
    assert server_bin.name == "mariadbd"
    assert install_db.name == "mariadb-install-db"


def test_dsn_and_connect_kwargs(mariadb_server: ThrowawayMariaDB) -> None:
    server = mariadb_server
    assert server.dsn() == (
        f"mysql://{server.app_user}:{server.app_password}@127.0.0.1:{server.port}/app"
    )
    assert server.dsn(user="root", database="").endswith(f"@127.0.0.1:{server.port}/")
    assert server.dsn(user="root").startswith(f"mysql://root:{server.root_password}@")
    assert "database" not in server.connect_kwargs(database="")
    assert server.port != 3306
    kwargs = server.connect_kwargs()
    assert kwargs["host"] == "127.0.0.1"
    assert kwargs["user"] == "app_owner"
    assert kwargs["database"] == "app"


def test_run_sql_returns_rows_of_every_statement(mariadb_server: ThrowawayMariaDB) -> None:
    rows = mariadb_server.run_sql("SET @x = 41; SELECT @x + 1; SELECT 'b' UNION ALL SELECT 'c'")
    assert rows == [(42,), ("b",), ("c",)]
    with pytest.raises(DevDbError, match="1064"):
        mariadb_server.run_sql("SELEC 1")


# ----------------------------------------------------------------------------- accounts


def test_app_user_logs_in_with_its_password_only(mariadb_server: ThrowawayMariaDB) -> None:
    server = mariadb_server
    assert query(server, "SELECT CURRENT_USER(), DATABASE()") == [("app_owner@%", "app")]
    with pytest.raises(pymysql.err.OperationalError) as denied:
        connect(server, password=server.app_password + "x")
    assert denied.value.args[0] == ER_ACCESS_DENIED


def test_root_has_a_password_on_tcp(mariadb_server: ThrowawayMariaDB) -> None:
    server = mariadb_server
    rows = query(server, "SELECT CURRENT_USER()", user="root", password=server.root_password)
    assert rows == [("root@127.0.0.1",)]
    with pytest.raises(pymysql.err.OperationalError) as denied:
        connect(server, user="root", password="")
    assert denied.value.args[0] == ER_ACCESS_DENIED


def test_app_user_owns_app_and_nothing_else(mariadb_server: ThrowawayMariaDB) -> None:
    server = mariadb_server
    try:
        server.run_sql(
            "CREATE TABLE owned (id INT PRIMARY KEY); INSERT INTO owned VALUES (7)", as_root=False
        )
        assert server.run_sql("SELECT id FROM owned", as_root=False) == [(7,)]
        with pytest.raises(pymysql.err.OperationalError) as denied:
            query(server, "CREATE TABLE mysql.not_yours (id INT)")
        assert denied.value.args[0] in (ER_TABLEACCESS_DENIED, ER_DBACCESS_DENIED)
    finally:
        server.run_sql("DROP TABLE IF EXISTS app.owned")


def test_unsupported_plugin_is_named(mariadb_server: ThrowawayMariaDB) -> None:
    with pytest.raises(DevDbError, match="no caching_sha2_password"):
        mariadb_server.create_user("sha2_user", "pw", "caching_sha2_password")  # type: ignore[arg-type]


def test_ed25519_user_logs_in_with_the_cli(mariadb_server: ThrowawayMariaDB) -> None:
    server = mariadb_server
    server.create_user("ed_user", "ed-secret", "ed25519", grant_database="app")
    try:
        plugins = server.run_sql("SELECT plugin FROM mysql.user WHERE User = 'ed_user'")
        assert plugins == [("ed25519",)]
        ok = mariadb_cli(server, server.dsn(user="ed_user"), "SELECT CURRENT_USER(), DATABASE()")
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.split() == ["ed_user@%", "app"]
        bad = mariadb_cli(server, server.dsn(user="ed_user", password="wrong"), "SELECT 1")
        assert bad.returncode != 0
        assert str(ER_ACCESS_DENIED) in bad.stderr
    finally:
        server.run_sql("DROP USER IF EXISTS 'ed_user'@'%'")


def test_mariadb_cli_connects_with_the_dsn(mariadb_server: ThrowawayMariaDB) -> None:
    result = mariadb_cli(mariadb_server, mariadb_server.dsn(), "SELECT CURRENT_USER(), DATABASE()")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["app_owner@%", "app"]


# ----------------------------------------------------------------------------- lifecycle


def test_stop_refuses_connections_and_start_keeps_data(fresh_mariadb_server: ThrowawayMariaDB) -> None:
    server = fresh_mariadb_server
    port = server.port
    server.run_sql("CREATE TABLE kept (v VARCHAR(10)); INSERT INTO kept VALUES ('still')", as_root=False)
    server.stop()
    assert not server.is_running
    with pytest.raises(pymysql.err.OperationalError) as refused:
        connect(server)
    assert refused.value.args[0] == CR_CONN_HOST_ERROR
    with pytest.raises(DevDbError, match="not running"):
        server.run_sql("SELECT 1")
    server.start()
    assert server.port == port
    assert query(server, "SELECT v FROM kept") == [("still",)]
    server.restart()
    assert query(server, "SELECT v FROM kept") == [("still",)]


def test_kill_then_start_recovers(fresh_mariadb_server: ThrowawayMariaDB) -> None:
    server = fresh_mariadb_server
    server.run_sql("CREATE TABLE crash (id INT) ENGINE=InnoDB; INSERT INTO crash VALUES (1)", as_root=False)
    pid = server.pid
    assert pid is not None
    server.kill()
    assert not server.is_running
    assert not Path(f"/proc/{pid}").exists()  # SIGKILLed and reaped
    server.start()
    assert query(server, "SELECT id FROM crash") == [(1,)]


def test_two_servers_are_independent(
    mariadb_server: ThrowawayMariaDB, fresh_mariadb_server: ThrowawayMariaDB
) -> None:
    assert mariadb_server.port != fresh_mariadb_server.port
    assert mariadb_server.root != fresh_mariadb_server.root
    fresh_mariadb_server.run_sql("CREATE TABLE only_here (id INT)", as_root=False)
    assert fresh_mariadb_server.run_sql("SHOW TABLES", as_root=False) == [("only_here",)]
    assert mariadb_server.run_sql("SHOW TABLES", as_root=False) == []


def test_close_removes_everything() -> None:
    server = ThrowawayMariaDB()
    started = time.monotonic()
    with server:
        elapsed = time.monotonic() - started
        root = server.root
        assert server.run_sql("SELECT 1") == [(1,)]
    assert not root.exists()
    assert not server.is_running
    assert elapsed < 30, f"start took {elapsed:.1f}s"
    with pytest.raises(DevDbError, match="closed"):
        server.start()
    server.close()  # idempotent


def test_ssl_server_offers_verified_tls() -> None:
    with ThrowawayMariaDB(ssl=True) as server:
        ssl = {"ca": str(server.ca_path), "check_hostname": True}
        rows = query(server, "SHOW SESSION STATUS LIKE 'Ssl_cipher'", ssl=ssl)
        assert rows[0][1], rows
        assert server.ca_path.is_file()
