"""Settings a MySQL session runs with, and the MySQL-only actions it asks its driver for.

Owns: the listener settings of a `protocol: mysql` listener as the sans-IO session
(`session.mysql`) needs them (identities with their MySQL verifiers, the upstream DSN, the
gate, the RSA key for caching_sha2_password full authentication, TLS availability), and
`MysqlStartClientTls`. Every other action is the shared vocabulary of `session.pg_actions`
(SendClient, SendUpstream, ConnectUpstream, StartUpstreamTls, Sleep, Close) and of
`session.holds` (HoldStatement), which the driver executes in order exactly as for PostgreSQL.

Must not touch: I/O, the PostgreSQL settings (it only re-uses their action types).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dbguard.masking.session_masks import MaskDirectory
from dbguard.model import Gate, Identity
from dbguard.session.holds import HoldStatement
from dbguard.session.pg_actions import (
    Close,
    ConnectUpstream,
    SendClient,
    SendUpstream,
    Sleep,
    StartUpstreamTls,
    UpstreamSettings,
)
from dbguard.wire.mysql.auth import (
    CACHING_SHA2_PASSWORD,
    CachingSha2Verifier,
    NativePasswordVerifier,
    RsaKeyPair,
)


@dataclass(frozen=True, slots=True)
class MysqlStartClientTls:
    """Upgrade the client connection to TLS now. MySQL clients start the TLS handshake right
    after their SSLRequest without waiting for an answer, so `initial` holds the bytes that
    already arrived after it (the start of the ClientHello): the driver must feed them to the
    TLS layer before reading more, then call `client_tls_started()`."""

    initial: bytes


@dataclass(frozen=True, slots=True)
class MysqlIdentityEntry:
    """An identity that may connect, with the verifiers derived from its secret (never the secret)."""

    identity: Identity
    native: NativePasswordVerifier
    caching_sha2: CachingSha2Verifier

    @classmethod
    def from_secret(cls, identity: Identity, secret: str) -> MysqlIdentityEntry:
        raw = secret.encode("utf-8")
        return cls(identity, NativePasswordVerifier.from_password(raw), CachingSha2Verifier.from_password(raw))


DEFAULT_SERVER_VERSION = b"5.5.5-10.11.0-MariaDB-dbguard"
"""Announced to clients when the upstream's version is not known yet (MariaDB's `5.5.5-`
prefix keeps old clients' version checks working)."""


@dataclass(frozen=True, slots=True)
class MysqlListenerSettings:
    """Everything a MySQL session needs from its listener's configuration."""

    name: str
    identities: Mapping[str, MysqlIdentityEntry]
    upstream: UpstreamSettings
    gate: Gate
    # caching_sha2_password full authentication without TLS (RSA key exchange); None: full
    # authentication is only possible over TLS.
    rsa_key: RsaKeyPair | None = None
    tls_available: bool = False
    tls_required: bool = False
    # The plugin named in the greeting; a client that answers with another is switched to it.
    default_auth_plugin: bytes = CACHING_SHA2_PASSWORD
    # Always run caching_sha2_password full authentication (as a MySQL server does on a cache
    # miss) instead of accepting the fast-path scramble.
    force_full_auth: bool = False
    # The journal (docs/journal.md), as for PostgreSQL (session.pg_actions.PgListenerSettings).
    journal: bool = False
    redact_parameters: bool = False
    refuse_unjournaled: bool = True
    server_version: bytes | None = None  # the upstream's version string, if known
    # The process's masks (docs/masking.md); None: results are relayed untouched.
    masks: MaskDirectory | None = None


MysqlSessionAction = (
    SendClient | SendUpstream | MysqlStartClientTls | ConnectUpstream | StartUpstreamTls | Sleep | Close
    | HoldStatement
)
