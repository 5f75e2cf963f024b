"""Sans-IO PostgreSQL password authentication: SCRAM-SHA-256(-PLUS) both ways, md5, cleartext.

Owns: the SASL payloads (client-first, server-first, client-final, server-final), the secrets
derived from passwords, and the tls-server-end-point channel binding hash. Must not touch:
sockets, asyncio, message framing (the codec wraps these payloads in SASLInitialResponse,
AuthenticationSASLContinue, ... and adds NULs), configuration, logging.

Two directions:
- proxy as server (`ScramServerExchange`, `verify_cleartext`): a client proves it knows a dbguard
  identity's secret. Unknown users run the same exchange against a fake verifier and fail only
  at the end, with the same error, so probing cannot tell them from wrong passwords.
- proxy as client (`ScramClientExchange`, `md5_password_message`): dbguard logs in upstream
  with the DSN credentials and checks the server's signature, so a fake upstream is detected.

Written here, from the standard library only (hmac, hashlib, stringprep, unicodedata): both
sides of RFC 5802 section 3, and SASLprep (RFC 4013). scramp's `ScramServer` rejects what libpq
sends (an empty `n=` user name: PostgreSQL takes the user from the startup packet and ignores
this field) and silently upgrades SCRAM-SHA-256 to -PLUS where PostgreSQL refuses the mismatch;
the client side and SASLprep used to be scramp's, and now accept and send exactly what scramp's
`ScramClient` and `saslprep` do (its bounds included: iterations 4096..10,000,000, salts of at
least 12 bytes), which tests check differentially, as they check both sides against the RFC 7677
vectors, a real PostgreSQL server and real libpq. The tls-server-end-point hash reads the
certificate's signature algorithm from its DER, as cryptography would name it (tested OID by
OID). scramp with asn1crypto (~5 MiB) and cryptography (~8 MiB) were resident in every proxy for
these alone (docs/performance.md, "Memory").

PBKDF2 runs in `make_scram_verifier`, `verify_cleartext` and `ScramClientExchange.client_final`
(a few ms at 4096 iterations, more if an upstream asks for more): a caller on an event loop may
want a worker thread for them. The server exchange itself only computes HMACs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Final

SCRAM_SHA_256: Final = "SCRAM-SHA-256"
SCRAM_SHA_256_PLUS: Final = "SCRAM-SHA-256-PLUS"
TLS_SERVER_END_POINT: Final = "tls-server-end-point"
"""The only channel binding type PostgreSQL uses (RFC 5929)."""

DEFAULT_ITERATIONS: Final = 4096
"""PostgreSQL's default `scram_iterations`, and RFC 7677's minimum."""
MIN_ITERATIONS: Final = 4096
MAX_ITERATIONS: Final = 10_000_000
"""Upper bound on our own verifiers, and on what an upstream may ask of the client: beyond this,
a login costs seconds of CPU."""
MIN_UPSTREAM_SALT_LENGTH: Final = 12
"""Shortest salt the client accepts from an upstream (scramp's bound; PostgreSQL sends 16)."""
SALT_LENGTH: Final = 16
"""Bytes of salt in new verifiers: PostgreSQL's SCRAM_DEFAULT_SALT_LEN, and the fake salt's."""
SERVER_NONCE_BYTES: Final = 18
"""Random bytes in our part of the nonce: PostgreSQL's SCRAM_RAW_NONCE_LEN."""
MAX_SCRAM_MESSAGE_BYTES: Final = 4096
"""Longest client SCRAM payload accepted. Real ones are under 300 bytes; the bound caps the
parsing work and the client nonce we echo back in server-first."""

_KEY_LENGTH: Final = 32  # SHA-256 output
_MD5_SALT_LENGTH: Final = 4
_GENERIC_FAILURE: Final = "authentication failed"

# Key for the unknown-user fake salt: random per process, so the fake salts cannot be predicted,
# yet stable while the process lives, like a real user's salt is between attempts.
_FAKE_SALT_KEY: Final = secrets.token_bytes(32)


class AuthenticationFailed(Exception):
    """An authentication exchange failed.

    On the proxy-as-server side the message is always the same generic text, whatever went
    wrong (unknown user, wrong password, malformed input, channel binding downgrade); the reason
    is in `log_detail`, which is for dbguard's own log and must never be sent to the client.
    On the proxy-as-client side the message itself says what went wrong upstream.
    """

    def __init__(self, message: str = _GENERIC_FAILURE, *, log_detail: str = "") -> None:
        super().__init__(message)
        self.log_detail = log_detail or message


class UnsupportedMechanism(AuthenticationFailed):
    """The upstream server offered no SASL mechanism this client can use."""


# --------------------------------------------------------------------------- verifiers


@dataclass(frozen=True, slots=True)
class ScramVerifier:
    """What a SCRAM-SHA-256 server keeps instead of the password (RFC 5802 section 3)."""

    salt: bytes
    iterations: int
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not self.salt:
            raise ValueError("the SCRAM salt must not be empty")
        if self.iterations < 1:
            raise ValueError("the SCRAM iteration count must be positive")
        if len(self.stored_key) != _KEY_LENGTH or len(self.server_key) != _KEY_LENGTH:
            raise ValueError(f"SCRAM-SHA-256 keys are {_KEY_LENGTH} bytes long")

    def to_postgres_secret(self) -> str:
        """The verifier in pg_authid's format, usable as `ALTER ROLE ... PASSWORD '<this>'`."""
        return (
            f"SCRAM-SHA-256${self.iterations}:{_b64encode(self.salt)}"
            f"${_b64encode(self.stored_key)}:{_b64encode(self.server_key)}"
        )

    @classmethod
    def from_postgres_secret(cls, text: str) -> ScramVerifier:
        """Parse `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`."""
        try:
            scheme, iterations_salt, keys = text.split("$")
            iterations_text, salt_b64 = iterations_salt.split(":")
            stored_b64, server_b64 = keys.split(":")
            if scheme != SCRAM_SHA_256 or not (
                iterations_text.isascii() and iterations_text.isdigit()
            ):
                raise ValueError
            return cls(
                salt=_b64decode(salt_b64),
                iterations=int(iterations_text),
                stored_key=_b64decode(stored_b64),
                server_key=_b64decode(server_b64),
            )
        except ValueError:
            raise ValueError("not a PostgreSQL SCRAM-SHA-256 secret") from None


def make_scram_verifier(
    secret: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> ScramVerifier:
    """Derive the SCRAM-SHA-256 verifier for `secret` (once, when the config is loaded).

    The secret is SASLprep-normalised; like PostgreSQL and libpq, a secret SASLprep refuses
    (e.g. with characters Unicode 3.2 did not assign, such as most emoji) is used as raw UTF-8.
    """
    if not secret:
        raise ValueError("an empty secret cannot be used for SCRAM authentication")
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"SCRAM iterations must be between {MIN_ITERATIONS} and {MAX_ITERATIONS}")
    if salt is None:
        salt = secrets.token_bytes(SALT_LENGTH)
    elif not salt:
        raise ValueError("the SCRAM salt must not be empty")
    stored_key, server_key = _derive_keys(_password_bytes(secret), salt, iterations)
    return ScramVerifier(salt, iterations, stored_key, server_key)


def verify_cleartext(verifier: ScramVerifier | None, password: str) -> bool:
    """Check a cleartext password (AuthenticationCleartextPassword) against a verifier.

    `None` (unknown user) costs the same key derivation and returns False.
    """
    target = verifier if verifier is not None else _unknown_user_verifier("")
    stored_key, server_key = _derive_keys(_password_bytes(password), target.salt, target.iterations)
    # Both compared, and `&` rather than `and`, so the time taken does not depend on which differs.
    same = hmac.compare_digest(stored_key, target.stored_key) & hmac.compare_digest(
        server_key, target.server_key
    )
    return same and verifier is not None


# --------------------------------------------------------------------------- proxy as server


class _ServerStage(Enum):
    AWAIT_CLIENT_FIRST = auto()
    AWAIT_CLIENT_FINAL = auto()
    SUCCEEDED = auto()
    FAILED = auto()


class ScramServerExchange:
    """One SCRAM-SHA-256(-PLUS) exchange with a client, dbguard playing the server.

    `verifier=None` means the user is unknown: the exchange then runs against a fake verifier
    whose salt is derived from `user` (the user name of the startup packet, required in that
    case), so it looks like a real user's exchange, and fails at `handle_client_final`. The fake
    uses DEFAULT_ITERATIONS: identities with another count would stand out from unknown names.
    `channel_binding` is `("tls-server-end-point", tls_server_end_point_hash(our_cert_der))`
    when the client connection is TLS; SCRAM-SHA-256-PLUS is then offered too.

    Every failure raises `AuthenticationFailed` with the same message and ends the exchange.
    """

    def __init__(
        self,
        verifier: ScramVerifier | None,
        *,
        channel_binding: tuple[str, bytes] | None = None,
        user: str | None = None,
        server_nonce: str | None = None,
    ) -> None:
        """`server_nonce` pins our half of the nonce, for test vectors only."""
        if channel_binding is not None:
            _check_channel_binding(channel_binding)
        if verifier is None:
            if user is None:
                raise ValueError("an exchange for an unknown user needs the startup user name")
            verifier = _unknown_user_verifier(user)
            self._user_known = False
        else:
            self._user_known = True
        if server_nonce is not None and not _is_printable_nonce(server_nonce):
            raise ValueError("the server nonce must be printable ASCII without commas")
        self._verifier = verifier
        self._channel_binding = channel_binding
        self._server_nonce = server_nonce or _b64encode(secrets.token_bytes(SERVER_NONCE_BYTES))
        self._stage = _ServerStage.AWAIT_CLIENT_FIRST
        self._mechanism: str | None = None
        self._cbind_input = b""
        self._nonce = ""
        self._client_first_bare = ""
        self._server_first = ""

    def mechanisms(self) -> list[str]:
        """Mechanisms for AuthenticationSASL, preferred first (PostgreSQL's order)."""
        if self._channel_binding is not None:
            return [SCRAM_SHA_256_PLUS, SCRAM_SHA_256]
        return [SCRAM_SHA_256]

    @property
    def mechanism(self) -> str | None:
        """The mechanism the client chose, once `handle_client_first` accepted it."""
        return self._mechanism

    @property
    def succeeded(self) -> bool:
        return self._stage is _ServerStage.SUCCEEDED

    def handle_client_first(self, mechanism: str, data: bytes) -> bytes:
        """Take SASLInitialResponse's mechanism and client-first; return server-first."""
        self._expect(_ServerStage.AWAIT_CLIENT_FIRST)
        try:
            server_first = self._client_first(mechanism, data)
        except AuthenticationFailed:
            self._stage = _ServerStage.FAILED
            raise
        self._stage = _ServerStage.AWAIT_CLIENT_FINAL
        return server_first

    def handle_client_final(self, data: bytes) -> bytes:
        """Take SASLResponse's client-final; return server-final (AuthenticationSASLFinal)."""
        self._expect(_ServerStage.AWAIT_CLIENT_FINAL)
        try:
            server_final = self._client_final(data)
        except AuthenticationFailed:
            self._stage = _ServerStage.FAILED
            raise
        self._stage = _ServerStage.SUCCEEDED
        return server_final

    def _expect(self, stage: _ServerStage) -> None:
        if self._stage is not stage:
            previous = self._stage
            self._stage = _ServerStage.FAILED
            raise AuthenticationFailed(
                log_detail=f"SCRAM message out of order (exchange was {previous.name})"
            )

    def _client_first(self, mechanism: str, data: bytes) -> bytes:
        if mechanism not in self.mechanisms():
            raise _failed(f"client chose mechanism {mechanism!r}, not one we offered")
        text = _decode_client_message(data, "client-first")
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise _failed("client-first has no complete gs2 header")
        flag, authzid, bare = parts
        if authzid:
            raise _failed("client-first names an authorization identity, which is unsupported")
        plus = mechanism == SCRAM_SHA_256_PLUS
        if flag == "n":
            if plus:
                raise _failed("client chose SCRAM-SHA-256-PLUS but sent no channel binding")
        elif flag == "y":
            if plus:
                raise _failed("client chose SCRAM-SHA-256-PLUS but sent no channel binding")
            if self._channel_binding is not None:
                raise _failed(
                    "client says it supports channel binding and thinks we do not, but we "
                    "offered SCRAM-SHA-256-PLUS: possible downgrade attack"
                )
        elif flag.startswith("p="):
            if not plus:
                raise _failed("client chose SCRAM-SHA-256 but sent channel binding data")
            if flag[2:] != TLS_SERVER_END_POINT:
                raise _failed(f"client asks for unsupported channel binding {flag[2:]!r}")
        else:
            raise _failed("client-first has an invalid gs2 channel binding flag")

        attributes = _split_attributes(bare, "client-first")
        if attributes[0][0] == "m":
            raise _failed("client-first asks for a mandatory extension, which is unsupported")
        if len(attributes) < 2 or attributes[0][0] != "n" or attributes[1][0] != "r":
            raise _failed("client-first is not n=...,r=...")
        # attributes[0] is the user name, which PostgreSQL ignores (libpq sends it empty): the
        # user is the startup packet's. Any further attributes are extensions, ignored too.
        client_nonce = attributes[1][1]
        if not _is_printable_nonce(client_nonce):
            raise _failed("client nonce is empty or not printable ASCII")

        binding = self._channel_binding[1] if plus and self._channel_binding else b""
        self._cbind_input = f"{flag},,".encode("ascii") + binding
        self._mechanism = mechanism
        self._nonce = client_nonce + self._server_nonce
        self._client_first_bare = bare
        self._server_first = (
            f"r={self._nonce},s={_b64encode(self._verifier.salt)},i={self._verifier.iterations}"
        )
        return self._server_first.encode("ascii")

    def _client_final(self, data: bytes) -> bytes:
        text = _decode_client_message(data, "client-final")
        without_proof, separator, proof_b64 = text.rpartition(",p=")
        if not separator:
            raise _failed("client-final has no proof")
        attributes = _split_attributes(without_proof, "client-final")
        if len(attributes) < 2 or attributes[0][0] != "c" or attributes[1][0] != "r":
            raise _failed("client-final is not c=...,r=...,p=...")
        try:
            cbind_input = _b64decode(attributes[0][1])
            proof = _b64decode(proof_b64)
        except ValueError:
            raise _failed("client-final has invalid base64") from None
        if not hmac.compare_digest(cbind_input, self._cbind_input):
            raise _failed("channel binding data does not match the TLS connection")
        if attributes[1][1] != self._nonce:
            raise _failed("client-final nonce does not match the exchange's nonce")
        if len(proof) != _KEY_LENGTH:
            raise _failed("client proof has the wrong length")

        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        client_signature = _hmac(self._verifier.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
        proof_ok = hmac.compare_digest(
            hashlib.sha256(client_key).digest(), self._verifier.stored_key
        )
        if not self._user_known:
            raise _failed("unknown user")
        if not proof_ok:
            raise _failed("wrong password")
        server_signature = _hmac(self._verifier.server_key, auth_message)
        return f"v={_b64encode(server_signature)}".encode("ascii")


def tls_server_end_point_hash(cert_der: bytes) -> bytes:
    """Channel binding data `tls-server-end-point` for a DER certificate (RFC 5929 section 4.1).

    The certificate hashed with its signature's hash algorithm, SHA-256 when that is MD5 or
    SHA-1. Raises ValueError when the signature has no single hash algorithm (Ed25519, ...):
    RFC 5929 leaves the binding undefined then, so SCRAM-SHA-256-PLUS must not be offered.

    Only the outer signatureAlgorithm is read (with the standard library: cryptography, ~8
    MiB resident, was loaded for this alone): the DER comes from a TLS handshake, which parsed
    the certificate already. Which algorithms have a hash is what cryptography's
    `signature_hash_algorithm` says (tests compare them, OID by OID).
    """
    algorithm, parameters = _signature_algorithm(cert_der)
    if algorithm == _RSASSA_PSS:
        name = _pss_hash(parameters)
    else:
        if (parameters is not None and algorithm not in _HASHES_WITH_ANY_PARAMETERS
                and (algorithm in _HASHES_WITHOUT_PARAMETERS or parameters != _DER_NULL)):
            raise ValueError("not a DER-encoded X.509 certificate (unexpected signature parameters)")
        name = _SIGNATURE_HASHES.get(algorithm)
    if name is None:
        raise ValueError(
            "the certificate's signature algorithm has no single hash function, so "
            "tls-server-end-point channel binding is undefined for it"
        )
    if name in ("md5", "sha1"):
        name = "sha256"
    return hashlib.new(name, cert_der).digest()


# The hash of each signature algorithm (by OID) as cryptography names it: RSA PKCS#1 v1.5,
# DSA and ECDSA with SHA-1, SHA-2 and SHA-3. Ed25519, Ed448, GOST, DSA with SHA-384/512 and
# whatever is not listed have none. RSASSA-PSS names its hash in its parameters.
_SIGNATURE_HASHES: Final = {
    "1.2.840.113549.1.1.4": "md5",
    "1.2.840.113549.1.1.5": "sha1",
    "1.3.14.3.2.29": "sha1",
    "1.2.840.113549.1.1.14": "sha224",
    "1.2.840.113549.1.1.11": "sha256",
    "1.2.840.113549.1.1.12": "sha384",
    "1.2.840.113549.1.1.13": "sha512",
    "2.16.840.1.101.3.4.3.13": "sha3_224",
    "2.16.840.1.101.3.4.3.14": "sha3_256",
    "2.16.840.1.101.3.4.3.15": "sha3_384",
    "2.16.840.1.101.3.4.3.16": "sha3_512",
    "1.2.840.10040.4.3": "sha1",
    "2.16.840.1.101.3.4.3.1": "sha224",
    "2.16.840.1.101.3.4.3.2": "sha256",
    "1.2.840.10045.4.1": "sha1",
    "1.2.840.10045.4.3.1": "sha224",
    "1.2.840.10045.4.3.2": "sha256",
    "1.2.840.10045.4.3.3": "sha384",
    "1.2.840.10045.4.3.4": "sha512",
    "2.16.840.1.101.3.4.3.9": "sha3_224",
    "2.16.840.1.101.3.4.3.10": "sha3_256",
    "2.16.840.1.101.3.4.3.11": "sha3_384",
    "2.16.840.1.101.3.4.3.12": "sha3_512",
}
# Algorithms whose AlgorithmIdentifier has no parameters (not even NULL): DSA and ECDSA with
# SHA-2 and SHA-3, EdDSA (cryptography refuses such a certificate otherwise).
_HASHES_WITHOUT_PARAMETERS: Final = frozenset({
    "2.16.840.1.101.3.4.3.1", "2.16.840.1.101.3.4.3.2", "2.16.840.1.101.3.4.3.3", "2.16.840.1.101.3.4.3.4",
    "1.2.840.10045.4.3.1", "1.2.840.10045.4.3.2", "1.2.840.10045.4.3.3", "1.2.840.10045.4.3.4",
    "2.16.840.1.101.3.4.3.9", "2.16.840.1.101.3.4.3.10", "2.16.840.1.101.3.4.3.11", "2.16.840.1.101.3.4.3.12",
    "1.3.101.112", "1.3.101.113",
})
# ... and those whose parameters cryptography does not look at: md5WithRSAEncryption,
# ecdsa-with-SHA1, dsa-with-sha1. Other algorithms take none or NULL.
_HASHES_WITH_ANY_PARAMETERS: Final = frozenset({"1.2.840.113549.1.1.4", "1.2.840.10045.4.1", "1.2.840.10040.4.3"})
_RSASSA_PSS: Final = "1.2.840.113549.1.1.10"
_PSS_HASHES: Final = {
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.4": "sha224",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
    "2.16.840.1.101.3.4.2.7": "sha3_224",
    "2.16.840.1.101.3.4.2.8": "sha3_256",
    "2.16.840.1.101.3.4.2.9": "sha3_384",
    "2.16.840.1.101.3.4.2.10": "sha3_512",
}
_DER_NULL: Final = b"\x05\x00"


def _der_item(data: bytes, pos: int, end: int, tag: int) -> tuple[int, int]:
    """The content (start, end) of the DER item with `tag` at `pos`, which must end by `end`."""
    if pos + 2 > end or data[pos] != tag:
        raise ValueError("not a DER-encoded X.509 certificate")
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4 or pos + count > end:
            raise ValueError("not a DER-encoded X.509 certificate")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > end:
        raise ValueError("not a DER-encoded X.509 certificate")
    return pos, pos + length


def _oid(data: bytes) -> str:
    """Dotted form of an OBJECT IDENTIFIER's content octets."""
    if not data or data[-1] & 0x80:
        raise ValueError("not a DER-encoded X.509 certificate")
    arcs: list[int] = []
    value = 0
    for byte in data:
        value = value << 7 | byte & 0x7F
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2)
    return ".".join(map(str, (first, arcs[0] - 40 * first, *arcs[1:])))


def _algorithm_identifier(data: bytes, start: int, end: int) -> tuple[str, bytes | None]:
    """(OID, the parameters' whole DER item or None) of an AlgorithmIdentifier's content."""
    oid_start, oid_end = _der_item(data, start, end, 0x06)
    if oid_end == end:
        return _oid(data[oid_start:oid_end]), None
    return _oid(data[oid_start:oid_end]), data[oid_end:end]


def _signature_algorithm(cert_der: bytes) -> tuple[str, bytes | None]:
    """Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }."""
    start, end = _der_item(cert_der, 0, len(cert_der), 0x30)
    if end != len(cert_der):
        raise ValueError("not a DER-encoded X.509 certificate (data after it)")
    _, tbs_end = _der_item(cert_der, start, end, 0x30)
    alg_start, alg_end = _der_item(cert_der, tbs_end, end, 0x30)
    _, value_end = _der_item(cert_der, alg_end, end, 0x03)
    if value_end != end:
        raise ValueError("not a DER-encoded X.509 certificate")
    return _algorithm_identifier(cert_der, alg_start, alg_end)


def _pss_hash(parameters: bytes | None) -> str | None:
    """RSASSA-PSS-params ::= SEQUENCE { hashAlgorithm [0] AlgorithmIdentifier DEFAULT sha1, ... }."""
    if parameters is None:
        raise ValueError("invalid RSASSA-PSS parameters")
    start, end = _der_item(parameters, 0, len(parameters), 0x30)
    if end != len(parameters):
        raise ValueError("invalid RSASSA-PSS parameters")
    if start == end or parameters[start] != 0xA0:
        return "sha1"
    inner_start, inner_end = _der_item(parameters, start, end, 0xA0)
    alg_start, alg_end = _der_item(parameters, inner_start, inner_end, 0x30)
    algorithm, _ = _algorithm_identifier(parameters, alg_start, alg_end)
    return _PSS_HASHES.get(algorithm)


# --------------------------------------------------------------------------- proxy as client


class _ClientStage(Enum):
    CLIENT_FIRST = auto()
    CLIENT_FINAL = auto()
    SERVER_FINAL = auto()
    DONE = auto()
    FAILED = auto()


class ScramClientExchange:
    """One SCRAM-SHA-256(-PLUS) login to the upstream server, dbguard playing the client.

    Picks SCRAM-SHA-256-PLUS when the server offers it and `channel_binding` (the upstream's
    `("tls-server-end-point", tls_server_end_point_hash(server_cert_der))`) is given; else
    SCRAM-SHA-256, telling the server (gs2 flag `y`) when we could have bound the channel, so a
    server that does support it detects the downgrade. Only after `verify_server_final` has
    passed is `completed` True: an AuthenticationOk before that must not be believed.

    The server's messages are held to RFC 5802's grammar as scramp held them: attributes in
    order (`r`, `s`, `i`, then unknown extensions only; `v` then extensions), none empty,
    repeated or `m` (a mandatory extension), strict base64, the combined nonce longer than ours
    and starting with it, iterations without a leading zero between MIN_ITERATIONS and
    MAX_ITERATIONS, a salt of at least MIN_UPSTREAM_SALT_LENGTH bytes; `e=` is a refusal.
    """

    def __init__(
        self,
        user: str,
        password: str,
        server_mechanisms: list[str],
        *,
        channel_binding: tuple[str, bytes] | None = None,
        client_nonce: str | None = None,
    ) -> None:
        """`client_nonce` pins our nonce, for test vectors only."""
        if channel_binding is not None:
            _check_channel_binding(channel_binding)
        if channel_binding is not None and SCRAM_SHA_256_PLUS in server_mechanisms:
            mechanism = SCRAM_SHA_256_PLUS
        elif SCRAM_SHA_256 in server_mechanisms:
            mechanism = SCRAM_SHA_256
        elif SCRAM_SHA_256_PLUS in server_mechanisms:
            raise UnsupportedMechanism(
                "the upstream server only offers SCRAM-SHA-256-PLUS, which needs TLS channel "
                "binding: connect to it with TLS"
            )
        else:
            raise UnsupportedMechanism(
                f"the upstream server offers no supported SASL mechanism "
                f"(offered: {', '.join(server_mechanisms) or 'none'}; supported: "
                f"{SCRAM_SHA_256_PLUS}, {SCRAM_SHA_256})"
            )
        # PostgreSQL ignores the user name in client-first (libpq sends it empty), so a name
        # SASLprep refuses is replaced rather than failing the login.
        scram_user = _saslprep_or_none(user) or "*"
        prepared = _saslprep_or_none(password)
        if prepared is None:
            raise AuthenticationFailed(
                "the upstream password is empty or not a valid SASLprep string, which the "
                "SCRAM client cannot use"
            )
        nonce = secrets.token_hex() if client_nonce is None else client_nonce
        if not _is_printable_nonce(nonce):
            raise AuthenticationFailed("cannot start the SCRAM exchange: the client nonce is not printable ASCII")
        if mechanism == SCRAM_SHA_256_PLUS:
            assert channel_binding is not None
            gs2_header = f"p={TLS_SERVER_END_POINT},,"
            self._cbind_input = gs2_header.encode("ascii") + channel_binding[1]
        else:
            gs2_header = "y,," if channel_binding is not None else "n,,"
            self._cbind_input = gs2_header.encode("ascii")
        self._gs2_header = gs2_header
        self._password = prepared.encode("utf-8")
        self._client_nonce = nonce
        user_name = scram_user.replace("=", "=3D").replace(",", "=2C")
        self._client_first_bare = f"n={user_name},r={nonce}"
        self._server_signature = b""
        self.mechanism: Final[str] = mechanism
        self._stage = _ClientStage.CLIENT_FIRST

    @property
    def completed(self) -> bool:
        """True once the server has proved it knows the password's verifier."""
        return self._stage is _ClientStage.DONE

    def client_first(self) -> bytes:
        """The client-first payload for SASLInitialResponse."""
        self._expect(_ClientStage.CLIENT_FIRST)
        self._stage = _ClientStage.CLIENT_FINAL
        return (self._gs2_header + self._client_first_bare).encode("utf-8")

    def client_final(self, server_first: bytes) -> bytes:
        """Take AuthenticationSASLContinue's server-first; return client-final."""
        self._expect(_ClientStage.CLIENT_FINAL)
        text = self._decode_server_message(server_first, "server-first")
        try:
            nonce, salt, iterations = _read_server_first(text, self._client_nonce)
        except ValueError as exc:
            self._stage = _ClientStage.FAILED
            raise AuthenticationFailed(f"upstream sent an unusable server-first: {exc}") from None
        salted_password = hashlib.pbkdf2_hmac("sha256", self._password, salt, iterations)
        client_key = _hmac(salted_password, b"Client Key")
        without_proof = f"c={_b64encode(self._cbind_input)},r={nonce}"
        auth_message = f"{self._client_first_bare},{text},{without_proof}".encode()
        client_signature = _hmac(hashlib.sha256(client_key).digest(), auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, client_signature, strict=True))
        self._server_signature = _hmac(_hmac(salted_password, b"Server Key"), auth_message)
        self._stage = _ClientStage.SERVER_FINAL
        return f"{without_proof},p={_b64encode(proof)}".encode()

    def verify_server_final(self, data: bytes) -> None:
        """Check AuthenticationSASLFinal's server signature; raise if the server is not genuine."""
        self._expect(_ClientStage.SERVER_FINAL)
        text = self._decode_server_message(data, "server-final")
        try:
            signature = _read_server_final(text)
            if not hmac.compare_digest(signature, self._server_signature):
                raise ValueError("the server signature does not match")
        except ValueError as exc:
            self._stage = _ClientStage.FAILED
            raise AuthenticationFailed(
                f"upstream server-final rejected ({exc}): the server does not know the "
                f"password's verifier, or refused the login"
            ) from None
        self._stage = _ClientStage.DONE

    def _expect(self, stage: _ClientStage) -> None:
        if self._stage is not stage:
            previous = self._stage
            self._stage = _ClientStage.FAILED
            raise AuthenticationFailed(
                f"SCRAM client step out of order (expected {previous.name.lower()})"
            )

    def _decode_server_message(self, data: bytes, what: str) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            self._stage = _ClientStage.FAILED
            raise AuthenticationFailed(f"upstream {what} is not valid UTF-8") from None


# The attribute names RFC 5802 defines; any other is an extension.
_SCRAM_ATTRIBUTES: Final = frozenset("anmrcsipve")


def _server_attributes(text: str, expected: str) -> dict[str, str]:
    """A server message's attributes, which must be `expected` in order, then extensions only
    (or `e=`: a refusal). ValueError says what is wrong."""
    attributes: dict[str, str] = {}
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=" or not (part[0].isascii() and part[0].isalpha()):
            raise ValueError("malformed attribute")
        name, value = part[0], part[2:]
        if name == "m":
            raise ValueError("mandatory extension (m=) not supported")
        if name in attributes:
            raise ValueError(f"attribute {name!r} repeated")
        if not value or "\x00" in value:
            raise ValueError(f"attribute {name!r} empty or with a NUL")
        attributes[name] = value
    names = list(attributes)
    if names[:1] == ["e"]:
        raise ValueError(f"the server refused: {attributes['e']}")
    known = names[: len(expected)]
    extensions = names[len(expected):]
    if "".join(known) != expected or any(name in _SCRAM_ATTRIBUTES for name in extensions):
        raise ValueError(f"attributes {''.join(names)!r}, expected {expected!r} and extensions")
    return attributes


def _read_server_first(text: str, client_nonce: str) -> tuple[str, bytes, int]:
    """(combined nonce, salt, iterations) of a server-first message."""
    attributes = _server_attributes(text, "rsi")
    nonce, salt_b64, count = attributes["r"], attributes["s"], attributes["i"]
    if not _is_printable_nonce(nonce):
        raise ValueError("nonce not printable ASCII")
    if not nonce.startswith(client_nonce) or len(nonce) <= len(client_nonce):
        raise ValueError("the nonce does not extend ours")
    salt = _strict_b64decode(salt_b64)
    if len(salt) < MIN_UPSTREAM_SALT_LENGTH:
        raise ValueError(f"salt shorter than {MIN_UPSTREAM_SALT_LENGTH} bytes")
    if not (count.isascii() and count.isdigit()) or count[0] == "0":
        raise ValueError("iteration count not a number without leading zeros")
    iterations = int(count)
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iteration count {iterations} not between {MIN_ITERATIONS} and {MAX_ITERATIONS}")
    return nonce, salt, iterations


def _read_server_final(text: str) -> bytes:
    """The server signature of a server-final message."""
    return _strict_b64decode(_server_attributes(text, "v")["v"])


def _strict_b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("invalid base64") from None


def md5_password_message(user: str, password: str, salt: bytes) -> bytes:
    """The PasswordMessage payload answering AuthenticationMD5Password, without its NUL:
    `md5` + hex(md5(hex(md5(password + user)) + salt))."""
    if len(salt) != _MD5_SALT_LENGTH:
        raise ValueError(f"the md5 salt is {_MD5_SALT_LENGTH} bytes, got {len(salt)}")
    inner = hashlib.md5(password.encode() + user.encode(), usedforsecurity=False).hexdigest()
    outer = hashlib.md5(inner.encode("ascii") + salt, usedforsecurity=False).hexdigest()
    return b"md5" + outer.encode("ascii")


# --------------------------------------------------------------------------- helpers


def _failed(detail: str) -> AuthenticationFailed:
    return AuthenticationFailed(log_detail=detail)


def _check_channel_binding(channel_binding: tuple[str, bytes]) -> None:
    name, data = channel_binding
    if name != TLS_SERVER_END_POINT:
        raise ValueError(
            f"unsupported channel binding type {name!r}; PostgreSQL uses {TLS_SERVER_END_POINT!r}"
        )
    if not isinstance(data, bytes) or not data:
        raise ValueError("channel binding data must be non-empty bytes")


def _decode_client_message(data: bytes, what: str) -> str:
    if len(data) > MAX_SCRAM_MESSAGE_BYTES:
        raise _failed(f"{what} is longer than {MAX_SCRAM_MESSAGE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise _failed(f"{what} is not valid UTF-8") from None


def _split_attributes(text: str, what: str) -> list[tuple[str, str]]:
    """`a=1,b=2` -> [("a", "1"), ("b", "2")]; only `n` (the ignored user name) may be empty."""
    attributes: list[tuple[str, str]] = []
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=" or not (part[0].isascii() and part[0].isalpha()):
            raise _failed(f"{what} has a malformed attribute")
        if len(part) == 2 and part[0] != "n":
            raise _failed(f"{what} has an empty {part[0]!r} attribute")
        attributes.append((part[0], part[2:]))
    return attributes


def _is_printable_nonce(nonce: str) -> bool:
    # RFC 5802 `printable`: %x21-2B / %x2D-7E, i.e. visible ASCII except ','.
    return bool(nonce) and all("\x21" <= c <= "\x7e" and c != "," for c in nonce)


def saslprep(text: str) -> str:
    """RFC 4013 SASLprep of a stored string (unassigned code points refused); ValueError when
    the string is refused. As scramp's `saslprep` (tests compare every code point)."""
    # Map: non-ASCII spaces to a space (C.1.2), "commonly mapped to nothing" away (B.1).
    mapped = "".join(" " if stringprep.in_table_c12(c) else c for c in text if not stringprep.in_table_b1(c))
    prepared = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    if not prepared:
        return ""
    # Bidi (RFC 3454 section 6): with a RandALCat character first, the last must be one too and
    # no LCat character may appear; otherwise no RandALCat character may.
    ral = stringprep.in_table_d1
    if ral(prepared[0]):
        if not ral(prepared[-1]):
            raise ValueError("malformed bidi sequence")
        forbidden_bidi = stringprep.in_table_d2
    else:
        forbidden_bidi = ral
    for c in prepared:
        if (stringprep.in_table_b1(c) or stringprep.in_table_c12(c) or stringprep.in_table_a1(c)
                or stringprep.in_table_c21_c22(c) or stringprep.in_table_c3(c) or stringprep.in_table_c4(c)
                or stringprep.in_table_c5(c) or stringprep.in_table_c6(c) or stringprep.in_table_c7(c)
                or stringprep.in_table_c8(c) or stringprep.in_table_c9(c) or forbidden_bidi(c)):
            raise ValueError(f"prohibited character U+{ord(c):04X}")
    return prepared


def _saslprep_or_none(text: str) -> str | None:
    try:
        prepared = saslprep(text)
    except ValueError:
        return None
    return prepared or None


def _password_bytes(password: str) -> bytes:
    """SASLprep'd UTF-8, or, when SASLprep refuses it, the raw bytes (as PostgreSQL does)."""
    prepared = _saslprep_or_none(password)
    if prepared is not None:
        return prepared.encode("utf-8")
    # Raw fallback. `surrogateescape` gives back the original bytes of a password the codec
    # decoded that way; `surrogatepass` keeps any other lone surrogate from raising here.
    try:
        return password.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return password.encode("utf-8", "surrogatepass")


def _derive_keys(password: bytes, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """RFC 5802: SaltedPassword = Hi(password, salt, i); returns (StoredKey, ServerKey)."""
    salted_password = hashlib.pbkdf2_hmac("sha256", password, salt, iterations)
    client_key = _hmac(salted_password, b"Client Key")
    return hashlib.sha256(client_key).digest(), _hmac(salted_password, b"Server Key")


def _unknown_user_verifier(user: str) -> ScramVerifier:
    """A verifier nobody can pass: a per-process deterministic salt for `user`, random keys."""
    name = user.encode("utf-8", "surrogatepass")
    salt = hmac.new(_FAKE_SALT_KEY, b"scram-salt\x00" + name, "sha256").digest()[:SALT_LENGTH]
    return ScramVerifier(
        salt=salt,
        iterations=DEFAULT_ITERATIONS,
        stored_key=secrets.token_bytes(_KEY_LENGTH),
        server_key=secrets.token_bytes(_KEY_LENGTH),
    )


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, "sha256").digest()


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(text: str) -> bytes:
    """Strict base64 (no stray characters, correct padding); ValueError otherwise."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("invalid base64") from None
