"""Unit tests for dbguard.devdb.certs: the throwaway CA and server cert work in real TLS."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from dbguard.devdb.certs import CertPair, make_self_signed_cert


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> CertPair:
    return make_self_signed_cert(tmp_path_factory.mktemp("certs") / "new" / "dir")


def _handshake(pair: CertPair, server_hostname: str) -> str:
    """A real TLS handshake over a socketpair: our server cert, a verify-full client.

    Returns the negotiated TLS version; raises the client's ssl error when verification fails.
    """
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(pair.cert_path, pair.key_path)
    client_context = ssl.create_default_context(cafile=str(pair.ca_path))
    assert client_context.verify_mode == ssl.CERT_REQUIRED
    assert client_context.check_hostname

    client_sock, server_sock = socket.socketpair()
    client_sock.settimeout(10)
    server_sock.settimeout(10)
    server_errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server_context.wrap_socket(server_sock, server_side=True) as tls:
                tls.sendall(tls.recv(5).upper())
        except (ssl.SSLError, OSError) as exc:  # the client gave up: expected in failure tests
            server_errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with client_context.wrap_socket(client_sock, server_hostname=server_hostname) as tls:
            tls.sendall(b"hello")
            assert tls.recv(5) == b"HELLO"
            version = tls.version()
            assert version is not None
            return version
    finally:
        client_sock.close()
        thread.join(10)
        server_sock.close()


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1", "::1"])
def test_verify_full_handshake_succeeds(pair: CertPair, hostname: str) -> None:
    assert _handshake(pair, hostname).startswith("TLS")


@pytest.mark.parametrize("hostname", ["example.com", "127.0.0.2"])
def test_verify_full_rejects_other_hosts(pair: CertPair, hostname: str) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(pair, hostname)


def test_another_ca_is_not_trusted(pair: CertPair, tmp_path: Path) -> None:
    other = make_self_signed_cert(tmp_path)
    mixed = CertPair(cert_path=pair.cert_path, key_path=pair.key_path, ca_path=other.ca_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(mixed, "localhost")


def test_files_and_permissions(pair: CertPair) -> None:
    assert {pair.cert_path.name, pair.key_path.name, pair.ca_path.name} == {
        "server.crt",
        "server.key",
        "ca.crt",
    }
    assert stat.S_IMODE(pair.key_path.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in pair.key_path.read_bytes()
    for public in (pair.cert_path, pair.ca_path):
        assert b"PRIVATE" not in public.read_bytes()


def test_key_mode_is_fixed_on_an_existing_file(tmp_path: Path) -> None:
    key = tmp_path / "server.key"
    key.write_text("old")
    key.chmod(0o666)
    make_self_signed_cert(tmp_path)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_certificate_contents(tmp_path: Path) -> None:
    pair = make_self_signed_cert(
        tmp_path, common_name="db.test", hosts=["db.test", "10.1.2.3", "fe80::1"]
    )
    server = x509.load_pem_x509_certificate(pair.cert_path.read_bytes())
    ca = x509.load_pem_x509_certificate(pair.ca_path.read_bytes())
    server.verify_directly_issued_by(ca)
    assert server.issuer == ca.subject
    assert server.subject.rfc4514_string() == "CN=db.test"
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["db.test"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.1.2.3"),
        ipaddress.ip_address("fe80::1"),
    ]
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_each_call_makes_a_new_ca(tmp_path: Path) -> None:
    first = make_self_signed_cert(tmp_path / "a")
    second = make_self_signed_cert(tmp_path / "b")
    assert first.ca_path.read_bytes() != second.ca_path.read_bytes()


def test_argument_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hosts"):
        make_self_signed_cert(tmp_path, hosts=())
    with pytest.raises(ValueError, match="valid_days"):
        make_self_signed_cert(tmp_path, valid_days=0)
