"""dbguard's own login to MariaDB: the service account's auth plugin and TLS per `sslmode`.

A real `dbguard serve` logs in upstream as an ed25519 account, and over TLS to a MariaDB that
offers it: verified against the server's CA (the session really is encrypted: the server's
Ssl_cipher), refused with a clear error against the wrong CA, and refused when `sslmode=require`
meets a server without TLS. The client's side is plain throughout; it never sees any of this.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pymysql.connections
import pytest

from dbguard.devdb.certs import make_self_signed_cert
from dbguard.devdb.mariadb import ThrowawayMariaDB
from tests.integration.conftest import start_mariadb_server
from tests.integration.harness import ProxyFactory, ProxyProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_server() -> Iterator[ThrowawayMariaDB]:
    server = start_mariadb_server(ssl=True)
    try:
        yield server
    finally:
        server.close()


def _connect(proxy: ProxyProcess) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(host=proxy.host, port=proxy.port, user="copilot", password=proxy.secrets["copilot"],
                           database="app", connect_timeout=10, ssl_disabled=True)


def _one(conn: pymysql.connections.Connection[Any], sql: str) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()


def test_an_ed25519_service_account(mariadb_server: ThrowawayMariaDB, proxy_factory: ProxyFactory) -> None:
    mariadb_server.create_user("svc_ed", "svc-ed-secret", "ed25519", grant_database="app")
    try:
        proxy = proxy_factory(mariadb_server.dsn(user="svc_ed"), protocol="mysql")
        conn = _connect(proxy)
        assert _one(conn, "SELECT CURRENT_USER()") == ("svc_ed@%",)
        conn.close()
    finally:
        mariadb_server.run_sql("DROP USER IF EXISTS 'svc_ed'@'%'")


def test_verified_tls_upstream(tls_server: ThrowawayMariaDB, proxy_factory: ProxyFactory) -> None:
    dsn = f"{tls_server.dsn()}?sslmode=verify-full&sslrootcert={tls_server.ca_path}"
    proxy = proxy_factory(dsn, protocol="mysql")
    conn = _connect(proxy)
    cipher = _one(conn, "SHOW SESSION STATUS LIKE 'Ssl_cipher'")
    assert cipher is not None
    assert cipher[1], "the upstream session is not encrypted"
    assert _one(conn, "SELECT 40 + 2") == (42,)
    conn.close()


def test_sslmode_disable_stays_plain(tls_server: ThrowawayMariaDB, proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(f"{tls_server.dsn()}?sslmode=disable", protocol="mysql")
    conn = _connect(proxy)
    assert _one(conn, "SHOW SESSION STATUS LIKE 'Ssl_cipher'") == ("Ssl_cipher", "")
    conn.close()


def test_an_upstream_certificate_from_another_ca_is_refused(tls_server: ThrowawayMariaDB,
                                                            proxy_factory: ProxyFactory, tmp_path: Path) -> None:
    other_ca = make_self_signed_cert(tmp_path / "other-pki").ca_path
    proxy = proxy_factory(f"{tls_server.dsn()}?sslmode=verify-full&sslrootcert={other_ca}", protocol="mysql")
    with pytest.raises(pymysql.err.OperationalError) as info:
        _connect(proxy)
    assert info.value.args[0] == 1043
    assert proxy.alive


def test_sslmode_require_against_a_server_without_tls(mariadb_server: ThrowawayMariaDB,
                                                      proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory(f"{mariadb_server.dsn()}?sslmode=require", protocol="mysql")
    with pytest.raises(pymysql.err.OperationalError) as info:
        _connect(proxy)
    assert info.value.args[0] == 1043
    assert proxy.alive
