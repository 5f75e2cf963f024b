"""Logging in to the upstream PostgreSQL with the listener's own credentials (sans-IO).

Owns: the client side of the upstream handshake: SSLRequest and the sslmode rules, the
StartupMessage (the DSN's user, the client's database and allowed settings), authentication
(SCRAM-SHA-256 with the server's signature checked and -PLUS over TLS, md5, cleartext,
trust), then ParameterStatus, BackendKeyData and the first ReadyForQuery. The session creates
one `UpstreamLogin` once the TCP connection is open and feeds it upstream bytes until it
reports `UpstreamReady` or `UpstreamRefused`.

Must not: touch the client connection (it returns what to tell the client, the session sends
it), or keep anything after the login (the session takes the results).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from dbguard.session.pg_actions import (
    SendUpstream,
    SessionAction,
    StartUpstreamTls,
    UpstreamSettings,
    UpstreamTlsMode,
)
from dbguard.wire.pg import messages as m
from dbguard.wire.pg.auth import (
    AuthenticationFailed,
    ScramClientExchange,
    md5_password_message,
    tls_server_end_point_hash,
)
from dbguard.wire.pg.framing import ALL_TYPES, PROTOCOL_3_0, Frame, MessageScanner, Passthrough, ProtocolViolation

log = logging.getLogger("dbguard.session")

# Startup parameters that never go upstream as the client sent them.
_PROXY_OWNED_PARAMS = frozenset({"user", "database", "replication"})
_TLS_MANDATORY = (UpstreamTlsMode.REQUIRE, UpstreamTlsMode.VERIFY_CA, UpstreamTlsMode.VERIFY_FULL)

SQLSTATE_CANNOT_CONNECT = "08001"
SQLSTATE_REJECTED = "08004"


class Step(enum.Enum):
    TLS_ANSWER = "tls-answer"  # SSLRequest sent, waiting for 'S' or 'N'
    TLS = "tls"  # the driver is running the TLS handshake
    AUTH = "auth"  # StartupMessage sent, authenticating
    STARTUP = "startup"  # authenticated, collecting ParameterStatus / BackendKeyData
    DONE = "done"


@dataclass(frozen=True, slots=True)
class UpstreamReady:
    """The upstream is at its first ReadyForQuery."""

    status: bytes
    server_params: dict[str, str]
    backend_key: tuple[int, bytes] | None
    notices: list[bytes]  # NoticeResponses sent during startup, to relay to the client
    rest: bytes  # whatever followed ReadyForQuery in the same read


@dataclass(frozen=True, slots=True)
class UpstreamRefused:
    """The login failed; `client_message` is the FATAL ErrorResponse for the client."""

    client_message: bytes
    reason: str


LoginOutcome = UpstreamReady | UpstreamRefused | None


def channel_binding_hash(cert_der: bytes | None) -> bytes | None:
    """tls-server-end-point data for a certificate, or None where it has none (Ed25519)."""
    if cert_der is None:
        return None
    try:
        return tls_server_end_point_hash(cert_der)
    except ValueError:
        return None


@dataclass
class UpstreamLogin:
    upstream: UpstreamSettings
    client_params: Mapping[str, str]
    database: str
    session_id: str
    step: Step = Step.AUTH
    server_params: dict[str, str] = field(default_factory=dict)
    _scanner: MessageScanner = field(default_factory=lambda: MessageScanner(ALL_TYPES))
    _scram: ScramClientExchange | None = None
    _cert_hash: bytes | None = None
    _backend_key: tuple[int, bytes] | None = None
    _notices: list[bytes] = field(default_factory=list)

    def start(self) -> list[SessionAction]:
        """The TCP connection is open: ask for TLS, or log in right away."""
        if self.upstream.tls_mode is UpstreamTlsMode.DISABLE or self.upstream.unix_socket:
            return [self._startup_message()]
        self.step = Step.TLS_ANSWER
        return [SendUpstream(m.SSL_REQUEST)]

    def tls_started(self, server_cert_der: bytes | None) -> list[SessionAction]:
        self._cert_hash = channel_binding_hash(server_cert_der)
        return [self._startup_message()]

    def receive(self, data: bytes) -> tuple[list[SessionAction], LoginOutcome]:
        """Bytes from the upstream. Raises ProtocolViolation for bytes that are not the
        protocol; a refusal by the server is an `UpstreamRefused` outcome."""
        if self.step is Step.TLS_ANSWER:
            return self._tls_answer(data)
        if self.step not in (Step.AUTH, Step.STARTUP):
            raise ProtocolViolation(f"unexpected data from the server during login ({self.step.value})")
        out: list[SessionAction] = []
        self._scanner.feed(data)
        for segment in self._scanner.segments():
            assert isinstance(segment, Frame)  # every type is inspected during the login
            msg = m.decode_backend(segment.type, segment.payload)
            if isinstance(msg, m.ErrorOrNotice) and not msg.notice:
                return out, self._startup_error(msg)
            if self.step is Step.AUTH:
                refused = self._auth_message(msg, out)
            else:
                refused = self._startup_message_from_server(msg, segment.raw)
            if refused is not None:
                return out, refused
            if isinstance(msg, m.ReadyForQuery):
                self.step = Step.DONE
                rest = b"".join(s.data if isinstance(s, Passthrough) else s.raw for s in self._scanner.segments())
                return out, UpstreamReady(msg.status, self.server_params, self._backend_key, self._notices, rest)
        return out, None

    # ------------------------------------------------------------------ steps

    def _tls_answer(self, data: bytes) -> tuple[list[SessionAction], LoginOutcome]:
        answer, rest = data[:1], data[1:]
        if rest:
            raise ProtocolViolation("server sent data after its SSLRequest answer")
        up = self.upstream
        if answer == b"S":
            self.step = Step.TLS
            return [StartUpstreamTls(up.tls_mode, up.host, up.root_cert)], None
        if answer == b"N":
            if up.tls_mode in _TLS_MANDATORY:
                message = ("dbguard: the database server does not support TLS, "
                           f"but the upstream sslmode is {up.tls_mode.value}")
                return [], UpstreamRefused(m.fatal(SQLSTATE_CANNOT_CONNECT, message), "upstream TLS unavailable")
            return [self._startup_message()], None
        if answer == b"E":
            raise ProtocolViolation("server answered SSLRequest with an error")
        raise ProtocolViolation(f"invalid answer {answer!r} to SSLRequest")

    def _startup_message(self) -> SendUpstream:
        up = self.upstream
        params = {"user": up.user, "database": self.database or up.database}
        for key, value in self.client_params.items():
            if key in _PROXY_OWNED_PARAMS or key.startswith(("_pq_.", "dbguard.")):
                continue
            params[key] = value
        self.step = Step.AUTH
        return SendUpstream(m.StartupMessage(PROTOCOL_3_0, params).encode())

    def _auth_message(self, msg: m.BackendMessage, out: list[SessionAction]) -> UpstreamRefused | None:
        up = self.upstream
        if isinstance(msg, m.NegotiateProtocolVersion):
            return None
        if not isinstance(msg, m.Authentication):
            raise ProtocolViolation(f"unexpected {type(msg).__name__} during authentication")
        try:
            if msg.code == m.AUTH_OK:
                if self._scram is not None and not self._scram.completed:
                    # A server that skips SASLFinal never proved it knows the password.
                    raise AuthenticationFailed(log_detail="server skipped the SCRAM server signature")
                self.step = Step.STARTUP
            elif msg.code == m.AUTH_CLEARTEXT:
                out.append(SendUpstream(m.PasswordLike(up.password.encode() + b"\x00").encode()))
            elif msg.code == m.AUTH_MD5:
                if len(msg.data) != 4:
                    raise ProtocolViolation("md5 authentication request without a 4-byte salt")
                response = md5_password_message(up.user, up.password, msg.data)
                out.append(SendUpstream(m.PasswordLike(response + b"\x00").encode()))
            elif msg.code == m.AUTH_SASL:
                binding = ("tls-server-end-point", self._cert_hash) if self._cert_hash else None
                self._scram = ScramClientExchange(up.user, up.password, list(msg.mechanisms),
                                                  channel_binding=binding)
                out.append(SendUpstream(m.encode_sasl_initial_response(
                    self._scram.mechanism, self._scram.client_first())))
            elif msg.code == m.AUTH_SASL_CONTINUE and self._scram is not None:
                out.append(SendUpstream(m.PasswordLike(self._scram.client_final(msg.data)).encode()))
            elif msg.code == m.AUTH_SASL_FINAL and self._scram is not None:
                self._scram.verify_server_final(msg.data)
            else:
                message = ("dbguard: the database server asked for an authentication method "
                           f"dbguard does not support (code {msg.code})")
                return UpstreamRefused(m.fatal(SQLSTATE_REJECTED, message), "unsupported upstream auth")
        except AuthenticationFailed as exc:
            log.error("upstream.auth_failed", extra={"session": self.session_id,
                                                     "error": exc.log_detail or str(exc)})
            return UpstreamRefused(m.fatal(SQLSTATE_REJECTED, "dbguard: could not authenticate to the database server"),
                                   "upstream auth failed")
        return None

    def _startup_message_from_server(self, msg: m.BackendMessage, raw: bytes) -> UpstreamRefused | None:
        if isinstance(msg, m.ParameterStatus):
            self.server_params[msg.name] = msg.value
        elif isinstance(msg, m.BackendKeyData):
            self._backend_key = (msg.process_id, msg.secret_key)
        elif isinstance(msg, m.ErrorOrNotice):
            self._notices.append(raw)  # errors were handled before
        elif not isinstance(msg, m.ReadyForQuery):
            raise ProtocolViolation(f"unexpected {type(msg).__name__} during startup")
        return None

    def _startup_error(self, msg: m.ErrorOrNotice) -> UpstreamRefused:
        sqlstate = msg.sqlstate or ""
        log.error("upstream.startup_error", extra={"session": self.session_id, "sqlstate": sqlstate,
                                                   "error": msg.message})
        if sqlstate.startswith("28"):
            # The service account's credentials are dbguard's business, not the client's.
            data = m.fatal(SQLSTATE_REJECTED, "dbguard: the database server rejected dbguard's credentials",
                          hint="Ask the dbguard operator to check the listener's upstream DSN.")
        else:
            data = m.ErrorOrNotice(msg.fields).encode()  # e.g. 3D000: the client's own business
        return UpstreamRefused(data, f"upstream startup error {sqlstate}")
