"""dbguard.wire.pg.auth.tls_server_end_point_hash against cryptography, which it replaced.

The channel binding hash used to come from cryptography's `signature_hash_algorithm` (~8 MiB
resident for this alone); it now reads the signature algorithm from the DER itself. For every
certificate cryptography loads, both must give the same hash, or both none.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguard.wire.pg.auth import tls_server_end_point_hash

UNLOADABLE = "cryptography cannot load it"


def _reference(der: bytes) -> bytes | str | None:
    """The old implementation: cryptography's view of the certificate."""
    try:
        certificate = x509.load_der_x509_certificate(der)
    except Exception:  # ValueError, and x509.InvalidVersion (which the old code let through)
        return UNLOADABLE
    try:
        algorithm = certificate.signature_hash_algorithm
    except (UnsupportedAlgorithm, ValueError):
        return None
    if algorithm is None:
        return None
    if isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(der)
    return digest.finalize()


def _ours(der: bytes) -> bytes | None:
    try:
        return tls_server_end_point_hash(der)
    except ValueError:
        return None


def _agree(der: bytes) -> None:
    expected = _reference(der)
    if expected != UNLOADABLE:
        assert _ours(der) == expected


# --------------------------------------------------------------------------- DER building


def _length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _length(len(content)) + content


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | arc & 0x7F)
            arc >>= 7
        out += bytes(reversed(chunk))
    return _tlv(0x06, bytes(out))


def _read(data: bytes, pos: int) -> tuple[int, int]:
    """(content start, end) of the DER item at pos."""
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    return pos, pos + length


def _self_signed(key: CertificateIssuerPrivateKeyTypes, algorithm: Any, pss: bool = False) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key())
               .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)))
    if pss:
        assert algorithm is not None
        certificate = builder.sign(key, algorithm,
                                   rsa_padding=padding.PSS(mgf=padding.MGF1(algorithm), salt_length=32))
    else:
        certificate = builder.sign(key, algorithm)
    return certificate.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def ec_cert() -> bytes:
    return _self_signed(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())


def _with_signature_algorithm(der: bytes, algorithm_identifier: bytes) -> bytes:
    """`der` with its outer signatureAlgorithm replaced (the signature is not checked)."""
    start, _ = _read(der, 0)
    _, tbs_end = _read(der, start)
    _, alg_end = _read(der, tbs_end)
    _, value_end = _read(der, alg_end)
    return _tlv(0x30, der[start:tbs_end] + algorithm_identifier + der[alg_end:value_end])


# --------------------------------------------------------------------------- real certificates


def _real_certificates() -> Iterator[tuple[str, bytes]]:
    ec_key = ec.generate_private_key(ec.SECP384R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    dsa_key = dsa.generate_private_key(key_size=2048)
    sha2 = [hashes.SHA224(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512()]
    sha3 = [hashes.SHA3_224(), hashes.SHA3_256(), hashes.SHA3_384(), hashes.SHA3_512()]
    for algorithm in sha2 + sha3:
        yield f"ecdsa-{algorithm.name}", _self_signed(ec_key, algorithm)
        yield f"rsa-{algorithm.name}", _self_signed(rsa_key, algorithm)
        yield f"rsa-pss-{algorithm.name}", _self_signed(rsa_key, algorithm, pss=True)
    for algorithm in sha2[:2]:
        yield f"dsa-{algorithm.name}", _self_signed(dsa_key, algorithm)
    yield "ed25519", _self_signed(ed25519.Ed25519PrivateKey.generate(), None)
    yield "ed448", _self_signed(ed448.Ed448PrivateKey.generate(), None)


def test_real_certificates() -> None:
    seen: dict[str, bytes | None] = {}
    for label, der in _real_certificates():
        expected = _reference(der)
        assert expected != UNLOADABLE
        assert _ours(der) == expected, label
        seen[label] = _ours(der)
        if label == "ecdsa-sha384":
            assert seen[label] == hashlib.sha384(der).digest()
    assert seen["ed25519"] is None
    assert seen["ed448"] is None
    assert all(seen[name] is not None for name in seen if not name.startswith("ed"))


# Every signature algorithm OID cryptography knows (and a few it does not), with no parameters
# and with NULL parameters: the certificate is relabelled, not re-signed.
_OIDS = (
    "1.2.840.113549.1.1.4", "1.2.840.113549.1.1.5", "1.3.14.3.2.29", "1.2.840.113549.1.1.14",
    "1.2.840.113549.1.1.11", "1.2.840.113549.1.1.12", "1.2.840.113549.1.1.13", "2.16.840.1.101.3.4.3.13",
    "2.16.840.1.101.3.4.3.14", "2.16.840.1.101.3.4.3.15", "2.16.840.1.101.3.4.3.16", "1.2.840.10045.4.1",
    "1.2.840.10045.4.3.1", "1.2.840.10045.4.3.2", "1.2.840.10045.4.3.3", "1.2.840.10045.4.3.4",
    "2.16.840.1.101.3.4.3.9", "2.16.840.1.101.3.4.3.10", "2.16.840.1.101.3.4.3.11", "2.16.840.1.101.3.4.3.12",
    "1.2.840.10040.4.3", "2.16.840.1.101.3.4.3.1", "2.16.840.1.101.3.4.3.2", "2.16.840.1.101.3.4.3.3",
    "2.16.840.1.101.3.4.3.4", "2.16.840.1.101.3.4.3.5", "2.16.840.1.101.3.4.3.6", "2.16.840.1.101.3.4.3.7",
    "2.16.840.1.101.3.4.3.8", "1.3.101.112", "1.3.101.113", "1.2.643.2.2.3", "1.2.643.7.1.1.3.2",
    "1.2.643.7.1.1.3.3", "1.2.840.113549.1.1.10", "1.2.840.113549.1.1.2", "1.2.840.113549.1.1.3",
    "1.2.840.113549.1.1.1", "1.2.840.10045.2.1", "1.2.156.10197.1.501", "1.2.3.4", "2.999.1", "0.9.2342",
)


@pytest.mark.parametrize("oid", _OIDS)
@pytest.mark.parametrize("parameters", [b"", b"\x05\x00", b"\x02\x01\x00"], ids=["absent", "NULL", "INTEGER"])
def test_every_signature_algorithm(ec_cert: bytes, oid: str, parameters: bytes) -> None:
    _agree(_with_signature_algorithm(ec_cert, _tlv(0x30, _oid(oid) + parameters)))


_HASH_OIDS = ["1.3.14.3.2.26", "2.16.840.1.101.3.4.2.1", "2.16.840.1.101.3.4.2.2", "2.16.840.1.101.3.4.2.3",
              "2.16.840.1.101.3.4.2.4", "2.16.840.1.101.3.4.2.7", "2.16.840.1.101.3.4.2.8",
              "2.16.840.1.101.3.4.2.9", "2.16.840.1.101.3.4.2.10", "1.2.840.113549.2.5", "1.2.3.4"]


def _pss(hash_part: bytes, rest: bytes = b"") -> bytes:
    return _tlv(0x30, _oid("1.2.840.113549.1.1.10") + _tlv(0x30, hash_part + rest))


@pytest.mark.parametrize("hash_oid", _HASH_OIDS)
@pytest.mark.parametrize("hash_parameters", [b"", b"\x05\x00"], ids=["absent", "NULL"])
def test_rsa_pss_parameters(ec_cert: bytes, hash_oid: str, hash_parameters: bytes) -> None:
    mgf = _tlv(0xA1, _tlv(0x30, _oid("1.2.840.113549.1.1.8") + _tlv(0x30, _oid(hash_oid) + hash_parameters)))
    hash_part = _tlv(0xA0, _tlv(0x30, _oid(hash_oid) + hash_parameters))
    _agree(_with_signature_algorithm(ec_cert, _pss(hash_part, mgf)))
    _agree(_with_signature_algorithm(ec_cert, _pss(hash_part, mgf + _tlv(0xA2, b"\x02\x01\x20"))))
    _agree(_with_signature_algorithm(ec_cert, _pss(hash_part)))


def test_rsa_pss_defaults_and_malformed(ec_cert: bytes) -> None:
    for algorithm_identifier in (_pss(b""), _tlv(0x30, _oid("1.2.840.113549.1.1.10")),
                                 _tlv(0x30, _oid("1.2.840.113549.1.1.10") + b"\x05\x00"),
                                 _pss(_tlv(0xA2, b"\x02\x01\x20"))):
        _agree(_with_signature_algorithm(ec_cert, algorithm_identifier))


def test_truncated_or_extended_certificates_are_refused(ec_cert: bytes) -> None:
    for cut in range(len(ec_cert)):
        assert _ours(ec_cert[:cut]) is None
    assert _ours(ec_cert + b"\x00") is None
    with pytest.raises(ValueError, match="DER"):
        tls_server_end_point_hash(b"not a certificate")


@settings(max_examples=300, deadline=None)
@given(position=st.integers(0, 10_000), value=st.integers(0, 255))
def test_a_changed_byte_never_gives_another_hash(ec_cert: bytes, position: int, value: int) -> None:
    # Where cryptography still loads the certificate, the answers agree; elsewhere (tbs
    # damaged) ours may still hash it, which only happens to DER no TLS stack would have sent.
    der = bytearray(ec_cert)
    der[position % len(der)] = value
    _agree(bytes(der))
