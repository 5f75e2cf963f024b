"""Throwaway TLS material for tests and `dbguard demo`: a one-off CA and a server cert it signs.

Owns: generating keys and X.509 certificates with `cryptography` and writing them as PEM files.
Must not touch: sockets, ssl contexts, configuration. The CA's private key is never written
anywhere (it only lives in memory while signing), so nobody can mint further certificates that
clients trusting this CA would accept.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT_FILENAME = "ca.crt"
SERVER_CERT_FILENAME = "server.crt"
SERVER_KEY_FILENAME = "server.key"

# Certificates become valid a little in the past so a peer whose clock lags ours accepts them.
_CLOCK_SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class CertPair:
    """Where the generated PEM files are: the server's certificate and key, and the CA to trust."""

    cert_path: Path
    key_path: Path
    ca_path: Path


def make_self_signed_cert(
    directory: Path,
    *,
    common_name: str = "localhost",
    hosts: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
    valid_days: int = 365,
) -> CertPair:
    """Create a tiny CA and a server certificate for `hosts`, signed by it, in `directory`.

    Files: `ca.crt` (the CA certificate, for `sslrootcert=` / `cafile=`), `server.crt` and
    `server.key` (EC P-256, PKCS#8, mode 0600). Each entry of `hosts` that parses as an IP
    address becomes an IP SAN, anything else a DNS SAN, so `sslmode=verify-full` works for all
    of them. Existing files with those names are replaced.
    """
    if not hosts:
        raise ValueError("hosts must name at least one DNS name or IP address")
    if valid_days < 1:
        raise ValueError("valid_days must be at least 1")
    directory.mkdir(parents=True, exist_ok=True)

    now = datetime.datetime.now(datetime.UTC)
    not_before = now - _CLOCK_SKEW
    not_after = now + datetime.timedelta(days=valid_days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dbguard"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"dbguard throwaway CA for {common_name}"),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(_general_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    pair = CertPair(
        cert_path=directory / SERVER_CERT_FILENAME,
        key_path=directory / SERVER_KEY_FILENAME,
        ca_path=directory / CA_CERT_FILENAME,
    )
    key_pem = server_key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    _write_file(pair.key_path, key_pem, mode=0o600)
    _write_file(pair.cert_path, server_cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    _write_file(pair.ca_path, ca_cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return pair


def _general_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _write_file(path: Path, data: bytes, *, mode: int) -> None:
    """Write `data` to `path` with exactly `mode`, never exposing the bytes with looser rights."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        # Before any byte lands: the file may have existed with other rights, and O_CREAT's
        # mode is filtered through the umask.
        os.fchmod(fd, mode)
        handle.write(data)
