"""Logging in to the upstream MySQL/MariaDB server with the listener's own credentials (sans-IO).

Owns: the client side of the upstream connection phase: reading the server's HandshakeV10,
the SSLRequest and the tls_mode rules, the HandshakeResponse41 (the DSN's user and password,
the client's database, the capabilities both the client and the server have, never COMPRESS),
and the authentication exchange: mysql_native_password, caching_sha2_password (fast path;
full authentication in cleartext over TLS or RSA-encrypted with the server's public key),
mysql_clear_password (only over TLS) and MariaDB's client_ed25519, with auth switches.
The session creates one `UpstreamLogin` once the TCP connection is open and feeds it upstream
bytes until it reports `UpstreamReady` or `UpstreamRefused`.

Must not: touch the client connection (it returns what to tell the client), or keep anything
after the login (the session takes the results).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from dbguard.session.pg_actions import (
    SendUpstream,
    StartUpstreamTls,
    UpstreamSettings,
    UpstreamTlsMode,
)
from dbguard.wire.mysql import auth
from dbguard.wire.mysql import messages as m
from dbguard.wire.mysql.packets import PacketReader, ProtocolViolation, encode_packets

log = logging.getLogger("dbguard.session")

_TLS_MANDATORY = (UpstreamTlsMode.REQUIRE, UpstreamTlsMode.VERIFY_CA, UpstreamTlsMode.VERIFY_FULL)
# Capabilities never asked of the upstream, whatever the client asked for.
_NEVER = m.Capability.COMPRESS | m.Capability.ZSTD_COMPRESSION | m.Capability.SSL
_MAX_PACKET = 16 * 1024 * 1024
_AUTH_EXCHANGES = 8  # auth switches / more-data rounds before the server is considered broken

ERRNO_UPSTREAM_REFUSED = 1043  # ER_HANDSHAKE_ERROR, sent with SQLSTATE 08004
SQLSTATE_REJECTED = "08004"
# Server errors that say the service account's credentials or rights are wrong: the client is told
# only that dbguard's login was refused (the account and its problem are the operator's business,
# and are logged); any other login error (unknown database, too many connections...) is relayed.
_CREDENTIAL_ERRNOS = frozenset({
    1044,  # ER_DBACCESS_DENIED_ERROR
    1045,  # ER_ACCESS_DENIED_ERROR
    1251,  # ER_NOT_SUPPORTED_AUTH_MODE
    1698,  # ER_ACCESS_DENIED_NO_PASSWORD_ERROR
    1820, 1862,  # password expired
    3118, 4151,  # account locked (MySQL, MariaDB)
})


class Step(enum.Enum):
    GREETING = "greeting"  # waiting for the server's HandshakeV10
    TLS = "tls"  # SSLRequest sent, the driver runs the TLS handshake
    AUTH = "auth"  # HandshakeResponse41 sent, authenticating
    DONE = "done"


@dataclass(frozen=True, slots=True)
class UpstreamReady:
    """The server accepted the login. `status` comes from its OK packet."""

    greeting: m.HandshakeV10
    capabilities: m.Capability
    status: m.ServerStatus
    tls: bool
    rest: bytes  # bytes after the OK (a well-behaved server sends none)


@dataclass(frozen=True, slots=True)
class UpstreamRefused:
    reason: str  # for the log
    client_error: m.ErrPacket  # what the client is told (the session sets its sequence id)


LoginOutcome = UpstreamReady | UpstreamRefused | None
LoginActions = list[SendUpstream | StartUpstreamTls]


def _nonce(data: bytes) -> bytes:
    """Plugin data as sent (scramble + NUL for native/caching_sha2) -> the scramble."""
    return data[:-1] if data.endswith(b"\x00") and len(data) in (21, 33) else data


class UpstreamLogin:
    """Steps through one upstream login. Feed every upstream byte to `feed()`."""

    def __init__(self, upstream: UpstreamSettings, *, client_capabilities: m.Capability,
                 character_set: int, database: str,
                 connect_attrs: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self.upstream = upstream
        self.step = Step.GREETING
        self._client_caps = client_capabilities
        self._charset = character_set
        self._database = database.encode("utf-8")
        self._attrs = connect_attrs
        self._reader = PacketReader(expected_sequence=0)
        self._seq = 0  # next sequence id we send
        self._tls = False
        self._greeting: m.HandshakeV10 | None = None
        self._caps = m.Capability(0)
        self._plugin = b""
        self._nonce = b""
        self._rounds = 0
        self._sha2_state = ""  # "" | "full" (asked for full auth) | "key" (public key requested)
        self._password = upstream.password.encode("utf-8")

    # ------------------------------------------------------------------ input

    def feed(self, data: bytes) -> tuple[LoginActions, LoginOutcome]:
        out: LoginActions = []
        try:
            self._reader.feed(data)
            for packet in self._reader.packets():
                self._seq = packet.next_sequence_id
                outcome = self._on_packet(packet.payload, out)
                if outcome is not None:
                    if isinstance(outcome, UpstreamReady):
                        outcome = UpstreamReady(outcome.greeting, outcome.capabilities, outcome.status,
                                                outcome.tls, self._reader.take_rest())
                    self.step = Step.DONE
                    return out, outcome
                if self.step is Step.TLS:
                    break
        except (ProtocolViolation, auth.AuthenticationError, ValueError) as exc:
            self.step = Step.DONE
            return out, self._refused(f"upstream protocol error during login: {exc}")
        return out, None

    def tls_started(self) -> tuple[LoginActions, LoginOutcome]:
        """The driver finished the upstream TLS handshake: send the handshake response."""
        if self.step is not Step.TLS:
            raise ProtocolViolation("upstream TLS was not requested")
        self._tls = True
        out: LoginActions = []
        try:
            self._send_response(out)
        except (ValueError, auth.AuthenticationError) as exc:
            self.step = Step.DONE
            return out, self._refused(f"cannot answer the upstream greeting: {exc}")
        return out, None

    # ------------------------------------------------------------------ steps

    def _send(self, payload: bytes, out: LoginActions) -> None:
        data, self._seq = encode_packets(payload, self._seq)
        self._reader.expect(self._seq)
        out.append(SendUpstream(data))

    def _refused(self, reason: str) -> UpstreamRefused:
        log.warning("session.upstream_login_failed", extra={"reason": reason, "upstream": self.upstream.host})
        return UpstreamRefused(reason, m.err(
            ERRNO_UPSTREAM_REFUSED, SQLSTATE_REJECTED, "dbguard: the upstream server refused the proxy's connection"))

    def _on_packet(self, payload: bytes, out: LoginActions) -> LoginOutcome:
        if m.is_err(payload):
            e = m.ErrPacket.decode(payload)
            text = e.message.decode("utf-8", "replace")
            refused = self._refused(f"upstream error {e.errno} during login: {text}")
            if e.errno in _CREDENTIAL_ERRNOS:
                return UpstreamRefused(refused.reason, m.err(
                    ERRNO_UPSTREAM_REFUSED, SQLSTATE_REJECTED,
                    f"dbguard: the database server rejected dbguard's credentials (server errno {e.errno})"))
            # Relayed as the server sent it, with the service account's name taken out.
            account = self.upstream.user
            shown = text.replace(account, "<dbguard service account>") if account else text
            return UpstreamRefused(refused.reason, m.ErrPacket(e.errno, e.sqlstate, shown.encode("utf-8")))
        if self.step is Step.GREETING:
            return self._on_greeting(payload, out)
        if self.step is not Step.AUTH:
            raise ProtocolViolation(f"unexpected upstream packet in step {self.step.value}")
        if m.is_ok(payload):
            if self._plugin == auth.CACHING_SHA2_PASSWORD and self._sha2_state == "key":
                raise ProtocolViolation("OK before the RSA-encrypted password was sent")
            ok = m.OkPacket.decode(payload, self._caps)
            assert self._greeting is not None
            return UpstreamReady(self._greeting, self._caps, ok.status_flags, self._tls, b"")
        self._rounds += 1
        if self._rounds > _AUTH_EXCHANGES:
            raise ProtocolViolation("too many authentication rounds")
        head = payload[0] if payload else -1
        if head == m.AUTH_SWITCH_HEADER:
            switch = m.AuthSwitchRequest.decode(payload)
            self._plugin = switch.plugin_name
            self._nonce = _nonce(switch.plugin_data)
            self._sha2_state = ""
            self._send(self._scramble(), out)
            return None
        if head == m.AUTH_MORE_DATA_HEADER and self._plugin == auth.CACHING_SHA2_PASSWORD:
            data = m.AuthMoreData.decode(payload).data
            if self._sha2_state == "key":
                self._send(auth.rsa_encrypt_password(self._password, self._nonce, data), out)
                self._sha2_state = "sent"
            elif data == auth.CACHING_SHA2_FAST_AUTH_SUCCESS:
                pass  # the OK follows
            elif data == auth.CACHING_SHA2_PERFORM_FULL_AUTHENTICATION:
                if self._tls:
                    self._send(auth.clear_password_response(self._password), out)
                    self._sha2_state = "sent"
                else:
                    self._send(auth.CACHING_SHA2_REQUEST_PUBLIC_KEY, out)
                    self._sha2_state = "key"
            else:
                raise ProtocolViolation("unexpected caching_sha2_password data")
            return None
        raise ProtocolViolation(f"unexpected upstream packet 0x{head & 0xFF:02x} during authentication")

    def _on_greeting(self, payload: bytes, out: LoginActions) -> LoginOutcome:
        greeting = m.HandshakeV10.decode(payload)
        self._greeting = greeting
        server_tls = bool(greeting.capabilities & m.Capability.SSL)
        mode = self.upstream.tls_mode
        if mode in _TLS_MANDATORY and not server_tls:
            return self._refused("the upstream server does not offer TLS and tls_mode requires it")
        caps = self._client_caps & greeting.capabilities & ~_NEVER
        caps |= m.Capability.PROTOCOL_41 | m.Capability.SECURE_CONNECTION
        caps &= ~m.Capability.CONNECT_WITH_DB
        if self._database and greeting.capabilities & m.Capability.CONNECT_WITH_DB:
            caps |= m.Capability.CONNECT_WITH_DB
        self._caps = caps
        self._plugin = greeting.auth_plugin_name or auth.MYSQL_NATIVE_PASSWORD
        self._nonce = greeting.nonce
        self.step = Step.AUTH
        if server_tls and mode is not UpstreamTlsMode.DISABLE:
            self._caps |= m.Capability.SSL
            self._send(m.SSLRequest(self._caps, _MAX_PACKET, self._charset).encode(), out)
            self.step = Step.TLS
            out.append(StartUpstreamTls(mode, self.upstream.host, self.upstream.root_cert))
            return None
        self._send_response(out)
        return None

    def _send_response(self, out: LoginActions) -> None:
        self.step = Step.AUTH
        plugin = self._plugin
        if plugin not in (auth.MYSQL_NATIVE_PASSWORD, auth.CACHING_SHA2_PASSWORD, auth.CLIENT_ED25519) and not (
                plugin == auth.MYSQL_CLEAR_PASSWORD and self._tls):
            # Answer with native; the server switches us to what it wants for this account.
            plugin = self._plugin = auth.MYSQL_NATIVE_PASSWORD
        caps = self._caps
        response = m.HandshakeResponse41(
            capabilities=caps,
            max_packet_size=_MAX_PACKET,
            character_set=self._charset,
            username=self.upstream.user.encode("utf-8"),
            auth_response=self._scramble(),
            database=self._database if caps & m.Capability.CONNECT_WITH_DB else None,
            auth_plugin_name=plugin if caps & m.Capability.PLUGIN_AUTH else None,
            connect_attrs=self._attrs if caps & m.Capability.CONNECT_ATTRS else (),
        )
        self._send(response.encode(), out)

    def _scramble(self) -> bytes:
        plugin, pw = self._plugin, self._password
        if plugin == auth.MYSQL_NATIVE_PASSWORD:
            return auth.scramble_native_password(pw, self._nonce)
        if plugin == auth.CACHING_SHA2_PASSWORD:
            return auth.scramble_caching_sha2(pw, self._nonce)
        if plugin == auth.CLIENT_ED25519:
            return auth.ed25519_sign_nonce(pw, self._nonce)
        if plugin == auth.MYSQL_CLEAR_PASSWORD:
            if not self._tls:
                raise auth.AuthenticationError("the server asked for a cleartext password without TLS")
            return auth.clear_password_response(pw)
        raise auth.AuthenticationError(f"unsupported upstream auth plugin {plugin!r}")
