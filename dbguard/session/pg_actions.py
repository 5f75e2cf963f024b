"""Actions a PostgreSQL session asks its driver to perform, and the settings it runs with.

Owns: the small vocabulary between the sans-IO session (`session.pg`) and the asyncio driver
(`runtime.pg_listener`). The session never performs I/O; it returns these, in order, and the
driver executes them in that order.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from dbguard.masking.session_masks import MaskDirectory
from dbguard.model import Gate, Identity
from dbguard.session.holds import HoldStatement
from dbguard.session.journal import SessionJournal
from dbguard.wire.pg.auth import ScramVerifier


@dataclass(frozen=True, slots=True)
class SendClient:
    data: bytes


@dataclass(frozen=True, slots=True)
class SendUpstream:
    data: bytes


@dataclass(frozen=True, slots=True)
class StartClientTls:
    """Upgrade the client connection to TLS now (after the 'S' answer to SSLRequest)."""


class UpstreamTlsMode(enum.StrEnum):
    DISABLE = "disable"
    PREFER = "prefer"  # also used for libpq's "allow"
    REQUIRE = "require"  # encrypt, do not verify
    VERIFY_CA = "verify-ca"
    VERIFY_FULL = "verify-full"


@dataclass(frozen=True, slots=True)
class ConnectUpstream:
    """Open the upstream connection; reply with `upstream_connected()` or `upstream_failed()`."""

    host: str
    port: int
    unix_socket: str | None = None


@dataclass(frozen=True, slots=True)
class StartUpstreamTls:
    """Upgrade the upstream connection to TLS; reply with `upstream_tls_started()`."""

    mode: UpstreamTlsMode
    server_hostname: str
    root_cert: str | None


@dataclass(frozen=True, slots=True)
class ForwardCancel:
    """Send a CancelRequest for the upstream backend on a new upstream connection."""

    target: ConnectUpstream
    process_id: int
    secret_key: bytes


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait before executing the remaining actions (slows down password guessing)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Close:
    """Close both connections after everything queued before this has been written."""

    reason: str


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """Informational: the client is authenticated and the upstream ready; register the
    session's cancel key (`proxy_key`) against the upstream's."""

    proxy_key: tuple[int, bytes]
    upstream_key: tuple[int, bytes] | None


SessionAction = (
    SendClient | SendUpstream | StartClientTls | ConnectUpstream | StartUpstreamTls
    | ForwardCancel | Sleep | Close | SessionStarted | HoldStatement
)


@dataclass(frozen=True, slots=True)
class IdentityEntry:
    """An identity that may connect, with the SCRAM verifier derived from its secret."""

    identity: Identity
    verifier: ScramVerifier


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str
    tls_mode: UpstreamTlsMode = UpstreamTlsMode.PREFER
    root_cert: str | None = None
    unix_socket: str | None = None

    @property
    def target(self) -> ConnectUpstream:
        return ConnectUpstream(self.host, self.port, self.unix_socket)


@dataclass(frozen=True, slots=True)
class PgListenerSettings:
    """Everything a session needs from its listener's configuration."""

    name: str
    identities: Mapping[str, IdentityEntry]
    upstream: UpstreamSettings
    gate: Gate
    tls_available: bool = False
    tls_required: bool = False
    allow_cleartext: bool = False
    # The journal (docs/journal.md): sessions produce events when `journal` is on; the
    # driver makes them durable before forwarding, and when it cannot, refuses the
    # statement (`refuse_unjournaled`) or forwards it and says so loudly.
    journal: bool = False
    redact_parameters: bool = False
    refuse_unjournaled: bool = True
    # The process's masks (docs/masking.md); None: results are relayed untouched.
    masks: MaskDirectory | None = None


class CancelTargets:
    """Maps the cancel keys dbguard hands to clients onto upstream backends' keys.

    Shared by all sessions of a process; plain dict operations, so it is safe on one event
    loop. A client never sees the upstream key, so it cannot cancel other sessions' queries
    by guessing, and a cancel only ever reaches the backend of the session that issued it.
    """

    def __init__(self) -> None:
        self._targets: dict[tuple[int, bytes], tuple[ConnectUpstream, int, bytes]] = {}
        self._journals: dict[tuple[int, bytes], SessionJournal] = {}
        self._hooks: dict[tuple[int, bytes], Callable[[], bool]] = {}

    def register(self, proxy_key: tuple[int, bytes], target: ConnectUpstream, upstream_key: tuple[int, bytes],
                 journal: SessionJournal | None = None, on_cancel: Callable[[], bool] | None = None) -> None:
        """`on_cancel`: called when a cancel for this session arrives; True when it cancelled
        a statement held for approval (nothing runs upstream then: the cancel goes no further)."""
        self._targets[proxy_key] = (target, upstream_key[0], upstream_key[1])
        if journal is not None:
            self._journals[proxy_key] = journal
        if on_cancel is not None:
            self._hooks[proxy_key] = on_cancel

    def unregister(self, proxy_key: tuple[int, bytes]) -> None:
        self._targets.pop(proxy_key, None)
        self._journals.pop(proxy_key, None)
        self._hooks.pop(proxy_key, None)

    def journal_of(self, proxy_key: tuple[int, bytes]) -> SessionJournal | None:
        """The journal of the session a cancel key belongs to (its cancel is recorded there)."""
        return self._journals.get(proxy_key)

    def on_cancel_of(self, proxy_key: tuple[int, bytes]) -> Callable[[], bool] | None:
        return self._hooks.get(proxy_key)

    def lookup(self, proxy_key: tuple[int, bytes]) -> tuple[ConnectUpstream, int, bytes] | None:
        return self._targets.get(proxy_key)

    def __len__(self) -> int:
        return len(self._targets)
