"""Unit tests for dbguard.wire.mysql.auth: scrambles, server-side verifiers, RSA full auth.

Covers: mysql_native_password against MySQL's well-known PASSWORD('password') hash and against
PyMySQL's `scramble_native_password`; the server-side check from the stored hash (right, wrong,
empty password, wrong nonce, malformed response, fake verifier); caching_sha2_password's
scramble against PyMySQL's `scramble_caching_sha2` and a hand composition with hashlib, its
fast-auth and full-auth checks; RSA-OAEP full authentication both ways (PyMySQL's
`sha2_rsa_encrypt` decrypted by our key pair, ours decrypted by a plain `cryptography` call and
compared with PyMySQL's `_xor_password`); PEM round-trips; cleartext responses; nonce generation;
MariaDB client_ed25519 against MariaDB's own vectors (public keys from its auth_ed25519 test
results, the public key and signature from plugin/auth_ed25519/ed25519-t.c) and, for 32-byte
passwords, against standard Ed25519 in `cryptography`; the ed25519 verifier;
hypothesis: every password verifies against its own verifier and no other's.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pymysql._auth
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguard.wire.mysql.auth import (
    CACHING_SHA2_PASSWORD,
    CLIENT_ED25519,
    ED25519_NONCE_LENGTH,
    MAX_CLEARTEXT_PASSWORD,
    NONCE_LENGTH,
    AuthenticationError,
    CachingSha2Verifier,
    Ed25519Verifier,
    NativePasswordVerifier,
    RsaKeyPair,
    clear_password_response,
    ed25519_public_key,
    ed25519_sign_nonce,
    generate_nonce,
    parse_cleartext_response,
    rsa_encrypt_password,
    scramble_caching_sha2,
    scramble_native_password,
    xor_password_with_nonce,
)

pymysql_auth: Any = pymysql._auth  # cross-check only; private helpers are untyped

NONCE = b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14"


@pytest.fixture(scope="module")
def key_pair() -> RsaKeyPair:
    return RsaKeyPair.generate()


# ----------------------------------------------------------------------------- mysql_native_password


def test_native_stored_hash_matches_mysql_password_function() -> None:
    # SELECT PASSWORD('password') on MySQL 5.7 / mysql.user for IDENTIFIED BY 'password'.
    verifier = NativePasswordVerifier.from_password(b"password")
    assert verifier.to_mysql_hash() == "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
    assert NativePasswordVerifier.from_mysql_hash("*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19") == verifier


def test_native_scramble_matches_pymysql() -> None:
    for password in (b"password", b"p\xc3\xa4ss", b"x" * 100):
        assert scramble_native_password(password, NONCE) == pymysql_auth.scramble_native_password(password, NONCE)
    # PyMySQL (like the server) uses only the first 20 bytes of the nonce.
    assert scramble_native_password(b"pw", NONCE + b"\x00") == pymysql_auth.scramble_native_password(
        b"pw", NONCE + b"\x00")
    assert scramble_native_password(b"", NONCE) == b""


def test_native_scramble_by_hand() -> None:
    stage1 = hashlib.sha1(b"secret").digest()  # noqa: S324
    mix = hashlib.sha1(NONCE + hashlib.sha1(stage1).digest()).digest()  # noqa: S324
    assert scramble_native_password(b"secret", NONCE) == bytes(a ^ b for a, b in zip(stage1, mix, strict=True))


def test_native_verifier() -> None:
    verifier = NativePasswordVerifier.from_password(b"secret")
    assert verifier.verify(NONCE, scramble_native_password(b"secret", NONCE))
    assert not verifier.verify(NONCE, scramble_native_password(b"Secret", NONCE))
    other_nonce = bytes(reversed(NONCE))
    assert not verifier.verify(other_nonce, scramble_native_password(b"secret", NONCE))
    assert not verifier.verify(NONCE, b"")
    assert not verifier.verify(NONCE, b"\x00" * 19)
    assert not NativePasswordVerifier.fake().verify(NONCE, scramble_native_password(b"secret", NONCE))
    assert "stored_hash" not in repr(verifier)
    with pytest.raises(AuthenticationError, match="nonce"):
        verifier.verify(b"short", b"\x00" * 20)


def test_native_empty_password() -> None:
    verifier = NativePasswordVerifier.from_password(b"")
    assert verifier.to_mysql_hash() == ""
    assert verifier.verify(NONCE, b"")
    assert not verifier.verify(NONCE, scramble_native_password(b"x", NONCE))
    assert NativePasswordVerifier.from_mysql_hash("") == verifier


@pytest.mark.parametrize("text", ["2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19", "*2470", "*" + "zz" * 20])
def test_native_bad_hash_text(text: str) -> None:
    with pytest.raises(ValueError, match="hex digits"):
        NativePasswordVerifier.from_mysql_hash(text)


def test_native_verifier_rejects_wrong_length() -> None:
    with pytest.raises(ValueError, match="20 bytes"):
        NativePasswordVerifier(b"\x00" * 19)


# ----------------------------------------------------------------------------- caching_sha2_password


def test_caching_sha2_scramble_matches_pymysql_and_hand() -> None:
    for password in (b"secret", b"p\xc3\xa4ss", b"y" * 200):
        ours = scramble_caching_sha2(password, NONCE)
        assert ours == pymysql_auth.scramble_caching_sha2(password, NONCE)
        p1 = hashlib.sha256(password).digest()
        p3 = hashlib.sha256(hashlib.sha256(p1).digest() + NONCE).digest()
        assert ours == bytes(a ^ b for a, b in zip(p1, p3, strict=True))
    assert scramble_caching_sha2(b"", NONCE) == b""


def test_caching_sha2_fast_auth() -> None:
    verifier = CachingSha2Verifier.from_password(b"secret")
    assert verifier.stored_hash == hashlib.sha256(hashlib.sha256(b"secret").digest()).digest()
    assert verifier.verify_scramble(NONCE, scramble_caching_sha2(b"secret", NONCE))
    assert not verifier.verify_scramble(NONCE, scramble_caching_sha2(b"secreT", NONCE))
    assert not verifier.verify_scramble(bytes(reversed(NONCE)), scramble_caching_sha2(b"secret", NONCE))
    assert not verifier.verify_scramble(NONCE, b"\x00" * 31)
    assert not verifier.verify_scramble(NONCE, b"")
    assert not CachingSha2Verifier.fake().verify_scramble(NONCE, scramble_caching_sha2(b"secret", NONCE))
    empty = CachingSha2Verifier.from_password(b"")
    assert empty.verify_scramble(NONCE, b"")
    assert empty.verify_cleartext(b"")
    assert not empty.verify_cleartext(b"x")
    with pytest.raises(ValueError, match="32 bytes"):
        CachingSha2Verifier(b"\x00" * 20)


def test_caching_sha2_full_auth_cleartext_over_tls() -> None:
    verifier = CachingSha2Verifier.from_password(b"secret")
    # Over TLS the client sends password + NUL (PyMySQL: `conn.password + b"\0"`).
    assert verifier.verify_cleartext(parse_cleartext_response(b"secret\x00"))
    assert not verifier.verify_cleartext(parse_cleartext_response(b"secrex\x00"))
    assert not verifier.verify_cleartext(b"a" * (MAX_CLEARTEXT_PASSWORD + 1))


def test_rsa_pymysql_encrypts_we_decrypt(key_pair: RsaKeyPair) -> None:
    ciphertext = pymysql_auth.sha2_rsa_encrypt(b"secret", NONCE, key_pair.public_key_pem())
    password = key_pair.decrypt_password(ciphertext, NONCE)
    assert password == b"secret"
    assert CachingSha2Verifier.from_password(b"secret").verify_cleartext(password)


def test_rsa_we_encrypt_server_decrypts(key_pair: RsaKeyPair) -> None:
    long_password = b"0123456789abcdefghijklmnopqrstuvwxyz"  # longer than the nonce: it repeats
    ciphertext = rsa_encrypt_password(long_password, NONCE, key_pair.public_key_pem())
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # noqa: S303
    private = RsaKeyPair.from_private_pem(key_pair.private_pem())
    plain = private._private.decrypt(ciphertext, oaep)
    assert plain == pymysql_auth._xor_password(long_password + b"\x00", NONCE)
    assert plain == xor_password_with_nonce(long_password, NONCE)
    assert key_pair.decrypt_password(ciphertext, NONCE) == long_password


def test_rsa_errors(key_pair: RsaKeyPair) -> None:
    with pytest.raises(AuthenticationError, match="decryption"):
        key_pair.decrypt_password(b"\x00" * 256, NONCE)
    with pytest.raises(AuthenticationError, match="public key"):
        rsa_encrypt_password(b"pw", NONCE, b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    # A ciphertext of data without the trailing NUL is refused.
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # noqa: S303
    bad = key_pair._private.public_key().encrypt(b"\x00" * 3, oaep)
    with pytest.raises(AuthenticationError, match="NUL"):
        key_pair.decrypt_password(bad, b"\x01" * 20)
    assert key_pair.public_key_pem().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert CACHING_SHA2_PASSWORD == b"caching_sha2_password"


# ----------------------------------------------------------------------------- MariaDB client_ed25519

# MariaDB's `SELECT ed25519_password(...)` results (mysql-test auth_ed25519.result).
MARIADB_ED25519_STRINGS = {
    b"foo": "vubFBzIrapbfHct1/J72dnUryz5VS7lA6XHH8sIx4TI",
    b"foobar": "qv2mG6HWCuy32Slb5xhV4THStewNz2VINVPbgk+XAJ8",
    b"foo bar": "Y5fV74JAVRMOK2cdnUsYS+WW9sXaaL/o+6WGKOgqnzc",
}
# plugin/auth_ed25519/ed25519-t.c: "foobar" signing a nonce of 32 'A's.
FOOBAR_SIGNATURE = bytes([
    232, 61, 201, 63, 67, 63, 51, 53, 86, 73, 238, 35, 170, 117, 146, 214, 26, 17, 35, 9, 8, 132, 245, 141, 48, 99,
    66, 58, 36, 228, 48, 84, 115, 254, 187, 168, 88, 162, 249, 57, 35, 85, 79, 238, 167, 106, 68, 117, 56, 135, 171,
    47, 20, 14, 133, 79, 15, 229, 124, 160, 176, 100, 138, 14,
])


@pytest.mark.parametrize(("password", "text"), list(MARIADB_ED25519_STRINGS.items()))
def test_ed25519_public_keys_match_mariadb(password: bytes, text: str) -> None:
    verifier = Ed25519Verifier.from_password(password)
    assert verifier.to_mariadb_string() == text
    assert Ed25519Verifier.from_mariadb_string(text) == verifier


def test_ed25519_signature_matches_mariadb() -> None:
    nonce = b"A" * ED25519_NONCE_LENGTH
    signature = ed25519_sign_nonce(b"foobar", nonce)
    assert signature == FOOBAR_SIGNATURE
    verifier = Ed25519Verifier.from_mariadb_string(MARIADB_ED25519_STRINGS[b"foobar"])
    assert verifier.verify(nonce, signature)
    assert not verifier.verify(b"B" + nonce[1:], signature)
    assert not verifier.verify(nonce, signature[:63])
    assert not Ed25519Verifier.fake().verify(nonce, signature)
    assert CLIENT_ED25519 == b"client_ed25519"


@given(seed=st.binary(min_size=32, max_size=32), nonce=st.binary(min_size=32, max_size=32))
@settings(max_examples=20, deadline=None)
def test_ed25519_is_standard_for_32_byte_passwords(seed: bytes, nonce: bytes) -> None:
    # SHA-512 of a 32-byte seed is exactly RFC 8032's expansion, so the results must coincide.
    key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert ed25519_public_key(seed) == public
    assert ed25519_sign_nonce(seed, nonce) == key.sign(nonce)


@pytest.mark.parametrize("text", ["short", "!" * 43, ""])
def test_ed25519_bad_strings(text: str) -> None:
    with pytest.raises(ValueError, match="ed25519"):
        Ed25519Verifier.from_mariadb_string(text)


# ----------------------------------------------------------------------------- cleartext and nonce


def test_clear_password() -> None:
    assert clear_password_response(b"secret") == b"secret\x00"
    assert parse_cleartext_response(b"secret\x00") == b"secret"
    with pytest.raises(ValueError, match="NUL"):
        clear_password_response(b"a\x00b")
    with pytest.raises(AuthenticationError, match="ends with NUL"):
        parse_cleartext_response(b"secret")
    with pytest.raises(AuthenticationError, match="contain NUL"):
        parse_cleartext_response(b"a\x00b\x00")


def test_generate_nonce() -> None:
    nonces = {generate_nonce() for _ in range(50)}
    assert len(nonces) == 50
    for nonce in nonces:
        assert len(nonce) == NONCE_LENGTH
        assert b"\x00" not in nonce
        assert b"$" not in nonce


# ----------------------------------------------------------------------------- hypothesis

passwords = st.binary(min_size=1, max_size=64)


@given(password=passwords, other=passwords, nonce=st.binary(min_size=20, max_size=20))
@settings(max_examples=100, deadline=None)
def test_verifiers_accept_only_their_password(password: bytes, other: bytes, nonce: bytes) -> None:
    native = NativePasswordVerifier.from_password(password)
    sha2 = CachingSha2Verifier.from_password(password)
    assert native.verify(nonce, scramble_native_password(password, nonce))
    assert sha2.verify_scramble(nonce, scramble_caching_sha2(password, nonce))
    assert sha2.verify_cleartext(password)
    if other != password:
        assert not native.verify(nonce, scramble_native_password(other, nonce))
        assert not sha2.verify_scramble(nonce, scramble_caching_sha2(other, nonce))
        assert not sha2.verify_cleartext(other)


@given(response=st.binary(max_size=40), nonce=st.binary(min_size=20, max_size=20))
def test_verifiers_never_raise_on_garbage(response: bytes, nonce: bytes) -> None:
    assert not NativePasswordVerifier.fake().verify(nonce, response)
    assert not CachingSha2Verifier.fake().verify_scramble(nonce, response)
