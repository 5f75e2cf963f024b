"""Sans-IO MySQL/MariaDB password authentication: mysql_native_password, caching_sha2_password,
mysql_clear_password, MariaDB client_ed25519.

Owns: the scrambles a client computes from a password and a server nonce, the server-side
checks of those scrambles against stored hashes (verifier objects that never hold the
cleartext), caching_sha2_password's full-authentication path (cleartext over TLS, or RSA-OAEP
of the XOR-ed password with the server's public key) and the RSA key pair the proxy serves.
Must not touch: sockets, asyncio, packet framing or message layout (the session wraps these
bytes in HandshakeResponse41 / AuthSwitchResponse / AuthMoreData), configuration, logging.

MariaDB `client_ed25519` is Ed25519 (RFC 8032) signing of the server's 32-byte nonce where the
64-byte expanded secret is SHA-512(password) instead of SHA-512(32-byte seed); `cryptography`'s
seed-based API cannot express that, so the signing side is written here with plain integer
arithmetic (not constant-time: it runs on the proxy's own upstream credential, never on a
client's secret). For a 32-byte password it must equal standard Ed25519 with that seed, which
the tests check against `cryptography`; the server side verifies with `cryptography`.

Not implemented: sha256_password, authentication_ldap_*, GSSAPI, multi-factor authentication.
The session must refuse those plugins.

Server side and comparisons: every check uses `hmac.compare_digest`. A verifier for an unknown
user should be `NativePasswordVerifier.fake()` / `CachingSha2Verifier.fake()` so the exchange
runs the same way and fails only at the end.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

MYSQL_NATIVE_PASSWORD: Final = b"mysql_native_password"
CACHING_SHA2_PASSWORD: Final = b"caching_sha2_password"
MYSQL_CLEAR_PASSWORD: Final = b"mysql_clear_password"
CLIENT_ED25519: Final = b"client_ed25519"
"""The client-side plugin name of MariaDB's `ed25519` server plugin."""

NONCE_LENGTH: Final = 20
"""The scramble a server sends: 20 bytes (followed by a NUL on the wire)."""

# caching_sha2_password AuthMoreData / client request bytes.
CACHING_SHA2_REQUEST_PUBLIC_KEY: Final = b"\x02"
CACHING_SHA2_FAST_AUTH_SUCCESS: Final = b"\x03"
CACHING_SHA2_PERFORM_FULL_AUTHENTICATION: Final = b"\x04"

RSA_KEY_BITS: Final = 2048
"""MySQL's own auto-generated key size (caching_sha2_password_auto_generate_rsa_keys)."""
MAX_CLEARTEXT_PASSWORD: Final = 1024
"""Longest cleartext password accepted on the server side: bounds hashing work per attempt."""

_SHA1_LEN: Final = 20
_SHA256_LEN: Final = 32


class AuthenticationError(Exception):
    """Malformed authentication data (not a wrong password: verifiers return False for that)."""


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _sha1(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()  # noqa: S324 - the protocol's hash, not our choice


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def generate_nonce() -> bytes:
    """A 20-byte server scramble like MySQL's: printable ASCII, never NUL (the wire terminates it)
    nor '$' (reserved by MySQL's stored-hash formats)."""
    alphabet = bytes(c for c in range(0x21, 0x7F) if c != ord("$"))
    return bytes(secrets.choice(alphabet) for _ in range(NONCE_LENGTH))


def _check_nonce(nonce: bytes) -> bytes:
    if len(nonce) < NONCE_LENGTH:
        raise AuthenticationError(f"the nonce is {len(nonce)} bytes, not {NONCE_LENGTH}")
    return nonce[:NONCE_LENGTH]


# --------------------------------------------------------------------------- mysql_native_password


def scramble_native_password(password: bytes, nonce: bytes) -> bytes:
    """SHA1(password) XOR SHA1(nonce + SHA1(SHA1(password))); empty for an empty password."""
    if not password:
        return b""
    stage1 = _sha1(password)
    return _xor(stage1, _sha1(_check_nonce(nonce) + _sha1(stage1)))


@dataclass(frozen=True, slots=True)
class NativePasswordVerifier:
    """What a mysql_native_password server keeps: SHA1(SHA1(password)) (mysql.user's hash
    without the '*'). An empty `stored_hash` is an account with an empty password."""

    stored_hash: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.stored_hash and len(self.stored_hash) != _SHA1_LEN:
            raise ValueError("a mysql_native_password hash is 20 bytes")

    @classmethod
    def from_password(cls, password: bytes) -> NativePasswordVerifier:
        return cls(_sha1(_sha1(password)) if password else b"")

    @classmethod
    def from_mysql_hash(cls, text: str) -> NativePasswordVerifier:
        """Parse `*<40 hex digits>` as in mysql.user.authentication_string (empty: no password)."""
        if not text:
            return cls(b"")
        if len(text) != 41 or not text.startswith("*"):
            raise ValueError("a mysql_native_password hash is '*' + 40 hex digits")
        try:
            return cls(bytes.fromhex(text[1:]))
        except ValueError:
            raise ValueError("a mysql_native_password hash is '*' + 40 hex digits") from None

    @classmethod
    def fake(cls) -> NativePasswordVerifier:
        """A verifier nothing matches, for unknown users."""
        return cls(secrets.token_bytes(_SHA1_LEN))

    def to_mysql_hash(self) -> str:
        return "*" + self.stored_hash.hex().upper() if self.stored_hash else ""

    def verify(self, nonce: bytes, response: bytes) -> bool:
        """Check a client's scramble: recover SHA1(password), hash it, compare to the stored hash."""
        if not self.stored_hash:
            return hmac.compare_digest(response, b"")
        if len(response) != _SHA1_LEN:
            return False
        stage1 = _xor(response, _sha1(_check_nonce(nonce) + self.stored_hash))
        return hmac.compare_digest(_sha1(stage1), self.stored_hash)


# --------------------------------------------------------------------------- caching_sha2_password


def scramble_caching_sha2(password: bytes, nonce: bytes) -> bytes:
    """SHA256(password) XOR SHA256(SHA256(SHA256(password)) + nonce); empty for an empty password."""
    if not password:
        return b""
    p1 = _sha256(password)
    return _xor(p1, _sha256(_sha256(p1) + _check_nonce(nonce)))


def xor_password_with_nonce(password: bytes, nonce: bytes) -> bytes:
    """(password + NUL) XOR the 20-byte nonce repeated: the plaintext RSA-encrypted in full auth."""
    nonce = _check_nonce(nonce)
    data = password + b"\x00"
    return bytes(c ^ nonce[i % NONCE_LENGTH] for i, c in enumerate(data))


_OAEP: Final = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # noqa: S303
"""MySQL uses RSA_PKCS1_OAEP_PADDING: OAEP with SHA-1 and MGF1-SHA-1."""


def rsa_encrypt_password(password: bytes, nonce: bytes, public_key_pem: bytes) -> bytes:
    """Client side of full authentication without TLS: RSA-OAEP of the XOR-ed password."""
    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except ValueError as exc:
        raise AuthenticationError(f"invalid server public key: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise AuthenticationError("the server public key is not an RSA key")
    return key.encrypt(xor_password_with_nonce(password, nonce), _OAEP)


class RsaKeyPair:
    """The proxy's RSA key pair for caching_sha2_password full authentication without TLS."""

    __slots__ = ("_private",)

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        self._private = private_key

    @classmethod
    def generate(cls, bits: int = RSA_KEY_BITS) -> RsaKeyPair:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=bits))

    @classmethod
    def from_private_pem(cls, pem: bytes) -> RsaKeyPair:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("not an RSA private key")
        return cls(key)

    def private_pem(self) -> bytes:
        return self._private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())

    def public_key_pem(self) -> bytes:
        """What the server sends in AuthMoreData after the client's 0x02 request."""
        return self._private.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)

    def decrypt_password(self, ciphertext: bytes, nonce: bytes) -> bytes:
        """Recover the password from a client's RSA full-auth response. The caller hands it
        straight to a verifier and drops it."""
        try:
            plain = self._private.decrypt(ciphertext, _OAEP)
        except ValueError:
            raise AuthenticationError("RSA decryption of the password failed") from None
        nonce = _check_nonce(nonce)
        data = bytes(c ^ nonce[i % NONCE_LENGTH] for i, c in enumerate(plain))
        if not data.endswith(b"\x00"):
            raise AuthenticationError("the decrypted password is not NUL-terminated")
        return data[:-1]


@dataclass(frozen=True, slots=True)
class CachingSha2Verifier:
    """What the proxy keeps for a caching_sha2_password account: SHA256(SHA256(password)), the
    value MySQL caches in memory for fast authentication. (MySQL's on-disk format is a salted
    SHA-256 crypt used only for full authentication; the proxy keeps one form for both.)"""

    stored_hash: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.stored_hash and len(self.stored_hash) != _SHA256_LEN:
            raise ValueError("a caching_sha2_password stored hash is 32 bytes")

    @classmethod
    def from_password(cls, password: bytes) -> CachingSha2Verifier:
        return cls(_sha256(_sha256(password)) if password else b"")

    @classmethod
    def fake(cls) -> CachingSha2Verifier:
        return cls(secrets.token_bytes(_SHA256_LEN))

    def verify_scramble(self, nonce: bytes, response: bytes) -> bool:
        """Fast authentication: recover SHA256(password) from the scramble and hash it."""
        if not self.stored_hash:
            return hmac.compare_digest(response, b"")
        if len(response) != _SHA256_LEN:
            return False
        p1 = _xor(response, _sha256(self.stored_hash + _check_nonce(nonce)))
        return hmac.compare_digest(_sha256(p1), self.stored_hash)

    def verify_cleartext(self, password: bytes) -> bool:
        """Full authentication (cleartext over TLS, or decrypted by `RsaKeyPair`)."""
        if len(password) > MAX_CLEARTEXT_PASSWORD:
            return False
        expected = self.stored_hash
        actual = _sha256(_sha256(password)) if password else b""
        return hmac.compare_digest(actual, expected)


def parse_cleartext_response(data: bytes) -> bytes:
    """The password from a cleartext response (mysql_clear_password, caching_sha2 over TLS):
    the password followed by one NUL."""
    if not data.endswith(b"\x00"):
        raise AuthenticationError("a cleartext password response ends with NUL")
    password = data[:-1]
    if b"\x00" in password:
        raise AuthenticationError("a cleartext password cannot contain NUL")
    return password


# --------------------------------------------------------------------------- mysql_clear_password


def clear_password_response(password: bytes) -> bytes:
    """mysql_clear_password's response: the password + NUL. Only ever send it over TLS."""
    if b"\x00" in password:
        raise ValueError("a cleartext password cannot contain NUL")
    return password + b"\x00"


# --------------------------------------------------------------------------- MariaDB client_ed25519

ED25519_NONCE_LENGTH: Final = 32
"""MariaDB's ed25519 plugin sends a 32-byte nonce (not the 20-byte scramble)."""

_P: Final = 2**255 - 19
_L: Final = 2**252 + 27742317777372353535851937790883648493
_D: Final = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1: Final = pow(2, (_P - 1) // 4, _P)

_Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, xy = T/Z


def _point_add(a: _Point, b: _Point) -> _Point:
    # RFC 8032 section 5.1.4 addition formulas for twisted Edwards curves (a = -1).
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    e1 = (y1 - x1) * (y2 - x2) % _P
    e2 = (y1 + x1) * (y2 + x2) % _P
    c = 2 * t1 * t2 * _D % _P
    dd = 2 * z1 * z2 % _P
    e, f, g, h = e2 - e1, dd - c, dd + c, e2 + e1
    return e * f % _P, g * h % _P, f * g % _P, e * h % _P


def _scalar_mult(k: int, point: _Point) -> _Point:
    result: _Point = (0, 1, 1, 0)
    while k:
        if k & 1:
            result = _point_add(result, point)
        point = _point_add(point, point)
        k >>= 1
    return result


def _base_point() -> _Point:
    y = 4 * pow(5, _P - 2, _P) % _P
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if x & 1:
        x = _P - x
    return x, y, 1, x * y % _P


_BASE: Final = _base_point()


def _encode_point(point: _Point) -> bytes:
    x, y, z, _ = point
    zinv = pow(z, _P - 2, _P)
    x, y = x * zinv % _P, y * zinv % _P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def _sha512_int(data: bytes) -> int:
    return int.from_bytes(hashlib.sha512(data).digest(), "little")


def _ed25519_expanded(password: bytes) -> tuple[int, bytes, bytes]:
    """(clamped secret scalar, nonce prefix, public key) from SHA-512(password), as MariaDB does."""
    az = hashlib.sha512(password).digest()
    a = int.from_bytes(az[:32], "little")
    a &= (1 << 254) - 8  # clear the 3 low bits and bit 255
    a |= 1 << 254
    return a, az[32:], _encode_point(_scalar_mult(a, _BASE))


def ed25519_public_key(password: bytes) -> bytes:
    """The 32-byte public key MariaDB stores for `IDENTIFIED VIA ed25519 USING PASSWORD(...)`."""
    return _ed25519_expanded(password)[2]


def ed25519_sign_nonce(password: bytes, nonce: bytes) -> bytes:
    """client_ed25519's response: the 64-byte Ed25519 signature of the server's nonce."""
    a, prefix, public = _ed25519_expanded(password)
    r = _sha512_int(prefix + nonce) % _L
    big_r = _encode_point(_scalar_mult(r, _BASE))
    k = _sha512_int(big_r + public + nonce) % _L
    return big_r + ((r + k * a) % _L).to_bytes(32, "little")


@dataclass(frozen=True, slots=True)
class Ed25519Verifier:
    """What a MariaDB ed25519 server keeps: the public key (mysql.global_priv stores it as
    43 characters of unpadded base64)."""

    public_key: bytes

    def __post_init__(self) -> None:
        if len(self.public_key) != 32:
            raise ValueError("an ed25519 public key is 32 bytes")

    @classmethod
    def from_password(cls, password: bytes) -> Ed25519Verifier:
        return cls(ed25519_public_key(password))

    @classmethod
    def from_mariadb_string(cls, text: str) -> Ed25519Verifier:
        try:
            return cls(base64.b64decode(text + "=", validate=True))
        except (binascii.Error, ValueError):
            raise ValueError("an ed25519 authentication string is 43 base64 characters") from None

    @classmethod
    def fake(cls) -> Ed25519Verifier:
        return cls(ed25519_public_key(secrets.token_bytes(32)))

    def to_mariadb_string(self) -> str:
        return base64.b64encode(self.public_key).decode("ascii").rstrip("=")

    def verify(self, nonce: bytes, signature: bytes) -> bool:
        if len(signature) != 64:
            return False
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, nonce)
        except (InvalidSignature, ValueError):
            return False
        return True
