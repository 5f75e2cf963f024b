"""TLS towards clients and towards the upstream, and every upstream authentication method.

Covers: the listener terminating TLS (verify-full against its CA, SCRAM-SHA-256-PLUS channel
binding), `require: true` refusing plaintext, the upstream reached over TLS with sslmode
verify-full (the server sees an SSL connection) and refused when the server has no TLS but the
DSN requires it, and upstream auth with SCRAM, md5, cleartext password and trust.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from dbguard.devdb.certs import CertPair, make_self_signed_cert
from dbguard.devdb.postgres import HbaMethod
from tests.integration.conftest import PgServerFactory
from tests.integration.harness import ProxyFactory


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPair:
    return make_self_signed_cert(tmp_path_factory.mktemp("certs"))


def _tls_listener(certs: CertPair, require: bool) -> dict[str, object]:
    return {"tls": f"{{cert: {certs.cert_path}, key: {certs.key_path}, require: {str(require).lower()}}}"}


def test_client_tls_verify_full_and_channel_binding(pg_server_factory: PgServerFactory, proxy_factory: ProxyFactory,
                                                    certs: CertPair) -> None:
    server = pg_server_factory(seed=False)
    proxy = proxy_factory(server.dsn(sslmode="disable"), listener_extra=_tls_listener(certs, require=False))
    dsn = proxy.dsn("copilot", sslmode="verify-full", sslrootcert=str(certs.ca_path))
    with psycopg.connect(dsn) as conn:
        assert conn.info.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)
    # SCRAM-SHA-256-PLUS: the client insists on channel binding to the proxy's certificate.
    with psycopg.connect(dsn + "&channel_binding=require") as conn:
        assert conn.execute("SELECT 2").fetchone() == (2,)
    # Plain connections still work when TLS is offered but not required.
    with psycopg.connect(proxy.dsn("copilot", sslmode="disable")) as conn:
        assert not conn.info.pgconn.ssl_in_use


def test_client_tls_required_refuses_plaintext(pg_server_factory: PgServerFactory, proxy_factory: ProxyFactory,
                                               certs: CertPair) -> None:
    server = pg_server_factory(seed=False)
    proxy = proxy_factory(server.dsn(sslmode="disable"), listener_extra=_tls_listener(certs, require=True))
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(proxy.dsn("copilot", sslmode="disable"))
    assert "requires TLS" in str(info.value)
    with psycopg.connect(proxy.dsn("copilot", sslmode="require")) as conn:
        assert conn.info.pgconn.ssl_in_use


def test_upstream_tls_verify_full(pg_server_factory: PgServerFactory, proxy_factory: ProxyFactory,
                                  certs: CertPair) -> None:
    server = pg_server_factory(seed=False, ssl_cert=certs.cert_path, ssl_key=certs.key_path, hba_ssl_only=True)
    upstream = server.dsn(sslmode="verify-full", sslrootcert=str(certs.ca_path)).replace("127.0.0.1", "localhost")
    proxy = proxy_factory(upstream)
    with psycopg.connect(proxy.dsn("copilot")) as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row == (True,)


def test_upstream_tls_required_but_unavailable(pg_server_factory: PgServerFactory,
                                               proxy_factory: ProxyFactory) -> None:
    server = pg_server_factory(seed=False)
    proxy = proxy_factory(server.dsn(sslmode="require"))
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(proxy.dsn("copilot"))
    assert "does not support TLS" in str(info.value)


def test_upstream_tls_wrong_ca_is_refused(pg_server_factory: PgServerFactory, proxy_factory: ProxyFactory,
                                          certs: CertPair, tmp_path: Path) -> None:
    other = make_self_signed_cert(tmp_path / "other")
    server = pg_server_factory(seed=False, ssl_cert=certs.cert_path, ssl_key=certs.key_path)
    proxy = proxy_factory(server.dsn(sslmode="verify-ca", sslrootcert=str(other.ca_path)))
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(proxy.dsn("copilot"))
    assert "TLS handshake failed" in str(info.value)


UPSTREAM_METHODS: list[HbaMethod] = ["md5", "password", "trust", "scram-sha-256"]


@pytest.mark.parametrize("method", UPSTREAM_METHODS)
def test_upstream_auth_methods(pg_server_factory: PgServerFactory, proxy_factory: ProxyFactory,
                               method: HbaMethod) -> None:
    server = pg_server_factory(seed=False)
    server.create_role("svc_" + method.replace("-", "_"), "svc-pass",
                       password_encryption="md5" if method == "md5" else "scram-sha-256")
    role = "svc_" + method.replace("-", "_")
    server.set_hba_method(role, method)
    proxy = proxy_factory(server.dsn(user=role, password="svc-pass", database="postgres", sslmode="disable"))
    with psycopg.connect(proxy.dsn("copilot", database="postgres")) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role,)
