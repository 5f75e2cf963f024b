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

Library use: the client side is scramp's `ScramClient`. The server side is written here because
scramp's `ScramServer` rejects what libpq sends (an empty `n=` user name: PostgreSQL takes the
user from the startup packet and ignores this field) and silently upgrades SCRAM-SHA-256 to
-PLUS where PostgreSQL refuses the mismatch. Its crypto is RFC 5802 section 3 composed from
stdlib hmac/hashlib; SASLprep comes from scramp. Tests check both sides against scramp, the
RFC 7677 vectors, a real PostgreSQL server and real libpq.

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
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from scramp import ScramClient, ScramException
from scramp.utils import saslprep

SCRAM_SHA_256: Final = "SCRAM-SHA-256"
SCRAM_SHA_256_PLUS: Final = "SCRAM-SHA-256-PLUS"
TLS_SERVER_END_POINT: Final = "tls-server-end-point"
"""The only channel binding type PostgreSQL uses (RFC 5929)."""

DEFAULT_ITERATIONS: Final = 4096
"""PostgreSQL's default `scram_iterations`, and RFC 7677's minimum."""
MIN_ITERATIONS: Final = 4096
MAX_ITERATIONS: Final = 10_000_000
"""Upper bound on our own verifiers: beyond this, a login costs seconds of CPU."""
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
    """
    try:
        certificate = x509.load_der_x509_certificate(cert_der)
    except ValueError:
        raise ValueError("not a DER-encoded X.509 certificate") from None
    try:
        algorithm = certificate.signature_hash_algorithm
    except UnsupportedAlgorithm:
        algorithm = None
    if algorithm is None:
        raise ValueError(
            "the certificate's signature algorithm has no single hash function, so "
            "tls-server-end-point channel binding is undefined for it"
        )
    if isinstance(algorithm, hashes.MD5 | hashes.SHA1):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert_der)
    return digest.finalize()


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
        # PostgreSQL ignores the user name in client-first (libpq sends it empty, which scramp
        # cannot), so a name SASLprep refuses is replaced rather than failing the login.
        scram_user = user if _saslprep_or_none(user) else "*"
        if not _saslprep_or_none(password):
            raise AuthenticationFailed(
                "the upstream password is empty or not a valid SASLprep string, which the "
                "SCRAM client (scramp) cannot use"
            )
        try:
            self._client = ScramClient(
                [mechanism],
                scram_user,
                password,
                channel_binding=channel_binding,
                c_nonce=client_nonce,
            )
        except ScramException as exc:
            raise AuthenticationFailed(f"cannot start the SCRAM exchange: {exc}") from None
        self.mechanism: Final[str] = mechanism
        self._stage = _ClientStage.CLIENT_FIRST

    @property
    def completed(self) -> bool:
        """True once the server has proved it knows the password's verifier."""
        return self._stage is _ClientStage.DONE

    def client_first(self) -> bytes:
        """The client-first payload for SASLInitialResponse."""
        self._expect(_ClientStage.CLIENT_FIRST)
        message: str = self._client.get_client_first()
        self._stage = _ClientStage.CLIENT_FINAL
        return message.encode("utf-8")

    def client_final(self, server_first: bytes) -> bytes:
        """Take AuthenticationSASLContinue's server-first; return client-final."""
        self._expect(_ClientStage.CLIENT_FINAL)
        text = self._decode_server_message(server_first, "server-first")
        try:
            self._client.set_server_first(text)
            message: str = self._client.get_client_final()
        except ScramException as exc:
            self._stage = _ClientStage.FAILED
            raise AuthenticationFailed(f"upstream sent an unusable server-first: {exc}") from None
        self._stage = _ClientStage.SERVER_FINAL
        return message.encode("utf-8")

    def verify_server_final(self, data: bytes) -> None:
        """Check AuthenticationSASLFinal's server signature; raise if the server is not genuine."""
        self._expect(_ClientStage.SERVER_FINAL)
        text = self._decode_server_message(data, "server-final")
        try:
            self._client.set_server_final(text)
        except ScramException as exc:
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


def _saslprep_or_none(text: str) -> str | None:
    try:
        prepared: str = saslprep(text)
    except ScramException:
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
