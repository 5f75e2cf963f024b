"""The state machine of one PostgreSQL client connection through the proxy (sans-IO).

Owns: the startup handshake with the client (SSLRequest, GSSENCRequest, CancelRequest,
StartupMessage), authenticating the client against dbguard identities (SCRAM-SHA-256, or a
cleartext password where allowed), the upstream handshake with the DSN's own credentials,
and the query cycle once both sides are ready: every SQL text passes the gate, responses are
relayed, and the session tracks transaction status, COPY and outstanding ReadyForQuery.

Must not touch: sockets, asyncio, TLS objects. Input arrives through `client_data()`,
`upstream_data()` and the driver's event callbacks; output is a list of `SessionAction`s.

Phases (legal transitions only; anything else is a protocol error answered with 08P01):

    STARTUP -> [CLIENT_TLS] -> STARTUP -> CLIENT_AUTH -> UPSTREAM_CONNECT
      -> UPSTREAM_LOGIN (its own steps: session.pg_upstream_login) -> READY -> CLOSED
    STARTUP --CancelRequest--> CLOSED
"""

from __future__ import annotations

import enum
import logging
import secrets
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from dbguard.model import (
    Action,
    Decision,
    Identity,
    SessionGate,
    SessionInfo,
    StatementSource,
)
from dbguard.session.holds import (
    MAX_HELD_BEHIND_HOLD,
    HeldStatement,
    HoldResolved,
    HoldStatement,
    journal_abandoned,
)
from dbguard.session.journal import SessionJournal, statement_text
from dbguard.session.pg_actions import (
    CancelTargets,
    Close,
    ConnectUpstream,
    ForwardCancel,
    PgListenerSettings,
    SendClient,
    SendUpstream,
    SessionAction,
    SessionStarted,
    Sleep,
    StartClientTls,
)
from dbguard.session.pg_journal import (
    BoundValues,
    bind_parameters,
    error_fields,
    parameter_types,
    render_parameters,
    rows_from_tag,
)
from dbguard.session.pg_masking import CatalogCache, PgResultMasking
from dbguard.session.pg_startup import refused_startup_setting, startup_settings
from dbguard.session.pg_upstream_login import (
    LoginOutcome,
    UpstreamLogin,
    UpstreamReady,
    UpstreamRefused,
    channel_binding_hash,
)
from dbguard.session.throttle import LoginThrottle
from dbguard.wire.pg import messages as m
from dbguard.wire.pg.auth import (
    AuthenticationFailed,
    ScramServerExchange,
    verify_cleartext,
)
from dbguard.wire.pg.framing import (
    ALL_TYPES,
    CANCEL_REQUEST_CODE,
    GSSENC_REQUEST_CODE,
    MAX_INSPECTED_MESSAGE,
    PROTOCOL_3_0,
    SSL_REQUEST_CODE,
    Frame,
    MessageScanner,
    Passthrough,
    ProtocolViolation,
    StartupReader,
    frame,
)
from dbguard.wire.pg.framing import HEADER as _HEADER

log = logging.getLogger("dbguard.session")


class Phase(enum.Enum):
    STARTUP = "startup"
    CLIENT_TLS = "client-tls"
    CLIENT_AUTH = "client-auth"
    UPSTREAM_CONNECT = "upstream-connect"
    UPSTREAM_LOGIN = "upstream-login"  # see session.pg_upstream_login
    READY = "ready"
    CLOSED = "closed"


# Client messages relayed without being decoded once READY: Bind, Execute, Describe, Close,
# Flush and the COPY sub-protocol carry no SQL text; the server validates them. Everything else
# is inspected: Query and Parse (the decision point), Sync (response cycles), FunctionCall and
# Terminate, and any unknown type, which is refused here rather than guessed at.
_CLIENT_RELAYED = frozenset({b"B", b"E", b"D", b"C", b"H", b"d", b"c", b"f"})
_CLIENT_INSPECT = ALL_TYPES - _CLIENT_RELAYED
# Upstream messages the session reads in full once READY; the rest (DataRow, RowDescription,
# CommandComplete, CopyData, notices...) is relayed in slices without being decoded.
_UPSTREAM_INSPECT = frozenset({b"Z", b"S", b"G", b"H", b"W", b"E"})
# With the journal on, also Bind (each execution is a journaled statement, with its
# parameters) and the ends of statements (CommandComplete, EmptyQueryResponse: outcomes).
_CLIENT_INSPECT_JOURNALED = _CLIENT_INSPECT | {b"B"}
_CLIENT_RELAYED_JOURNALED = _CLIENT_RELAYED - {b"B"}
_UPSTREAM_INSPECT_JOURNALED = _UPSTREAM_INSPECT | {b"C", b"I"}
# During the upstream handshake everything is inspected.

_TRANSACTION_STATES = frozenset({b"I", b"T", b"E"})
# What a refused statement is replaced with upstream: a syntax error, so that the server's own
# transaction and extended-protocol state (failed transaction, discard until Sync) follow
# exactly as for any failing statement; the server's error is swapped for dbguard's on the
# way back. It names nothing and does nothing.
REFUSAL_TOKEN = b"dbguard_refused"
_REFUSED_QUERY = b"Q" + (len(REFUSAL_TOKEN) + 5).to_bytes(4, "big") + REFUSAL_TOKEN + b"\x00"
# Named prepared statements remembered per session (name -> SQL), so that a policy reload can
# re-decide them: a statement prepared before the reload must not keep running after the new
# policy refuses it. Oldest forgotten first beyond this many (drivers cache ~100-256).
MAX_TRACKED_STATEMENTS = 10_000
# Client data held back behind a barrier (a statement that may change how SQL is parsed),
# until that statement has completed. A bound, not a buffer to fill: pipelines are short.
MAX_HELD_BEHIND_BARRIER = 8 * 1024 * 1024

_SQLSTATE_PROTOCOL_VIOLATION = "08P01"
_SQLSTATE_CONNECTION_FAILURE = "08006"
_SQLSTATE_CANNOT_CONNECT = "08001"
_SQLSTATE_REJECTED = "08004"
_SQLSTATE_INVALID_PASSWORD = "28P01"  # noqa: S105 - a SQLSTATE, not a password
_SQLSTATE_INVALID_AUTHORIZATION = "28000"
_SQLSTATE_FEATURE_NOT_SUPPORTED = "0A000"
_SQLSTATE_INSUFFICIENT_PRIVILEGE = "42501"


@dataclass(slots=True)
class _Refusal:
    """A refused statement replaced upstream by a failing one. `ahead` counts the upstream
    response cycles still to complete before the one it is in."""

    ahead: int
    error: bytes  # dbguard's ErrorResponse, sent in place of the server's syntax error


@dataclass(slots=True)
class _Hold:
    """A statement held for approval: `raw` is the message (a Query, or the Bind of a
    prepared statement's execution) that goes upstream once approved; nothing the client sent
    after it is decided before then."""

    raw: bytes
    held: HeldStatement
    bind_prefix: bytes = b""  # a Bind's portal name (with its NUL): its refusal reuses it


@dataclass(slots=True)
class _Synthetic:
    """A response the proxy produces itself, released once every upstream response queued
    before it has arrived, so that pipelined clients see answers in order."""

    data: bytes  # complete messages, up to but not including ReadyForQuery
    with_ready: bool


# The decision journaled for the execution of a statement whose text dbguard does not hold.
_UNTRACKED_STATEMENT = Decision(Action.ALLOW, reason="dbguard: a statement prepared earlier; its text is not tracked")

# A Parse after one that may change how SQL is parsed, in the same batch: it would be parsed
# by the server under settings dbguard cannot know yet, so it fails closed.
_PARSE_AFTER_BARRIER = Decision(
    Action.BLOCK, ("dbguard.parse_settings",),
    reason="dbguard: blocked: this statement follows, in the same batch, one that may change how SQL is parsed",
    hint="Send a Sync after a statement that changes settings or runs a function, then send the next one.",
    details={"rule": "dbguard.parse_settings", "action": "block"},
)


class PgSession:
    """One client connection and its upstream connection."""

    def __init__(
        self,
        settings: PgListenerSettings,
        *,
        client_address: str,
        client_host: str | None = None,
        cancel_targets: CancelTargets,
        throttle: LoginThrottle,
        client_tls: bool = False,
        catalog: Callable[[str], CatalogCache] | None = None,
    ) -> None:
        self.settings = settings
        self.client_address = client_address
        # Authentication failures are counted per host: every new connection has a new port.
        self.client_host = client_host if client_host is not None else client_address.rsplit(":", 1)[0]
        self.session_id = str(uuid.uuid4())
        self.phase = Phase.STARTUP
        self.client_tls = client_tls
        self.client_cert_hash: bytes | None = None
        self.info: SessionInfo | None = None
        self.identity: Identity | None = None
        self.startup_params: dict[str, str] = {}
        self.server_params: dict[str, str] = {}
        self.transaction_status = b"I"
        self.in_copy: bytes | None = None  # b"G" copy-in, b"H" copy-out, None
        self.close_reason: str | None = None

        self._cancel_targets = cancel_targets
        self._throttle = throttle
        self._startup_reader: StartupReader | None = StartupReader()
        self._client_scanner = MessageScanner(ALL_TYPES)
        self._upstream_scanner = MessageScanner(_UPSTREAM_INSPECT)
        self._scram_server: ScramServerExchange | None = None
        self._login: UpstreamLogin | None = None
        self._client_auth_step = ""
        self._requested_user = ""
        self._database = ""
        self._upstream_key: tuple[int, bytes] | None = None
        self._proxy_key: tuple[int, bytes] | None = None
        self._pending_client: list[bytes] = []  # client bytes that arrived before READY
        # One entry per response cycle (a Query or a Sync) still owed to the client, in order:
        # None = the upstream's answer, ending with its ReadyForQuery; _Synthetic = ours.
        self._owed: deque[_Synthetic | None] = deque()
        self._upstream_fatal_seen = False
        self._early_notices: list[bytes] = []  # NoticeResponses sent during upstream startup
        self._client_terminated = False
        self._gate: SessionGate | None = None
        # Decisions the hot path made before handing a read to the general path, which takes
        # them in order instead of asking the gate twice (the gate keeps session state).
        self._decided: deque[Decision] = deque()
        self._refusals: deque[_Refusal] = deque()
        self._batch_refused = False  # extended protocol: a Parse of this batch was refused
        # Barrier: no client message is decided until the upstream has completed `ahead`
        # more response cycles. In the extended protocol it starts at the batch's Sync.
        self._barrier_ahead: int | None = None
        self._barrier_at_sync = False
        # Prepared statement name -> its SQL text and the decision taken at Parse; the unnamed
        # statement's likewise (for the journal's statement event at each Bind).
        # The parameter type OIDs the Parse gave (journal only) render binary parameters.
        self._named: dict[bytes, tuple[bytes, Decision, tuple[int, ...]]] = {}
        self._unnamed: tuple[bytes, Decision, tuple[int, ...]] | None = None
        # The journal of this session (None when the listener journals nothing); the driver
        # takes its events after every call and holds upstream writes until they are durable.
        self.journal: SessionJournal | None = (
            SessionJournal(self.session_id, redact_parameters=settings.redact_parameters)
            if settings.journal else None)
        self._client_inspect = _CLIENT_INSPECT_JOURNALED if settings.journal else _CLIENT_INSPECT
        # Named statements the current policy refuses (found when the policy was reloaded):
        # a Bind to one of them is refused in place.
        self._revoked: dict[bytes, Decision] = {}
        # Approvals (session/holds.py): the statement held now, if any; the prepared
        # statements (b"" = the unnamed one) whose every execution is held at its Bind; the
        # "held for approval" notice waiting for the client stream to reach a message boundary.
        self._hold: _Hold | None = None
        self._held_names: set[bytes] = set()
        self._hold_notice: bytes | None = None
        # Masking of results (session/pg_masking.py): set up when the session becomes ready
        # if the policy has masks; the driver passes upstream bytes through it first.
        self._catalog = catalog
        self.masking: PgResultMasking | None = None

    # ------------------------------------------------------------------ driver entry points

    def client_fast(self, data: bytes) -> bytes | None:
        """The hot path for client bytes, tried before `client_data()`.

        When the session is READY and `data` is exactly a run of whole messages of the common
        types (Query, Parse, Bind, Execute, Describe, Close, Sync, Flush), they are handled in
        place in one pass: the result is `data` itself to forward unchanged when every
        statement in it is plainly allowed (and shown to masking, when on, as everything sent
        upstream is). None means "not the common case", and the driver
        calls `client_data()`; decisions already taken are handed to it (`_decided`), nothing
        else has changed. No copy, no object per message.
        """
        if (self.phase is not Phase.READY or not self._client_scanner.at_boundary
                or self._barrier_ahead is not None or self._barrier_at_sync or self._batch_refused
                or self._revoked or self._held_names or self._hold is not None):
            return None
        end = len(data)
        pos = 0
        unpack = _HEADER.unpack_from
        journal = self.journal
        relayed = _CLIENT_RELAYED if journal is None else _CLIENT_RELAYED_JOURNALED
        # Query, Parse and Sync in order; built only once a Query or Parse shows up, so a read
        # of Bind/Execute/Sync (a prepared statement's round trip) allocates nothing.
        cycle: list[tuple[bytes, int, int]] | None = None
        syncs = 0
        while pos < end:
            if end - pos < 5:
                return None
            msg_type, length = unpack(data, pos)
            nxt = pos + 1 + length
            if length < 4 or nxt > end or length > MAX_INSPECTED_MESSAGE:
                return None
            if msg_type not in relayed:
                if msg_type == b"Q":
                    if data[nxt - 1] != 0 or data.find(b"\x00", pos + 5, nxt - 1) >= 0:
                        return None
                elif msg_type == b"P":
                    if data.count(b"\x00", pos + 5, nxt) < 2:
                        return None
                elif msg_type == b"S" and length == 4:
                    if cycle is None:
                        syncs += 1
                    else:
                        cycle.append((msg_type, pos, nxt))
                    pos = nxt
                    continue
                elif msg_type != b"B":
                    return None  # Terminate, FunctionCall, password, unknown: general path
                if cycle is None:
                    cycle = [(b"S", 0, 0)] * syncs  # the Syncs seen so far came first
                cycle.append((msg_type, pos, nxt))
            pos = nxt
        if cycle is None:
            for _ in range(syncs):
                self._owed.append(None)  # the upstream owes one response cycle per Sync
                if journal is not None:
                    journal.client_cycle_end()
            if self.masking is not None:
                self.masking.to_upstream(data)
            return data
        owed = self._owed
        gate = self._gate
        assert gate is not None
        decided: list[Decision] | None = None
        binds: list[BoundValues] | None = None
        for msg_type, start, stop in cycle:
            if msg_type == b"S":
                continue
            if msg_type == b"B":
                try:
                    bound = bind_parameters(data[start + 5 : stop])
                except ProtocolViolation:
                    return None  # the general path says what is wrong with it
                if binds is None:
                    binds = []
                binds.append(bound)
                continue
            if msg_type == b"Q":
                decision = gate.decide(data[start + 5 : stop - 1], StatementSource.SIMPLE_QUERY, "")
            else:
                name_end = data.index(b"\x00", start + 5, stop)
                sql_end = data.index(b"\x00", name_end + 1, stop)
                name = data[start + 5 : name_end].decode("utf-8", "surrogateescape")
                sql = data[name_end + 1 : sql_end]
                decision = gate.decide(sql, StatementSource.PARSE, name)
                if name_end > start + 5 and decision.action is Action.ALLOW and not decision.barrier:
                    types = () if journal is None else parameter_types(data, sql_end + 1, stop)
                    self._remember_statement(data[start + 5 : name_end], sql, decision, types)
            if decision.action is not Action.ALLOW or decision.barrier:
                # Anything but a plain allow is the general path's; it takes these decisions
                # in order rather than asking the gate again.
                if decided is not None:
                    self._decided.extend(decided)
                self._decided.append(decision)
                return None
            if decided is None:
                decided = []
            decided.append(decision)
        if journal is None:
            for msg_type, _start, _stop in cycle:
                if msg_type != b"P":
                    owed.append(None)  # the upstream owes one response cycle per Query and Sync
            if self.masking is not None:
                self.masking.to_upstream(data)
            return data
        decisions = iter(decided or ())
        bound_values = iter(binds or ())
        for msg_type, start, stop in cycle:
            if msg_type == b"Q":
                owed.append(None)
                journal.statement(data[start + 5 : stop - 1], next(decisions), absorbs=True)
                journal.client_cycle_end()
            elif msg_type == b"S":
                owed.append(None)
                journal.client_cycle_end()
            elif msg_type == b"P":
                decision = next(decisions)
                if data[start + 5] == 0:  # the unnamed statement
                    sql_end = data.index(b"\x00", start + 6, stop)
                    self._unnamed = (data[start + 6 : sql_end], decision, parameter_types(data, sql_end + 1, stop))
            else:
                self._journal_bind(next(bound_values))
        if self.masking is not None:
            self.masking.to_upstream(data)
        return data

    def upstream_fast(self, data: bytes, *, rows_only: bool = False) -> bool:
        """The hot path for upstream bytes, tried before `upstream_data()`: True when `data`
        is whole messages that can go to the client unchanged, the only one that matters being
        ReadyForQuery (tracked here). False, with nothing changed, for anything else: a partial
        message, ParameterStatus, an error, COPY, or a synthetic answer falling due.
        `rows_only`: the caller has walked `data` and found whole DataRows only (masking
        does, `PgResultMasking.rows_only`), so there is nothing in it to look at."""
        if (self.phase is not Phase.READY or not self._upstream_scanner.at_boundary
                or self._refusals or self._barrier_ahead is not None or self._hold_notice is not None):
            return False
        if rows_only:  # no ReadyForQuery, no CommandComplete: only the owed answers matter
            return not (self._owed and self._owed[0] is not None)
        end = len(data)
        pos = 0
        unpack = _HEADER.unpack_from
        inspect = _UPSTREAM_INSPECT
        journal = self.journal
        ends: list[int] | None = None  # journal: where each statement's end is (C, I)
        ready = 0
        status = b""
        while pos < end:
            if end - pos < 5:
                return False
            msg_type, length = unpack(data, pos)
            nxt = pos + 1 + length
            if length < 4 or nxt > end:
                return False
            if msg_type in inspect:
                if msg_type != b"Z" or length != 5:
                    return False
                status = data[pos + 5 : nxt]
                ready += 1
                if journal is not None:
                    if ends is None:
                        ends = []
                    ends.append(-1)
            elif journal is not None and (msg_type == b"C" or msg_type == b"I"):
                if ends is None:
                    ends = []
                ends.append(pos)
            pos = nxt
        if ready:
            if status not in _TRANSACTION_STATES:
                return False
            owed = self._owed
            # Each ReadyForQuery retires one upstream answer; no synthetic may fall due.
            for index in range(min(ready + 1, len(owed))):
                if owed[index] is not None:
                    return False
            for _ in range(min(ready, len(owed))):
                owed.popleft()
            self.transaction_status = status
            self.in_copy = None
        elif self._owed and self._owed[0] is not None:
            return False
        if ends is not None:
            assert journal is not None
            for at in ends:
                if at < 0:
                    journal.server_cycle_end()
                elif data[at] == 0x43:  # CommandComplete
                    journal.result(rows_from_tag(data[at + 5 : at + 1 + int.from_bytes(data[at + 1 : at + 5], "big")]),
                                   masked=self._masked_counts())
                else:
                    journal.result(None, masked=self._masked_counts())
        return True

    def client_data(self, data: bytes) -> list[SessionAction]:
        out: list[SessionAction] = []
        try:
            if self.phase in (Phase.STARTUP, Phase.CLIENT_TLS):
                self._on_startup_bytes(data, out)
            elif self.phase is Phase.CLIENT_AUTH:
                self._client_scanner.feed(data)
                self._on_client_auth(out)
            elif self.phase is Phase.READY:
                self._client_scanner.feed(data)
                self._on_client_ready(out)
            elif self.phase is Phase.CLOSED:
                pass
            else:
                # Upstream handshake in progress; a client may pipeline its first query.
                self._pending_client.append(data)
                if sum(len(b) for b in self._pending_client) > 1024 * 1024:
                    raise ProtocolViolation("too much data sent before authentication completed")
        except ProtocolViolation as exc:
            self._protocol_violation(str(exc), out)
        return out

    def upstream_data(self, data: bytes) -> list[SessionAction]:
        out: list[SessionAction] = []
        try:
            if self.phase is Phase.UPSTREAM_LOGIN and self._login is not None:
                actions, outcome = self._login.receive(data)
                self._on_login_outcome(actions, outcome, out)
            elif self.phase is Phase.READY:
                self._upstream_scanner.feed(data)
                self._on_upstream_ready(out)
            elif self.phase is not Phase.CLOSED:
                raise ProtocolViolation(f"unexpected data from the server in phase {self.phase.value}")
        except ProtocolViolation as exc:
            log.warning("upstream.protocol_violation", extra={"session": self.session_id, "error": str(exc)})
            self._close_with(out, m.fatal(_SQLSTATE_CONNECTION_FAILURE,
                                        "dbguard: the database server sent an invalid message"),
                             "upstream protocol violation")
        return out

    def client_tls_started(self, server_cert_der: bytes | None) -> list[SessionAction]:
        self.client_tls = True
        self.client_cert_hash = channel_binding_hash(server_cert_der)
        self.phase = Phase.STARTUP
        return []

    def upstream_connected(self) -> list[SessionAction]:
        self.phase = Phase.UPSTREAM_LOGIN
        self._login = UpstreamLogin(self.settings.upstream, self.startup_params, self._database, self.session_id)
        return self._login.start()

    def upstream_tls_started(self, server_cert_der: bytes | None) -> list[SessionAction]:
        assert self._login is not None
        return self._login.tls_started(server_cert_der)

    def upstream_failed(self, reason: str) -> list[SessionAction]:
        """The upstream could not be reached (or TLS to it failed)."""
        out: list[SessionAction] = []
        log.warning("upstream.connect_failed", extra={"session": self.session_id, "error": reason})
        self._close_with(out, m.fatal(_SQLSTATE_CANNOT_CONNECT,
                                    "dbguard: could not connect to the database server",
                                    detail=reason), "upstream unreachable")
        return out

    def upstream_closed(self) -> list[SessionAction]:
        """The upstream connection ended (server restart, crash, terminate)."""
        out: list[SessionAction] = []
        if self.phase is Phase.CLOSED:
            return out
        if self._upstream_fatal_seen or not self._upstream_scanner.at_boundary:
            # The server already said why (57P01...), or a message was cut in half and
            # anything we added would corrupt the client's framing: just close.
            out.append(Close("upstream closed"))
            self.phase = Phase.CLOSED
            return out
        self._close_with(out, m.fatal(_SQLSTATE_CONNECTION_FAILURE,
                                    "dbguard: lost the connection to the database server"),
                         "upstream closed")
        return out

    def client_closed(self) -> list[SessionAction]:
        self.phase = Phase.CLOSED
        self.close_reason = self.close_reason or "client closed"
        return [Close("client closed")]

    @property
    def busy(self) -> bool:
        """A statement is running: a response is still owed, or a COPY is in progress."""
        return self.phase is Phase.READY and (bool(self._owed) or self.in_copy is not None
                                              or self._hold is not None)

    @property
    def proxy_key(self) -> tuple[int, bytes] | None:
        return self._proxy_key

    # ------------------------------------------------------------------ startup

    def _on_startup_bytes(self, data: bytes, out: list[SessionAction]) -> None:
        reader = self._startup_reader
        if reader is None or self.phase is Phase.CLIENT_TLS:
            raise ProtocolViolation("data received during the TLS handshake")
        reader.feed(data)
        while self.phase is Phase.STARTUP and (packet := reader.next_packet()) is not None:
            if packet.code == SSL_REQUEST_CODE:
                if packet.body:
                    raise ProtocolViolation("malformed SSLRequest")
                if self.client_tls or not self.settings.tls_available:
                    out.append(SendClient(b"N"))
                    continue
                if reader.take_rest():
                    # Bytes sent after SSLRequest but before the handshake would be read as if
                    # they came over TLS (CVE-2021-23214): refuse.
                    raise ProtocolViolation("unencrypted data after SSLRequest")
                out.append(SendClient(b"S"))
                out.append(StartClientTls())
                self.phase = Phase.CLIENT_TLS
                return
            if packet.code == GSSENC_REQUEST_CODE:
                if packet.body:
                    raise ProtocolViolation("malformed GSSENCRequest")
                out.append(SendClient(b"N"))
                continue
            if packet.code == CANCEL_REQUEST_CODE:
                self._on_cancel_request(packet.body, out)
                return
            if packet.code >> 16 == 3:
                rest = reader.take_rest()
                self._startup_reader = None
                self._on_startup_message(packet.code, packet.body, out)
                if rest:
                    self._client_data_after_startup(rest, out)
                return
            raise ProtocolViolation(
                f"unsupported frontend protocol {packet.code >> 16}.{packet.code & 0xFFFF}"
            )

    def _client_data_after_startup(self, data: bytes, out: list[SessionAction]) -> None:
        if self.phase is Phase.CLIENT_AUTH:
            self._client_scanner.feed(data)
            self._on_client_auth(out)
        elif self.phase is not Phase.CLOSED:
            self._pending_client.append(data)

    def _on_cancel_request(self, body: bytes, out: list[SessionAction]) -> None:
        request = m.decode_cancel_request(body)
        target = self._cancel_targets.lookup((request.process_id, request.secret_key))
        self.phase = Phase.CLOSED
        if target is not None:
            upstream, pid, secret = target
            key = (request.process_id, request.secret_key)
            journal = self._cancel_targets.journal_of(key)
            if journal is not None:
                # Recorded in the cancelled session's journal, in order with its statements.
                journal.cancelled(self.client_address)
            hook = self._cancel_targets.on_cancel_of(key)
            if hook is None or not hook():
                # Not a statement held for approval: cancel what runs on the server. (A held
                # one runs nowhere; a cancel sent on would hit the session's next statement.)
                out.append(ForwardCancel(upstream, pid, secret))
            log.info("session.cancel_forwarded", extra={"client": self.client_address})
        else:
            log.info("session.cancel_unknown_key", extra={"client": self.client_address})
        # As the server does: no answer on a cancel connection, just close it.
        out.append(Close("cancel request"))

    def _on_startup_message(self, code: int, body: bytes, out: list[SessionAction]) -> None:
        params = m.decode_startup_parameters(body)
        self.startup_params = params
        if self.settings.tls_required and not self.client_tls:
            self._close_with(out, m.fatal(_SQLSTATE_INVALID_AUTHORIZATION,
                                        "dbguard: this listener requires TLS",
                                        hint="Connect with sslmode=require."),
                             "TLS required")
            return
        if "replication" in params and params["replication"].lower() not in ("false", "off", "no", "0"):
            self._close_with(out, m.fatal(_SQLSTATE_FEATURE_NOT_SUPPORTED,
                                        "dbguard: replication connections are not supported through the proxy"),
                             "replication refused")
            return
        refused = refused_startup_setting(params)
        if refused is not None:
            self._close_with(out, m.fatal(
                _SQLSTATE_INSUFFICIENT_PRIVILEGE,
                f'dbguard: the startup setting "{refused}" is not allowed through the proxy',
                detail=f"setting={refused}",
                hint="Leave it out of the connection parameters and run SET after connecting, "
                     "where policy can see it."), "startup setting refused")
            return
        user = params.get("user", "")
        if not user:
            self._close_with(out, m.fatal(_SQLSTATE_INVALID_AUTHORIZATION,
                                        "no PostgreSQL user name specified in startup packet"),
                             "no user")
            return
        self._requested_user = user
        self._database = params.get("database") or user
        unsupported = sorted(k for k in params if k.startswith("_pq_."))
        if code != PROTOCOL_3_0 or unsupported:
            # We speak 3.0 on both sides; tell a newer client to fall back, as the server would.
            out.append(SendClient(m.NegotiateProtocolVersion(PROTOCOL_3_0, tuple(unsupported)).encode()))
        self.phase = Phase.CLIENT_AUTH
        self._client_scanner = MessageScanner(frozenset({b"p"}), max_inspected=64 * 1024)
        entry = self.settings.identities.get(user)
        if self.settings.allow_cleartext:
            # Only when the operator allowed it for this listener (clients without SCRAM).
            self._client_auth_step = "password"
            out.append(SendClient(m.Authentication(m.AUTH_CLEARTEXT).encode()))
            return
        binding = ("tls-server-end-point", self.client_cert_hash) if self.client_cert_hash else None
        self._scram_server = ScramServerExchange(entry.verifier if entry else None, channel_binding=binding,
                                                 user=user)
        self._client_auth_step = "sasl-initial"
        mechanisms = tuple(self._scram_server.mechanisms())
        out.append(SendClient(m.Authentication(m.AUTH_SASL, mechanisms=mechanisms).encode()))

    def _on_client_auth(self, out: list[SessionAction]) -> None:
        for segment in self._client_scanner.segments():
            if self.phase is not Phase.CLIENT_AUTH:
                return
            if not isinstance(segment, Frame):
                raise ProtocolViolation("expected a password message during authentication")
            self._on_client_auth_message(segment.payload, out)

    def _on_client_auth_message(self, payload: bytes, out: list[SessionAction]) -> None:
        entry = self.settings.identities.get(self._requested_user)
        try:
            if self._client_auth_step == "password":
                password = m.decode_password(payload)
                if not verify_cleartext(entry.verifier if entry else None, password):
                    raise AuthenticationFailed("wrong password")
            elif self._client_auth_step == "sasl-initial":
                assert self._scram_server is not None
                mechanism, data = m.decode_sasl_initial_response(payload)
                server_first = self._scram_server.handle_client_first(mechanism, data)
                out.append(SendClient(m.Authentication(m.AUTH_SASL_CONTINUE, server_first).encode()))
                self._client_auth_step = "sasl-final"
                return
            elif self._client_auth_step == "sasl-final":
                assert self._scram_server is not None
                server_final = self._scram_server.handle_client_final(payload)
                out.append(SendClient(m.Authentication(m.AUTH_SASL_FINAL, server_final).encode()))
            else:
                raise ProtocolViolation("unexpected authentication message")
        except (AuthenticationFailed, ProtocolViolation) as exc:
            delay = self._throttle.failure(self.client_host)
            log.warning("session.auth_failed", extra={
                "client": self.client_address, "user": self._requested_user,
                "listener": self.settings.name, "delay": delay,
                "reason": exc.log_detail if isinstance(exc, AuthenticationFailed) else str(exc),
            })
            out.append(Sleep(delay))
            # Same answer for an unknown identity and a wrong secret.
            self._close_with(out, m.fatal(_SQLSTATE_INVALID_PASSWORD,
                                        f'password authentication failed for user "{self._requested_user}"'),
                             "authentication failed")
            return
        assert entry is not None  # a successful exchange implies a known identity
        self._throttle.success(self.client_host)
        self.identity = entry.identity
        self.phase = Phase.UPSTREAM_CONNECT
        rest = self._client_scanner.segments()
        leftover = b"".join(s.data if isinstance(s, Passthrough) else s.raw for s in rest)
        if leftover:
            self._pending_client.append(leftover)
        out.append(self.settings.upstream.target)

    # ------------------------------------------------------------------ upstream login

    def _on_login_outcome(self, actions: list[SessionAction], outcome: LoginOutcome,
                          out: list[SessionAction]) -> None:
        out.extend(actions)
        if isinstance(outcome, UpstreamRefused):
            self._close_with(out, outcome.client_message, outcome.reason)
        elif isinstance(outcome, UpstreamReady):
            for name, value in outcome.server_params.items():
                self._set_server_param(name, value)
            self._upstream_key = outcome.backend_key
            self._early_notices = outcome.notices
            self._login = None
            self._become_ready(outcome.status, out)
            if outcome.rest and self.phase is Phase.READY:
                # Whatever followed ReadyForQuery (an early notification) is relayed normally.
                self._upstream_scanner.feed(outcome.rest)
                self._on_upstream_ready(out)

    def _become_ready(self, status: bytes, out: list[SessionAction]) -> None:
        assert self.identity is not None
        self.transaction_status = status
        # The client sees the backend's real pid (so NotificationResponse.pid and
        # pg_backend_pid() agree with what it was told) but a secret of dbguard's own: only a
        # key dbguard issued can cancel, and only through dbguard.
        pid = self._upstream_key[0] if self._upstream_key else secrets.randbits(31)
        self._proxy_key = (pid, secrets.token_bytes(4))
        self.info = SessionInfo(
            session_id=self.session_id,
            listener=self.settings.name,
            protocol="postgres",
            identity=self.identity,
            client_address=self.client_address,
            database=self._database,
            application_name=self.server_params.get("application_name", ""),
            tls=self.client_tls,
        )
        self._gate = self.settings.gate.open(self.info, startup_settings(self.startup_params))
        for name, value in self.server_params.items():
            self._gate.server_parameter(name, value)
        parts = [m.Authentication(m.AUTH_OK).encode()]
        parts += [m.ParameterStatus(k, v).encode() for k, v in self.server_params.items()]
        parts += self._early_notices
        parts.append(m.BackendKeyData(*self._proxy_key).encode())
        parts.append(m.ready_for_query(status))
        out.append(SessionStarted(self._proxy_key, self._upstream_key))
        out.append(SendClient(b"".join(parts)))
        self.phase = Phase.READY
        self._client_scanner = MessageScanner(self._client_inspect)
        masks = self.settings.masks
        if masks is not None and masks.active and self._catalog is not None:
            self.masking = PgResultMasking(
                masks.session(self.info), self._catalog(self._database),
                lambda: self.server_params.get("client_encoding", "UTF8"), journaled=self.journal is not None)
        if self.journal is not None:
            self._upstream_scanner.inspect = _UPSTREAM_INSPECT_JOURNALED
            attributes = {k: v for k, v in self.startup_params.items() if k not in ("user", "database")}
            intent = startup_settings(self.startup_params).get("dbguard.intent", "")
            self.journal.started(self.info, attributes, self.startup_params.get("dbguard.intent", intent))
        log.info("session.start", extra={
            "session": self.session_id, "identity": self.identity.name, "listener": self.settings.name,
            "database": self._database, "client": self.client_address, "tls": self.client_tls,
        })
        if self._pending_client:
            pending = b"".join(self._pending_client)
            self._pending_client.clear()
            self._client_scanner.feed(pending)
            self._on_client_ready(out)

    # ------------------------------------------------------------------ query cycle

    def _on_client_ready(self, out: list[SessionAction]) -> None:
        if self._hold is not None:
            if self._client_scanner.buffered > MAX_HELD_BEHIND_HOLD:
                raise ProtocolViolation("too much data pipelined behind a statement held for approval")
            return  # decided once the held statement is resolved
        if self._barrier_ahead is not None:
            if self._client_scanner.buffered > MAX_HELD_BEHIND_BARRIER:
                raise ProtocolViolation("too much data pipelined behind a statement that changes parsing settings")
            return  # decided once the statement before the barrier has completed
        forward: list[bytes] = []
        for segment in self._client_scanner.segments():
            if isinstance(segment, Passthrough):
                forward.append(segment.data)
                continue
            t = segment.type
            if t == b"Q":
                query = m.decode_frontend(t, segment.payload)  # validates: one C string
                assert isinstance(query, m.Query)
                decision = self._decide(query.sql, StatementSource.SIMPLE_QUERY, "")
                if self._held(decision):
                    self._flush(forward, out)
                    self._start_hold(_Hold(segment.raw, self._held_statement(query.sql, None, decision)), out)
                    break
                refused = self._refused(decision)
                if refused:
                    self._refuse(decision, forward, _REFUSED_QUERY)
                else:
                    forward.append(segment.raw)
                self._owed.append(None)
                if self.journal is not None:
                    self.journal.statement(query.sql, decision, forwarded=not refused, absorbs=True)
                    self.journal.client_cycle_end()
                if decision.barrier and not self._refused(decision):
                    # Nothing more is decided until this query's ReadyForQuery has arrived.
                    self._barrier_ahead = self._upstream_cycles_owed()
                    break
            elif t == b"P":
                m.decode_frontend(t, segment.payload)  # validates the layout
                name_end = segment.payload.index(b"\x00")
                sql_end = segment.payload.index(b"\x00", name_end + 1)
                name = segment.payload[:name_end].decode("utf-8", "surrogateescape")
                if self._barrier_at_sync:
                    decision = _PARSE_AFTER_BARRIER
                else:
                    decision = self._decide(segment.payload[name_end + 1 : sql_end], StatementSource.PARSE, name)
                sql = segment.payload[name_end + 1 : sql_end]
                if self._refused(decision):
                    # Same name, a failing text: the server reports the error, then discards
                    # every message up to Sync, as for any statement that fails to parse.
                    if self.journal is not None and not self._batch_refused:
                        self.journal.statement(sql, decision, forwarded=False)
                    self._refuse(decision, forward, frame(
                        b"P", segment.payload[: name_end + 1] + REFUSAL_TOKEN + b"\x00\x00\x00"))
                else:
                    forward.append(segment.raw)
                    payload = segment.payload
                    types = () if self.journal is None else parameter_types(payload, sql_end + 1, len(payload))
                    if name_end:
                        self._remember_statement(payload[:name_end], sql, decision, types)
                    else:
                        self._unnamed = (sql, decision, types)
                    self._note_held_name(payload[:name_end], decision)
                    if decision.barrier:
                        self._barrier_at_sync = True
            elif t == b"B":
                # Inspected while the journal is on, or some named statement is revoked
                # (see revalidate()).
                portal_end = segment.payload.index(b"\x00")
                statement = segment.payload[portal_end + 1 : segment.payload.index(b"\x00", portal_end + 1)]
                revoked = self._revoked.get(statement)
                if statement in self._held_names and not self._batch_refused:
                    known = self._named.get(statement) if statement else self._unnamed
                    if known is not None:
                        bound = bind_parameters(segment.payload)
                        held = self._held_statement(known[0], render_parameters(bound, known[2]), known[1])
                        self._flush(forward, out)
                        self._start_hold(_Hold(segment.raw, held, segment.payload[: portal_end + 1]), out)
                        break
                if revoked is None:
                    forward.append(segment.raw)
                    if self.journal is not None and not self._batch_refused:
                        self._journal_bind(bind_parameters(segment.payload))
                else:
                    # Bind to a statement that does not exist: the server errors (26000) and
                    # discards up to Sync; its error is swapped for the refusal.
                    if self.journal is not None and not self._batch_refused:
                        known = self._named.get(statement)
                        self.journal.statement(known[0] if known else statement, revoked, forwarded=False)
                    self._refuse(revoked, forward, frame(
                        b"B", segment.payload[: portal_end + 1] + REFUSAL_TOKEN + b"\x00\x00\x00\x00\x00\x00\x00"))
            elif t == b"S":
                forward.append(segment.raw)
                self._batch_refused = False
                self._owed.append(None)
                if self.journal is not None:
                    self.journal.client_cycle_end()
                if self._barrier_at_sync:
                    self._barrier_at_sync = False
                    self._barrier_ahead = self._upstream_cycles_owed()
                    break
            elif t == b"F":
                self._flush(forward, out)
                self._owed.append(_Synthetic(m.error(
                    _SQLSTATE_FEATURE_NOT_SUPPORTED,
                    "dbguard: the fastpath function call protocol is not supported through the proxy",
                    hint="Call the function with a SELECT statement instead."), with_ready=True))
                self._release_synthetic(out)
            elif t == b"X":
                self._client_terminated = True
                forward.append(segment.raw)
                self._flush(forward, out)
                self.phase = Phase.CLOSED
                self.close_reason = "client closed"
                out.append(Close("client terminated"))
                return
            elif t == b"p":
                raise ProtocolViolation("unexpected password message after authentication")
            else:
                raise ProtocolViolation(f"unknown message type {t!r}")
        self._flush(forward, out)

    def _remember_statement(self, name: bytes, sql: bytes, decision: Decision, types: tuple[int, ...]) -> None:
        named = self._named
        if len(named) >= MAX_TRACKED_STATEMENTS and name not in named:
            del named[next(iter(named))]
        named[name] = (sql, decision, types)
        if self._revoked and self._revoked.pop(name, None) is not None and not self._revoked:
            self._client_scanner.inspect = self._client_inspect

    def _journal_bind(self, bound: BoundValues) -> None:
        """Journal one execution of a prepared statement, with its parameters."""
        assert self.journal is not None
        statement = bound.statement
        known = self._named.get(statement) if statement else self._unnamed
        if known is None:
            # Prepared with SQL PREPARE (the gate decided that), or forgotten beyond
            # MAX_TRACKED_STATEMENTS: the name is all there is.
            name = statement.decode("utf-8", "replace")
            self.journal.statement(f"/* dbguard: prepared statement {name!r}, its text is not tracked */",
                                   _UNTRACKED_STATEMENT, parameters=render_parameters(bound, ()))
        else:
            self.journal.statement(known[0], known[1], parameters=render_parameters(bound, known[2]))

    def revalidate(self) -> None:
        """The policy was reloaded: re-decide the session's named prepared statements, so
        that one the new policy refuses can no longer be executed."""
        if self._gate is None or self.phase is not Phase.READY:
            return
        self._revoked.clear()
        for name, (sql, _, types) in list(self._named.items()):
            decision = self._gate.decide(sql, StatementSource.PARSE, name.decode("utf-8", "surrogateescape"))
            if self._refused(decision):
                self._revoked[name] = decision
            else:
                self._named[name] = (sql, decision, types)
            self._note_held_name(name, decision)
        self._client_scanner.inspect = (_CLIENT_INSPECT_JOURNALED if self._revoked or self._held_names
                                        else self._client_inspect)

    @staticmethod
    def _refused(decision: Decision) -> bool:
        """Refused in place (a hold is not: it waits for a person, see _start_hold)."""
        return decision.action is Action.BLOCK and decision.enforced

    @staticmethod
    def _held(decision: Decision) -> bool:
        return decision.action is Action.HOLD and decision.enforced

    # ------------------------------------------------------------------ holds (approvals)

    def _held_statement(self, sql: bytes, parameters: tuple[str | None, ...] | None,
                        decision: Decision) -> HeldStatement:
        journal = self.journal
        return HeldStatement(
            sql=statement_text(sql), parameters=parameters, decision=decision,
            statement_seq=journal.seq + 1 if journal is not None else None,
            intent=journal.statement_intent(sql) if journal is not None else "",
        )

    def _start_hold(self, hold: _Hold, out: list[SessionAction]) -> None:
        """Park `hold` until the driver calls hold_resolved(); nothing after it is decided."""
        assert self.info is not None
        self._hold = hold
        out.append(HoldStatement(hold.held))
        log.info("statement.held", extra={
            "session": self.session_id, "identity": self.info.identity.name,
            "rules": ",".join(hold.held.rule_ids),
        })

    def _note_held_name(self, name: bytes, decision: Decision) -> None:
        """A prepared statement whose executions are held (each Bind is inspected)."""
        if self._held(decision):
            self._held_names.add(name)
            self._client_scanner.inspect = _CLIENT_INSPECT_JOURNALED
        else:
            self._held_names.discard(name)

    def hold_requested(self, approval_id: str) -> list[SessionAction]:
        """Wait mode: the request exists; tell the client (NoticeResponse) as soon as the
        stream to it is at a message boundary."""
        out: list[SessionAction] = []
        if self._hold is None or self.phase is not Phase.READY:
            return out
        rule = self._hold.held.rule_ids[0] if self._hold.held.rule_ids else ""
        self._hold_notice = m.error_response(
            "00000", f"dbguard: held for approval {approval_id}", severity="NOTICE",
            detail=f"approval={approval_id} rule={rule}",
            hint=f"A DBA decides with: dbguard approvals show {approval_id}", notice=True,
        ).encode()
        self._send_hold_notice(out)
        return out

    def _send_hold_notice(self, out: list[SessionAction]) -> None:
        if self._hold_notice is not None and self._upstream_scanner.at_boundary:
            out.append(SendClient(self._hold_notice))
            self._hold_notice = None

    def hold_resolved(self, resolution: HoldResolved) -> list[SessionAction]:
        """The queue answered for the held statement: send it upstream once, or refuse it
        (as a block is refused: the server's own state machine follows); then go on with
        what the client sent behind it."""
        out: list[SessionAction] = []
        hold, self._hold = self._hold, None
        self._hold_notice = None
        if hold is None or self.phase is not Phase.READY:
            return out
        held = hold.held
        journal = self.journal
        simple = hold.raw[:1] == b"Q"
        forward: list[bytes] = []
        refusal = resolution.refusal
        if resolution.run or refusal is None:
            if journal is not None:
                journal.statement(held.sql, held.decision, parameters=held.parameters, absorbs=simple,
                                  approval_id=resolution.approval_id)
            forward.append(hold.raw)
        else:
            if journal is not None:
                journal.statement(held.sql, refusal, parameters=held.parameters, forwarded=False,
                                  approval_id=resolution.approval_id or None)
            replacement = _REFUSED_QUERY if simple else frame(
                b"B", hold.bind_prefix + REFUSAL_TOKEN + b"\x00\x00\x00\x00\x00\x00\x00")
            self._refuse(refusal, forward, replacement, resolution.sqlstate)
        if simple:
            self._owed.append(None)
            if journal is not None:
                journal.client_cycle_end()
            if resolution.run and held.decision.barrier:
                self._barrier_ahead = self._upstream_cycles_owed()
        self._flush(forward, out)
        try:
            self._on_client_ready(out)
        except ProtocolViolation as exc:
            self._protocol_violation(str(exc), out)
        return out

    def hold_abandoned(self, reason: str) -> None:
        """The session ends while a statement is held: journal it as never run."""
        hold, self._hold = self._hold, None
        if hold is not None:
            journal_abandoned(self.journal, hold.held, reason)

    def _refuse(self, decision: Decision, forward: list[bytes], replacement: bytes,
                sqlstate: str = _SQLSTATE_INSUFFICIENT_PRIVILEGE) -> None:
        """Send `replacement` (a statement that fails) in place of the refused one and
        remember to show the client dbguard's error instead of the server's."""
        assert self.info is not None
        error = m.error(
            sqlstate,
            decision.reason or "dbguard: statement refused",
            detail=" ".join(f"{key}={value}" for key, value in decision.details.items()) or None,
            hint=decision.hint or None,
        )
        forward.append(replacement)
        if replacement is _REFUSED_QUERY:
            self._refusals.append(_Refusal(self._upstream_cycles_owed(), error))
        elif not self._batch_refused:
            # The first refusal of a batch is the one the server reports; it discards the rest.
            # Its answer may come on a Flush, before the batch's Sync: it is in the cycle the
            # next Sync will close, after every cycle owed now.
            self._refusals.append(_Refusal(self._upstream_cycles_owed(), error))
            self._batch_refused = True
        log.warning("statement.blocked", extra={
            "session": self.session_id, "identity": self.info.identity.name,
            "action": decision.action.value, "rules": ",".join(decision.rule_ids),
        })

    def _upstream_cycles_owed(self) -> int:
        """Response cycles the upstream still owes (ours excluded)."""
        return sum(1 for entry in self._owed if entry is None)

    def _flush(self, forward: list[bytes], out: list[SessionAction]) -> None:
        if forward:
            data = forward[0] if len(forward) == 1 else b"".join(forward)
            if self.masking is not None:
                self.masking.to_upstream(data)
            out.append(SendUpstream(data))
            forward.clear()

    def _decide(self, sql: bytes, source: StatementSource, name: str) -> Decision:
        assert self._gate is not None
        assert self.info is not None
        decision = self._decided.popleft() if self._decided else self._gate.decide(sql, source, name)
        if decision.action is not Action.ALLOW and not decision.enforced:
            log.info("statement.observed", extra={
                "session": self.session_id, "identity": self.info.identity.name,
                "action": decision.action.value, "rules": ",".join(decision.observed or decision.rule_ids),
            })
        return decision

    def _set_server_param(self, name: str, value: str) -> None:
        self.server_params[name] = value
        if self._gate is not None:
            self._gate.server_parameter(name, value)

    def _release_synthetic(self, out: list[SessionAction]) -> None:
        """Send every synthetic answer that is now at the head of the queue."""
        while self._owed and self._owed[0] is not None:
            synthetic = self._owed.popleft()
            assert synthetic is not None
            data = synthetic.data
            if synthetic.with_ready:
                data += m.ready_for_query(self.transaction_status)
            out.append(SendClient(data))

    def _on_upstream_ready(self, out: list[SessionAction]) -> None:
        chunks: list[bytes] = []
        for segment in self._upstream_scanner.segments():
            if isinstance(segment, Passthrough):
                chunks.append(segment.data)
                continue
            t = segment.type
            refusals = self._refusals
            if t == b"E" and refusals and refusals[0].ahead == 0 and self._is_refusal_error(segment.payload):
                chunks.append(self._refusals[0].error)
            else:
                chunks.append(segment.raw)
                if self.journal is not None:
                    if t == b"C":
                        self.journal.result(rows_from_tag(segment.payload), masked=self._masked_counts())
                    elif t == b"I":
                        self.journal.result(None, masked=self._masked_counts())
                    elif t == b"E":
                        self.journal.error(*error_fields(segment.payload))
            if t == b"Z":
                status = segment.payload[:1]
                if status not in (b"I", b"T", b"E") or len(segment.payload) != 1:
                    raise ProtocolViolation("invalid ReadyForQuery")
                self.transaction_status = status
                self.in_copy = None
                if self._owed and self._owed[0] is None:
                    self._owed.popleft()
                    self._cycle_completed()
                    if self.journal is not None:
                        self.journal.server_cycle_end()
                if self._owed and self._owed[0] is not None:
                    out.append(SendClient(b"".join(chunks)))
                    chunks.clear()
                    self._release_synthetic(out)
                if self._barrier_ahead == 0:
                    # The statement that may have changed parsing settings has completed (its
                    # ParameterStatus, if any, came before this): decide what waited behind it.
                    self._barrier_ahead = None
                    if chunks:
                        out.append(SendClient(b"".join(chunks)))
                        chunks.clear()
                    self._on_client_ready(out)
            elif t == b"S":
                status_msg = m.decode_backend(t, segment.payload)
                assert isinstance(status_msg, m.ParameterStatus)
                self._set_server_param(status_msg.name, status_msg.value)
            elif t in (b"G", b"H"):
                self.in_copy = t
            elif t == b"W":
                raise ProtocolViolation("CopyBothResponse outside replication")
            elif t == b"E":
                severity = _severity(segment.payload)
                if severity in ("FATAL", "PANIC"):
                    self._upstream_fatal_seen = True
        if chunks:
            out.append(SendClient(chunks[0] if len(chunks) == 1 else b"".join(chunks)))
        if self._hold_notice is not None:
            self._send_hold_notice(out)

    def _masked_counts(self) -> tuple[tuple[str, int], ...]:
        return self.masking.masked_counts() if self.masking is not None else ()

    def _cycle_completed(self) -> None:
        refusals = self._refusals
        if refusals:
            if refusals[0].ahead == 0:
                refusals.popleft()
            for refusal in refusals:
                refusal.ahead -= 1
        if self._barrier_ahead:
            self._barrier_ahead -= 1

    @staticmethod
    def _is_refusal_error(payload: bytes) -> bool:
        """The server's error for dbguard's replacement (a syntax error, or a Bind to a
        statement that does not exist), whatever lc_messages."""
        try:
            error = m.decode_backend(b"E", payload)
        except ProtocolViolation:
            return False
        assert isinstance(error, m.ErrorOrNotice)
        return error.sqlstate in ("42601", "26000") and REFUSAL_TOKEN.decode() in (error.message or "")

    # ------------------------------------------------------------------ closing

    def _protocol_violation(self, detail: str, out: list[SessionAction]) -> None:
        log.warning("session.protocol_violation", extra={"client": self.client_address, "error": detail})
        if self.phase is Phase.CLIENT_TLS:
            self.phase = Phase.CLOSED
            out.append(Close("protocol violation"))
            return
        self._close_with(out, m.fatal(_SQLSTATE_PROTOCOL_VIOLATION, f"dbguard: invalid message: {detail}"),
                         "protocol violation")

    def _close_with(self, out: list[SessionAction], final_message: bytes, reason: str) -> None:
        if self.phase is Phase.CLOSED:
            return
        self.phase = Phase.CLOSED
        self.close_reason = reason
        out.append(SendClient(final_message))
        out.append(Close(reason))


def _severity(error_payload: bytes) -> str:
    """The non-localized severity of an ErrorResponse payload, cheaply."""
    try:
        msg = m.decode_backend(b"E", error_payload)
    except ProtocolViolation:
        return ""
    assert isinstance(msg, m.ErrorOrNotice)
    return msg.get(m.FIELD_SEVERITY_V) or msg.get(m.FIELD_SEVERITY) or ""


__all__ = ["ConnectUpstream", "PgSession", "Phase"]
