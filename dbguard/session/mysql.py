"""The state machine of one MySQL/MariaDB client connection through the proxy (sans-IO).

Owns: the connection phase towards the client (dbguard's own HandshakeV10, SSLRequest,
HandshakeResponse41), authenticating the client against dbguard identities
(caching_sha2_password fast path and full authentication over TLS or RSA,
mysql_native_password, auth switch), the upstream login with the DSN's credentials
(`session.mysql_upstream_login`), and the command phase: every COM_QUERY text and every
COM_STMT_PREPARE text passes the gate once, before anything is sent upstream; responses are
relayed packet by packet, unchanged, and tracked just enough to know when each ends.

Must not touch: sockets, asyncio, TLS objects. Input arrives through `client_data()`,
`upstream_data()` and the driver's event callbacks; output is a list of actions
(`session.mysql_actions`) the driver executes in order.

Hot path: the driver offers every read to `client_fast()` / `upstream_fast()` first. They
accept only the ordinary case (one whole COM_QUERY whose decision is a plain allow, or one whole
COM_STMT_EXECUTE of a known, allowed statement; a read of whole packets of an ordinary result),
read the packet headers in place with plain ints and tell the driver to forward the very same
bytes object. For anything else they return False having changed nothing (except a decision
already taken, which `client_data()` then uses instead of asking the gate again), and the
general path handles the read. Both paths produce the same bytes and the same session state
(tests/unit/test_mysql_fast_path.py).

Phases (legal transitions only; anything else closes the connection with an ERR 08S01):

    GREETING -> [CLIENT_TLS -> GREETING] -> CLIENT_AUTH -> UPSTREAM_CONNECT
      -> UPSTREAM_LOGIN (its own steps: session.mysql_upstream_login) -> READY -> CLOSED
    READY --COM_CHANGE_USER--> CLIENT_AUTH (against dbguard identities) -> READY (upstream
      session reset with COM_RESET_CONNECTION [+ COM_INIT_DB], gate reopened) | CLOSED (1045)

Held for approval (docs/approvals.md, `session.holds`): a COM_QUERY (a multi-statement one as a
whole), a COM_PROCESS_KILL, or a COM_STMT_EXECUTE of a statement prepared under a `hold`
decision (its COM_STMT_PREPARE goes through: preparing runs nothing) is parked: nothing goes
upstream, the driver is asked to hold it (`HoldStatement`), and no further command is taken
until `hold_resolved()`; then the very same packet goes upstream, or the client gets ERR 1227.

Refused in the command phase (ERR, the session continues): statements the gate refuses
(1227 / 42000), a KILL (statement or COM_PROCESS_KILL) of another identity's session (1094,
`session.mysql_kill`, which also maps the connection ids clients know to the server's),
COM_BINLOG_DUMP*, every other command the proxy does not relay (1235 / 42000), unknown command
bytes (1047 / 08S01), COM_STMT_* on statement ids not prepared through this session (1243).
A server's LOCAL INFILE request is relayed only for an allowed statement that names LOCAL ...
INFILE; otherwise the server gets an empty file and the client an ERR 1227.

Masking (docs/masking.md, `session.mysql_masking`): when the listener's masks apply to the
session (asked per command, so a reloaded policy applies from the next one), the response of a
COM_QUERY, COM_STMT_EXECUTE or COM_STMT_FETCH goes through a `ResponseMasking`: each result
set's plan is built from its column definitions, rows that need it are rewritten, ERR messages
redacted. The hot path then takes only reads made of rows of a result set with nothing to mask;
everything else of such a response (definitions, ends of result sets, OKs, ERRs) goes through
the general path. The session reads the tables and views the masks see through with its own
CATALOG_QUERY (never relayed) after login, after DDL or user code, and after meeting a table it
did not know; the client's next command waits for it, as for the state query.

The command phase handles one command at a time: client packets that arrive while a response
is still coming are left in the (bounded) reader and handled once it is complete, so a refusal
is always answered in order and decisions are never taken ahead of a statement that could
change how later ones are read.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import re
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from dbguard.model import (
    Action,
    Decision,
    Identity,
    SessionGate,
    SessionInfo,
    StatementInfo,
    StatementKind,
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
from dbguard.session.mysql_actions import (
    DEFAULT_SERVER_VERSION,
    MysqlIdentityEntry,
    MysqlListenerSettings,
    MysqlSessionAction,
    MysqlStartClientTls,
)
from dbguard.session.mysql_journal import connect_attributes, error_fields, execute_parameters, ok_affected_rows
from dbguard.session.mysql_kill import (
    ER_NO_SUCH_THREAD,
    KillDirectory,
    KillRequest,
    new_connection_id,
    parse_kill,
    resolve,
)
from dbguard.session.mysql_masking import (
    CATALOG_QUERY,
    Catalog,
    CatalogFailed,
    CatalogReader,
    FastMasking,
    ResponseMasking,
    ResultPlan,
)
from dbguard.session.mysql_state_sync import STATE_QUERY, StateQueryFailed, StateReader
from dbguard.session.mysql_upstream_login import (
    ERRNO_UPSTREAM_REFUSED,
    SQLSTATE_REJECTED,
    UpstreamLogin,
    UpstreamReady,
    UpstreamRefused,
)
from dbguard.session.pg_actions import Close, SendClient, SendUpstream, Sleep
from dbguard.session.throttle import LoginThrottle
from dbguard.wire.mysql import auth
from dbguard.wire.mysql import messages as m
from dbguard.wire.mysql.packets import (
    MAX_PACKET_PAYLOAD,
    Packet,
    PacketReader,
    PayloadReader,
    ProtocolViolation,
    encode_packets,
)

log = logging.getLogger("dbguard.session")

C = m.Capability


class Phase(enum.Enum):
    GREETING = "greeting"  # our HandshakeV10 sent, waiting for SSLRequest / HandshakeResponse41
    CLIENT_TLS = "client-tls"  # the driver runs the client TLS handshake
    CLIENT_AUTH = "client-auth"  # auth switch / caching_sha2 exchange with the client
    UPSTREAM_CONNECT = "upstream-connect"
    UPSTREAM_LOGIN = "upstream-login"  # see session.mysql_upstream_login
    READY = "ready"  # command phase
    CLOSED = "closed"


# What the proxy offers clients. Never COMPRESS; no SESSION_TRACK / QUERY_ATTRIBUTES /
# OPTIONAL_RESULTSET_METADATA / MariaDB extensions (they change packet layouts the session reads);
# no IGNORE_SPACE (it changes how the server parses function names). SSL only with TLS.
PROXY_CAPABILITIES = (
    C.LONG_PASSWORD | C.FOUND_ROWS | C.LONG_FLAG | C.CONNECT_WITH_DB | C.LOCAL_FILES | C.PROTOCOL_41
    | C.INTERACTIVE | C.IGNORE_SIGPIPE | C.TRANSACTIONS | C.SECURE_CONNECTION | C.MULTI_STATEMENTS
    | C.MULTI_RESULTS | C.PS_MULTI_RESULTS | C.PLUGIN_AUTH | C.CONNECT_ATTRS
    | C.PLUGIN_AUTH_LENENC_CLIENT_DATA | C.DEPRECATE_EOF
)
_UTF8MB4_GENERAL_CI = 45
_MAX_AUTH_PACKET = 64 * 1024  # connection-phase packets are small; bound them tightly
MAX_TRACKED_STATEMENTS = 65_536  # prepared statements per session (server default max: 16382)
_CLIENT_AUTH_ROUNDS = 4

# Error numbers and SQLSTATEs sent by the proxy itself.
ER_ACCESS_DENIED = 1045  # 28000
ER_UNKNOWN_COM = 1047  # 08S01
ER_SPECIFIC_ACCESS_DENIED = 1227  # 42000: a statement refused by policy
ER_UNKNOWN_STMT_HANDLER = 1243  # HY000
ER_MAX_PREPARED_STMT_COUNT = 1461  # 42000
ER_SERVER_SHUTDOWN = 1053  # 08S01
ER_INSECURE_TRANSPORT = 3159  # HY000
ER_NOT_SUPPORTED = 1235  # 42000
ER_UNKNOWN_ERROR = 1105  # HY000: the statement's journal event could not be stored
ER_QUERY_INTERRUPTED = 1317  # 70100: a held statement cancelled (PostgreSQL's 57014)
_S_PROTOCOL = "08S01"

# Hot path constants (plain ints: no enum or flag operation per packet).
_COM_QUERY = 0x03
# A text that may be a KILL: the hot path leaves it to the general path, which maps its id.
_KILL_START = re.compile(rb"\s*kill\b", re.IGNORECASE)
_COM_STMT_EXECUTE = 0x17
_OK_HEADER = 0x00
_EOF_HEADER = 0xFE
_ERR_HEADER = 0xFF
_MORE_RESULTS_EXISTS = 0x0008
_CURSOR_EXISTS = 0x0040
_HEADER = struct.Struct("<I")  # a packet header as one int: payload length | sequence id << 24
_STATUS_FLAGS: dict[int, m.ServerStatus] = {}  # at most 65,536 entries: one per 16-bit value

# The decision journaled for a protocol command that is not SQL but changes the session's state
# (COM_INIT_DB, journaled as the USE it means): the policy does not decide these.
_INFILE_REFUSED = ("dbguard: the server asked for a local file, which this statement may not send "
                   "(rule=dbguard.local_infile action=block)")
_COMMAND_DECISION = Decision(Action.ALLOW, reason="dbguard: a protocol command, not decided by the policy")
# Statements after which the catalog the masks read views from is read again.
_CATALOG_CHANGES = frozenset({StatementKind.CREATE, StatementKind.ALTER, StatementKind.DROP, StatementKind.CALL,
                              StatementKind.EXECUTE, StatementKind.DO, StatementKind.OTHER})


def _status_flags(value: int) -> m.ServerStatus:
    flags = _STATUS_FLAGS.get(value)
    if flags is None:
        flags = _STATUS_FLAGS[value] = m.ServerStatus(value)
    return flags


def _ok_status(data: bytes, start: int, end: int) -> int:
    """The status flags of the OK packet (0x00 or 0xFE headed) whose payload is data[start:end],
    read in place; -1 where `_lenenc_status` would fail (bad length-encoded int, truncated)."""
    p = start + 1
    for _ in (0, 1):  # affected rows, last insert id
        if p >= end:
            return -1
        first = data[p]
        if first < 0xFB:
            p += 1
        elif first == 0xFC:
            p += 3
        elif first == 0xFD:
            p += 4
        elif first == 0xFE:
            p += 9
        else:
            return -1
    if p + 2 > end:
        return -1
    return data[p] | data[p + 1] << 8



def _names_local_infile(sql: bytes) -> bool:
    """Whether a query text can be a LOAD DATA LOCAL INFILE (linear, no regex backtracking
    on a 64 MiB text). Only gates relaying the server's file request for an allowed statement."""
    low = sql.lower()
    return b"local" in low and b"infile" in low


class _Mode(enum.Enum):
    """Where we are in one command's response."""

    FIRST = "first"  # first packet of a (next) result: OK / ERR / column count / 0xFB
    COLUMNS = "columns"  # column definitions of a resultset
    COLUMNS_EOF = "columns-eof"  # the EOF after column definitions (no DEPRECATE_EOF)
    ROWS = "rows"  # rows until EOF / OK-0xFE / ERR
    PREPARE_DEFS = "prepare-defs"  # parameter and column definitions after COM_STMT_PREPARE_OK
    INFILE_UPLOAD = "infile-upload"  # client sends the file, ends with an empty packet
    SINGLE = "single"  # one packet of any kind ends it (COM_STATISTICS, OK/ERR commands)


@dataclass(slots=True)
class _Response:
    """The response the session is relaying for the current command."""

    command: int
    mode: _Mode
    sql: bytes = b""
    allowed_infile: bool = False
    remaining: int = 0  # definitions still to come in COLUMNS / PREPARE_DEFS
    eofs: int = 0  # EOFs still to come in PREPARE_DEFS (no DEPRECATE_EOF)
    prepared: tuple[int, Decision] | None = None  # (statement id, decision) once PREPARE_OK came
    decision: Decision | None = None
    # A refused LOCAL INFILE: the rest of the response is swallowed, then the client gets an
    # ERR with this (client-visible) sequence id.
    swallow: bool = False
    refused_seq: int = 0
    init_db: bytes | None = None
    # COM_CHANGE_USER's upstream reset ("reset" then "init-db"): swallowed, then the client's OK.
    change_user: str = ""
    # dbguard's own STATE_QUERY (session.mysql_state_sync): its answer goes to the gate, not the client.
    state: StateReader | None = None
    # The journal: the command closed a client cycle (its outcome goes to the journal); rows
    # counted so far in the current result set.
    journaled: bool = False
    rows: int = 0
    # Masking (session.mysql_masking): the response's, when masks apply to the session; the
    # counts of the result set that just ended (for the journal); the statement executed.
    masking: ResponseMasking | None = None
    masked: tuple[tuple[str, int], ...] = ()
    executed: PreparedStatement | None = None
    # dbguard's own CATALOG_QUERY (views and tables, for masking): not relayed either.
    catalog: CatalogReader | None = None


def _lenenc_status(payload: bytes) -> m.ServerStatus:
    """The status flags of an OK packet (0x00 or 0xFE headed), without decoding the rest."""
    r = PayloadReader(payload, "OK packet")
    r.uint8()
    r.lenenc_int()
    r.lenenc_int()
    return m.ServerStatus(r.uint16())


def _terminator_status(payload: bytes, deprecate_eof: bool) -> m.ServerStatus:
    """A resultset's end: an OK with header 0xFE under DEPRECATE_EOF (as short as 7 bytes, so
    `is_eof` cannot tell them apart), an EOF packet otherwise."""
    if deprecate_eof:
        return _lenenc_status(payload)
    return m.EofPacket.decode(payload).status_flags


def _is_terminator(payload: bytes) -> bool:
    """EOF, or (DEPRECATE_EOF) an 0xFE-headed OK: a row starting with 0xFE is >= 16 MiB long."""
    return payload[:1] == b"\xfe" and len(payload) < MAX_PACKET_PAYLOAD


def refusal_message(decision: Decision) -> str:
    """PRODUCT.md: `dbguard: blocked by rule <id>: <description>` + ` (key=value ...)` tail."""
    reason = decision.reason or (
        f"dbguard: blocked by rule {decision.rule_ids[0]}" if decision.rule_ids else "dbguard: blocked")
    details = dict(decision.details)
    if decision.rule_ids and "rule" not in details:
        details["rule"] = decision.rule_ids[0]
    details.setdefault("action", decision.action.value)
    tail = " ".join(f"{k}={v}" for k, v in details.items())
    return f"{reason} ({tail})"


def _runs(decision: Decision) -> bool:
    """The statement goes upstream now: allowed, or refused by an observe-only rule (a hold
    waits for a person first: `_held`)."""
    return decision.action is Action.ALLOW or not decision.enforced


def _held(decision: Decision) -> bool:
    """A `hold` rule parks the statement until a person decides (session.holds)."""
    return decision.action is Action.HOLD and decision.enforced


@dataclass(slots=True)
class PreparedStatement:
    """A statement the client prepared through this session: its text and the gate's decision,
    taken again when the policy is reloaded."""

    sql: bytes
    decision: Decision
    params: int = 0  # placeholders, from COM_STMT_PREPARE_OK
    # For the journal: the parameter types of the last execution (a client need not send them
    # again), and bytes sent per parameter by COM_STMT_SEND_LONG_DATA since then.
    types: tuple[tuple[int, bool], ...] | None = None
    long_data: dict[int, int] | None = None
    cursor_plan: ResultPlan | None = None  # masking: the plan of the result its cursor fetches from


@dataclass(frozen=True, slots=True)
class _Hold:
    """A command parked until the approval queue answers: the client's very packet (sent
    upstream as it came once approved) and what the queue is asked about."""

    packet: Packet
    held: HeldStatement
    prepared: PreparedStatement | None = None  # COM_STMT_EXECUTE: the statement it executes


class _StatementTables:
    """The "database.table" names a decision's statements read or write, listed when iterated:
    masking asks only when a response's error must be redacted, not for every command."""

    __slots__ = ("_analysis",)

    def __init__(self, analysis: tuple[StatementInfo, ...]) -> None:
        self._analysis = analysis

    def __iter__(self) -> Iterator[str]:
        return (name for info in self._analysis for name in (*info.reads, *info.writes))


class MysqlSession:
    """One client connection and its upstream connection."""

    def __init__(self, settings: MysqlListenerSettings, *, client_address: str,
                 client_host: str | None = None, throttle: LoginThrottle, client_tls: bool = False,
                 kills: KillDirectory | None = None) -> None:
        self.settings = settings
        self.client_address = client_address
        self.client_host = client_host if client_host is not None else client_address.rsplit(":", 1)[0]
        self.session_id = str(uuid.uuid4())
        self.phase = Phase.GREETING
        self.client_tls = client_tls
        self.identity: Identity | None = None
        self.info: SessionInfo | None = None
        self.gate: SessionGate | None = None
        self.capabilities = C(0)  # negotiated with the client (and, after login, the upstream)
        self.server_status = m.ServerStatus.AUTOCOMMIT
        self.close_reason: str | None = None
        self.database = ""
        self.statements: dict[int, PreparedStatement] = {}  # by the server's statement id
        self.upstream_version: bytes | None = None  # from the server's greeting, once logged in
        self.upstream_thread: int | None = None  # the server's id of our upstream connection

        self._throttle = throttle
        self._client = PacketReader(expected_sequence=1)
        # Tight bounds before the client is authenticated; the packet layer's defaults once READY.
        self._client_bounds = (self._client.max_payload, self._client.max_buffer)
        self._client.max_payload = _MAX_AUTH_PACKET
        self._client.max_buffer = 4 * _MAX_AUTH_PACKET
        self._upstream = PacketReader(expected_sequence=None)
        self._client_seq = 0  # next sequence id to send to the client
        self._nonce = auth.generate_nonce()
        self.connection_id = new_connection_id()  # above every server thread id (mysql_kill)
        self._kills = kills
        self._handshake: m.HandshakeResponse41 | None = None
        self._entry: MysqlIdentityEntry | None = None
        self._user = ""
        self._plugin = b""
        self._auth_step = ""  # "" | "switch" | "sha2-full" | "sha2-rsa"
        self._auth_rounds = 0
        self._login: UpstreamLogin | None = None
        self._response: _Response | None = None
        self._change_user_db: bytes | None = None  # set while a COM_CHANGE_USER re-authenticates
        self._change_user_attrs: tuple[tuple[bytes, bytes], ...] | None = None
        # A decision `client_fast` took before handing the read to the general path, which uses
        # it instead of asking the gate again (the gate keeps session state).
        self._decided: Decision | None = None
        self._deprecate_eof = False  # C.DEPRECATE_EOF in the negotiated capabilities, as a bool
        # The journal (docs/journal.md); the driver takes its events after every call.
        self.journal: SessionJournal | None = SessionJournal(
            self.session_id, redact_parameters=settings.redact_parameters) if settings.journal else None
        # Approvals (session/holds.py): the command held now, if any; nothing after it is taken
        # from the client until `hold_resolved()`.
        self._hold: _Hold | None = None
        # Masking: the tables and views the masks see through, and the sql_mode flags the
        # statements are read with (ANSI_QUOTES, NO_BACKSLASH_ESCAPES).
        self._catalog = Catalog()
        self._sql_mode = (False, False)

    # ------------------------------------------------------------------ driver events

    def start(self) -> list[MysqlSessionAction]:
        """The client connected: send the greeting."""
        caps = PROXY_CAPABILITIES | (C.SSL if self.settings.tls_available else C(0))
        greeting = m.HandshakeV10(
            server_version=self.settings.server_version or DEFAULT_SERVER_VERSION,
            connection_id=self.connection_id,
            auth_plugin_data=self._nonce + b"\x00",
            capabilities=caps,
            character_set=_UTF8MB4_GENERAL_CI,
            status_flags=m.ServerStatus.AUTOCOMMIT,
            auth_plugin_name=self.settings.default_auth_plugin,
        )
        out: list[MysqlSessionAction] = []
        self._send_client(greeting.encode(), out, seq=0)
        return out

    def client_fast(self, data: bytes) -> bool:
        """The hot path for client bytes, tried before `client_data()`: True when `data` is
        exactly one whole command that goes upstream unchanged (the driver writes `data` itself):
        a COM_STMT_EXECUTE of a statement prepared through this session whose decision is a plain
        allow, or a COM_QUERY the gate plainly allows (no barrier). False for anything else (a
        partial packet, a second command pipelined behind the first, another command, a refusal,
        a barrier, an unknown statement id, a response still coming, a command held for approval,
        a statement to hold), with nothing changed but, for a COM_QUERY, the decision taken,
        which `client_data()` then uses."""
        if self.phase is not Phase.READY or self._response is not None or self._hold is not None:
            return False
        n = len(data)
        length = n - 4
        if n < 5 or (data[0] | data[1] << 8 | data[2] << 16) != length or length >= MAX_PACKET_PAYLOAD:
            return False
        reader = self._client
        if (data[3] != reader.expected_sequence or not reader.at_boundary or length > reader.max_payload
                or n > reader.max_buffer or not self._upstream.at_boundary):
            return False
        # The general path would now take this very packet as the next command.
        code = data[4]
        if code == _COM_STMT_EXECUTE:
            if n < 9:
                return False
            prepared = self.statements.get(int.from_bytes(data[5:9], "little"))
            if prepared is None:
                return False
            decision = prepared.decision
            if decision.action is not Action.ALLOW or decision.barrier:
                return False
            journal = self.journal
            if journal is not None:
                try:
                    params, types = execute_parameters(data[4:], prepared.params, prepared.types, prepared.long_data)
                except ProtocolViolation:
                    return False  # the general path journals it without its parameters
                prepared.types = types
                prepared.long_data = None
                journal.statement(prepared.sql, decision, parameters=params or None)
                journal.client_cycle_end()
                self._response = _Response(code, _Mode.FIRST, decision=decision, journaled=True)
            else:
                self._response = _Response(code, _Mode.FIRST, decision=decision)
            if self.settings.masks is not None:
                self._response.masking = self._masking(prepared.sql, decision, binary=True)
                self._response.executed = prepared
        elif code == _COM_QUERY:
            gate = self.gate
            if gate is None:
                return False
            sql = data[5:]
            decision = gate.decide(sql, StatementSource.SIMPLE_QUERY, "")
            if decision.action is not Action.ALLOW or decision.barrier or _KILL_START.match(sql) is not None:
                self._decided = decision  # the general path answers it, without a second decide()
                return False
            self._response = _Response(code, _Mode.FIRST, sql=sql, decision=decision,
                                       allowed_infile=_names_local_infile(sql))
            if self.settings.masks is not None:
                self._response.masking = self._masking(sql, decision, binary=False)
            journal = self.journal
            if journal is not None:
                journal.statement(sql, decision, absorbs=True)
                journal.client_cycle_end()
                self._response.journaled = True
        else:
            return False
        seq = (data[3] + 1) & 0xFF
        reader.expected_sequence = seq
        self._client_seq = seq
        self._upstream.expected_sequence = seq
        return True

    def upstream_fast(self, data: bytes) -> bool:
        """The hot path for upstream bytes, tried before `upstream_data()`: True when `data` is
        whole packets of an ordinary response to COM_QUERY or COM_STMT_EXECUTE (OK, column count,
        definitions, EOFs, rows, the final EOF or OK, more results), which go to the client
        unchanged (the driver writes `data` itself); the response's progress, the sequence ids
        and the server status are tracked here with plain ints. False, with nothing changed, for
        anything else: a partial packet, a wrong sequence id, a packet of 16 MiB, an ERR, a LOCAL
        INFILE request, a cursor, a malformed OK or EOF, bytes after the response's end, a
        barrier's response (the state is read back after it), a client command waiting behind
        the response, dbguard's own state query, COM_CHANGE_USER's reset, other commands."""
        resp = self._response
        if resp is None or self.phase is not Phase.READY or resp.state is not None or resp.change_user \
                or resp.swallow or resp.catalog is not None:
            return False
        # Masked: the read goes as it came if masking would change none of it (FastMasking).
        masking = resp.masking
        fast: FastMasking | None = None
        if masking is not None:
            if masking.shift:
                return False  # a row was re-framed into another packet count: ids shifted
            fast = masking.fast_view()
        command = resp.command
        if command != _COM_QUERY and command != _COM_STMT_EXECUTE:
            return False
        decision = resp.decision
        if decision is not None and decision.barrier:
            return False
        reader = self._upstream
        seq = reader.expected_sequence
        n = len(data)
        if (seq is None or n == 0 or n > reader.max_buffer or reader.max_payload < MAX_PACKET_PAYLOAD
                or not reader.at_boundary):
            return False  # (every packet walked here is shorter than MAX_PACKET_PAYLOAD)
        deprecate_eof = self._deprecate_eof
        rows = _Mode.ROWS
        unpack_header = _HEADER.unpack_from
        mode = resp.mode
        remaining = resp.remaining
        status = -1
        done = False
        pos = 0
        # The journal: rows of the current result set, and each result's count as it ends
        # (applied only once the whole read is accepted).
        row_count = resp.rows
        results: list[int | None] | None = [] if resp.journaled else None
        while pos < n:
            if done or n - pos < 5:
                return False  # bytes after the response's end, or a partial packet
            if mode is rows:
                # Rows: only the header and the first byte matter, until the result set's end
                # (and, when masks apply, the rows' values: checked together, below).
                batch: list[bytes] | None = None
                if fast is not None:
                    if fast.plan is None:
                        return False  # rows before their definitions: the general path's error
                    if fast.plan.rewrites:
                        batch = []
                while pos < n:
                    if n - pos < 5:
                        return False
                    (header,) = unpack_header(data, pos)  # length | sequence id << 24
                    length = header & 0xFFFFFF
                    start = pos + 4
                    pos = start + length
                    if header >> 24 != seq or pos > n or length == 0 or length == MAX_PACKET_PAYLOAD:
                        return False
                    seq = (seq + 1) & 0xFF
                    first = data[start]
                    if first >= _EOF_HEADER:
                        break
                    if batch is not None:
                        batch.append(data[start:pos])
                    row_count += 1
                else:
                    if fast is not None and batch and not fast.rows_unchanged(batch):
                        return False  # a value to mask: the general path rewrites the row
                    break  # the read ends among the rows
                if fast is not None and batch and not fast.rows_unchanged(batch):
                    return False
                if first != _EOF_HEADER:
                    return False  # ERR
                if fast is not None and not fast.result_end():
                    return False  # values of this result were masked: their counts go to the journal
                # EOF, or DEPRECATE_EOF's OK: the result set's end
                if deprecate_eof:
                    status = _ok_status(data, start, pos)
                elif length == 5:
                    status = data[start + 3] | data[start + 4] << 8
                else:
                    return False
                if status < 0:
                    return False
                if results is not None:
                    results.append(row_count)
                row_count = 0
                if status & _MORE_RESULTS_EXISTS:
                    mode = _Mode.FIRST
                else:
                    done = True
                continue
            length = data[pos] | data[pos + 1] << 8 | data[pos + 2] << 16
            start = pos + 4
            pos = start + length
            if data[start - 1] != seq or pos > n or length == 0 or length >= MAX_PACKET_PAYLOAD:
                return False
            seq = (seq + 1) & 0xFF
            first = data[start]
            if first == _ERR_HEADER:
                return False
            if mode is _Mode.COLUMNS:
                if remaining <= 0:
                    return False
                remaining -= 1
                if fast is not None and not fast.definition(data[start:pos], self.capabilities):
                    return False
                if remaining == 0:
                    mode = rows if deprecate_eof else _Mode.COLUMNS_EOF
            elif mode is _Mode.COLUMNS_EOF:
                if first != _EOF_HEADER or length != 5 or data[start + 3] & _CURSOR_EXISTS:
                    return False
                mode = rows
            elif mode is _Mode.FIRST:
                if first == _OK_HEADER:
                    status = _ok_status(data, start, pos)
                    if status < 0:
                        return False
                    if results is not None:
                        results.append(ok_affected_rows(data, start, pos))
                    if fast is not None:
                        fast.ok()
                    if not status & _MORE_RESULTS_EXISTS:
                        done = True
                elif first < 0xFB and length == 1:  # the column count (0 is the OK header)
                    remaining = first
                    mode = _Mode.COLUMNS
                    if fast is not None:
                        fast.column_count(first)
                else:
                    return False  # LOCAL INFILE request, a large column count, malformed
            else:
                return False
        if done and not self._client.at_boundary:
            return False  # a pipelined command is taken as the response ends: general path
        if done and fast is not None and self._catalog_due(resp):
            return False  # DDL ran, or a result named an unknown table: the general path reads the catalog
        if fast is not None:
            fast.commit()
            if resp.executed is not None and fast.plan is not None:
                resp.executed.cursor_plan = fast.plan  # as the general path does
        if done:
            self._response = None
            self._client.expected_sequence = 0
        else:
            resp.mode = mode
            resp.remaining = remaining
            resp.rows = row_count
        if results is not None:
            journal = self.journal
            assert journal is not None
            for count in results:
                journal.result(count)
            if done:
                journal.server_cycle_end()
        reader.expected_sequence = seq
        self._client_seq = seq
        if status >= 0:
            self.server_status = _status_flags(status)
        return True

    def client_data(self, data: bytes) -> list[MysqlSessionAction]:
        out: list[MysqlSessionAction] = []
        if self.phase is Phase.CLOSED:
            self._decided = None
            return out
        try:
            self._client.feed(data)
            self._drain_client(out)
        except ProtocolViolation as exc:
            self._protocol_error(out, str(exc))
        self._decided = None  # taken by the first command of this read, if client_fast left one
        return out

    def upstream_data(self, data: bytes) -> list[MysqlSessionAction]:
        out: list[MysqlSessionAction] = []
        if self.phase is Phase.CLOSED:
            return out
        if self.phase is Phase.UPSTREAM_LOGIN:
            assert self._login is not None
            actions, outcome = self._login.feed(data)
            out.extend(actions)
            self._on_login(outcome, out)
            return out
        if self.phase is not Phase.READY:
            self._close(out, "upstream data before login", self._err(ER_UNKNOWN_COM, _S_PROTOCOL,
                                                                     "dbguard: unexpected data from the upstream"))
            return out
        try:
            self._upstream.feed(data)
            self._drain_upstream(out)
        except ProtocolViolation as exc:
            log.warning("session.upstream_protocol_error", extra={"error": str(exc)})
            self._close(out, f"upstream protocol error: {exc}", self._err(
                ER_SERVER_SHUTDOWN, _S_PROTOCOL, "dbguard: the upstream server sent an invalid response"))
        return out

    def client_tls_started(self) -> list[MysqlSessionAction]:
        out: list[MysqlSessionAction] = []
        if self.phase is not Phase.CLIENT_TLS:
            self._protocol_error(out, "TLS started outside the TLS phase")
            return out
        self.client_tls = True
        self.phase = Phase.GREETING
        return out

    def upstream_connected(self) -> list[MysqlSessionAction]:
        out: list[MysqlSessionAction] = []
        if self.phase is not Phase.UPSTREAM_CONNECT:
            return out
        hs = self._handshake
        assert hs is not None
        self._login = UpstreamLogin(
            self.settings.upstream, client_capabilities=self.capabilities, character_set=hs.character_set,
            database=self.database, connect_attrs=hs.connect_attrs)
        self.phase = Phase.UPSTREAM_LOGIN
        return out

    def upstream_tls_started(self) -> list[MysqlSessionAction]:
        out: list[MysqlSessionAction] = []
        if self.phase is Phase.UPSTREAM_LOGIN and self._login is not None:
            actions, outcome = self._login.tls_started()
            out.extend(actions)
            self._on_login(outcome, out)
        return out

    def upstream_failed(self, reason: str) -> list[MysqlSessionAction]:
        out: list[MysqlSessionAction] = []
        connecting = self.phase in (Phase.UPSTREAM_CONNECT, Phase.UPSTREAM_LOGIN)
        self._close(out, f"upstream connection failed: {reason}", self._err(
            ERRNO_UPSTREAM_REFUSED if connecting else ER_SERVER_SHUTDOWN,
            SQLSTATE_REJECTED if connecting else _S_PROTOCOL, "dbguard: cannot reach the upstream server"))
        return out

    def upstream_closed(self) -> list[MysqlSessionAction]:
        out: list[MysqlSessionAction] = []
        if self.phase is Phase.CLOSED:
            return out
        quitting = self._response is not None and self._response.command == m.Command.QUIT
        busy = self._response is not None or self._hold is not None or self.phase is not Phase.READY
        error = None if quitting or not busy else self._err(
            ER_SERVER_SHUTDOWN, _S_PROTOCOL, "dbguard: the upstream server closed the connection")
        self._close(out, "upstream closed", error)
        return out

    def client_closed(self) -> list[MysqlSessionAction]:
        out: list[MysqlSessionAction] = []
        if self.phase is not Phase.CLOSED:
            self.phase = Phase.CLOSED
            self.close_reason = "client closed"
            out.append(Close("client closed"))
        return out

    @property
    def busy(self) -> bool:
        """A command's response is still being relayed, or a command is held for approval
        (the idle timeout must not fire while a person decides; a drain waits for it)."""
        return self._response is not None or self._hold is not None

    # ------------------------------------------------------------------ helpers

    def revalidate(self) -> None:
        """The policy was reloaded: decide the session's prepared statements again, so that one
        the new policy refuses can no longer be executed (COM_STMT_EXECUTE answers 1227)."""
        if self.gate is None or self.phase is not Phase.READY:
            return
        for prepared in self.statements.values():
            prepared.decision = self._decide(prepared.sql, StatementSource.PARSE)

    def _send_client(self, payload: bytes, out: list[MysqlSessionAction], *, seq: int | None = None) -> None:
        data, self._client_seq = encode_packets(payload, self._client_seq if seq is None else seq)
        out.append(SendClient(data))

    def _err(self, errno: int, sqlstate: str, message: str) -> bytes:
        return m.err(errno, sqlstate, message).encode()

    def _close(self, out: list[MysqlSessionAction], reason: str, error: bytes | None = None) -> None:
        if self.phase is Phase.CLOSED:
            return
        if error is not None:
            self._send_client(error, out)
        self.phase = Phase.CLOSED
        self.close_reason = reason
        out.append(Close(reason))

    def _protocol_error(self, out: list[MysqlSessionAction], reason: str) -> None:
        log.info("session.client_protocol_error", extra={"client": self.client_address, "error": reason})
        self._close(out, f"client protocol error: {reason}",
                    self._err(ER_UNKNOWN_COM, _S_PROTOCOL, f"dbguard: malformed packet: {reason}"))

    def _next_client_packet(self) -> Packet | None:
        for packet in self._client.packets():
            self._client_seq = packet.next_sequence_id
            return packet
        return None

    def _drain_client(self, out: list[MysqlSessionAction]) -> None:
        while self.phase is not Phase.CLOSED:
            if self._hold is not None:
                # What the client pipelined waits, bounded, until the held command is resolved.
                if self._client.buffered > MAX_HELD_BEHIND_HOLD:
                    raise ProtocolViolation("too much data pipelined behind a statement held for approval")
                return
            if self.phase is Phase.READY and self._response is not None and \
                    self._response.mode is not _Mode.INFILE_UPLOAD:
                return  # held until the current response is complete
            if self.phase in (Phase.CLIENT_TLS, Phase.UPSTREAM_CONNECT, Phase.UPSTREAM_LOGIN):
                return  # nothing from the client is read until the phase changes
            packet = self._next_client_packet()
            if packet is None:
                return
            if self.phase is Phase.GREETING:
                self._on_handshake(packet.payload, out)
            elif self.phase is Phase.CLIENT_AUTH:
                self._on_auth_reply(packet.payload, out)
            elif self.phase is Phase.READY:
                if self._response is not None:
                    self._on_infile_data(packet, out)
                else:
                    self._on_command(packet, out)

    # ------------------------------------------------------------------ client login

    def _on_handshake(self, payload: bytes, out: list[MysqlSessionAction]) -> None:
        msg = m.decode_client_handshake(payload)
        if isinstance(msg, m.SSLRequest):
            if not self.settings.tls_available or self.client_tls:
                raise ProtocolViolation("SSLRequest but TLS is not offered")
            self.phase = Phase.CLIENT_TLS
            self._client.expect(self._client_seq)  # the full response continues the sequence
            out.append(MysqlStartClientTls(self._client.take_rest()))
            return
        if msg.capabilities & C.COMPRESS:
            # Not offered in the greeting (dbguard must read every packet); some clients ask anyway.
            self._close(out, "client asked for compression", self._err(
                ER_NOT_SUPPORTED, "08004",
                "dbguard: protocol compression is not supported through the proxy; connect without it"))
            return
        if self.settings.tls_required and not self.client_tls:
            # MySQL's answer under require_secure_transport: ER_SECURE_TRANSPORT_REQUIRED.
            log.info("session.tls_required", extra={"client": self.client_address, "listener": self.settings.name})
            self._close(out, "TLS required", self._err(
                ER_INSECURE_TRANSPORT, "HY000",
                "dbguard: connections using insecure transport are prohibited on this listener (tls require: "
                "true); connect with TLS"))
            return
        self._handshake = msg
        self.capabilities = msg.capabilities & (PROXY_CAPABILITIES | C.SSL)
        self._user = msg.username.decode("utf-8", "replace")
        self.database = (msg.database or b"").decode("utf-8", "replace") or self.settings.upstream.database
        self._entry = self.settings.identities.get(self._user)
        plugin = msg.auth_plugin_name if msg.capabilities & C.PLUGIN_AUTH else auth.MYSQL_NATIVE_PASSWORD
        self.phase = Phase.CLIENT_AUTH
        # libmysqlclient answers with an empty response when its plugin is not the greeting's
        # (the nonce was not meant for it) and waits for an auth switch, as MySQL servers send.
        not_for_us = not msg.auth_response and plugin != self.settings.default_auth_plugin
        if not not_for_us and (plugin == self.settings.default_auth_plugin or plugin in (
                auth.MYSQL_NATIVE_PASSWORD, auth.CACHING_SHA2_PASSWORD)):
            assert plugin is not None
            self._plugin = plugin
            self._check_scramble(msg.auth_response, out)
            return
        # Another plugin (or none named): switch to ours with a fresh nonce.
        self._plugin = self.settings.default_auth_plugin
        self._nonce = auth.generate_nonce()
        self._auth_step = "switch"
        self._send_client(m.AuthSwitchRequest(self._plugin, self._nonce + b"\x00").encode(), out)
        self._client.expect(self._client_seq)

    def _on_auth_reply(self, payload: bytes, out: list[MysqlSessionAction]) -> None:
        self._auth_rounds += 1
        if self._auth_rounds > _CLIENT_AUTH_ROUNDS:
            raise ProtocolViolation("too many authentication rounds")
        step = self._auth_step
        if step == "switch":
            self._check_scramble(payload, out)
        elif step == "sha2-full":
            if payload == auth.CACHING_SHA2_REQUEST_PUBLIC_KEY and not self.client_tls:
                if self.settings.rsa_key is None:
                    self._auth_failed(out, "no RSA key for full authentication without TLS")
                    return
                self._send_client(m.AuthMoreData(self.settings.rsa_key.public_key_pem()).encode(), out)
                self._client.expect(self._client_seq)
                self._auth_step = "sha2-rsa"
            elif self.client_tls:
                try:
                    password = auth.parse_cleartext_response(payload)
                except auth.AuthenticationError as exc:
                    self._auth_failed(out, str(exc))
                    return
                self._check_cleartext(password, out)
            else:
                self._decrypt_and_check(payload, out)
        elif step == "sha2-rsa":
            self._decrypt_and_check(payload, out)
        else:
            raise ProtocolViolation("unexpected packet during authentication")

    def _decrypt_and_check(self, payload: bytes, out: list[MysqlSessionAction]) -> None:
        if self.settings.rsa_key is None:
            self._auth_failed(out, "no RSA key for full authentication without TLS")
            return
        try:
            password = self.settings.rsa_key.decrypt_password(payload, self._nonce)
        except auth.AuthenticationError as exc:
            self._auth_failed(out, str(exc))
            return
        self._check_cleartext(password, out)

    def _check_cleartext(self, password: bytes, out: list[MysqlSessionAction]) -> None:
        verifier = self._entry.caching_sha2 if self._entry else auth.CachingSha2Verifier.fake()
        if self._entry is not None and verifier.verify_cleartext(password):
            self._auth_ok(out)
        else:
            self._auth_failed(out, "wrong password" if self._entry else "unknown user")

    def _check_scramble(self, response: bytes, out: list[MysqlSessionAction]) -> None:
        entry = self._entry
        if self._plugin == auth.MYSQL_NATIVE_PASSWORD:
            verifier = entry.native if entry else auth.NativePasswordVerifier.fake()
            if entry is not None and verifier.verify(self._nonce, response):
                self._auth_ok(out)
            else:
                self._auth_failed(out, "wrong password" if entry else "unknown user")
            return
        sha2 = entry.caching_sha2 if entry else auth.CachingSha2Verifier.fake()
        fast_ok = entry is not None and sha2.verify_scramble(self._nonce, response)
        if fast_ok and not self.settings.force_full_auth:
            self._send_client(m.AuthMoreData(auth.CACHING_SHA2_FAST_AUTH_SUCCESS).encode(), out)
            self._auth_ok(out)
            return
        if not self.settings.force_full_auth:
            self._auth_failed(out, "wrong password" if entry else "unknown user")
            return
        # Full authentication (as a MySQL server does on a cache miss), for known and unknown
        # names alike: the answer comes only at the end.
        self._auth_step = "sha2-full"
        self._send_client(m.AuthMoreData(auth.CACHING_SHA2_PERFORM_FULL_AUTHENTICATION).encode(), out)
        self._client.expect(self._client_seq)

    def _auth_failed(self, out: list[MysqlSessionAction], detail: str) -> None:
        delay = self._throttle.failure(self.client_host)
        log.warning("session.auth_failed", extra={
            "client": self.client_address, "user": self._user, "listener": self.settings.name,
            "delay": delay, "reason": detail})
        out.append(Sleep(delay))
        host = self.client_host
        self._close(out, "authentication failed", self._err(
            ER_ACCESS_DENIED, "28000", f"Access denied for user '{self._user}'@'{host}' (using password: YES)"))

    def _auth_ok(self, out: list[MysqlSessionAction]) -> None:
        assert self._entry is not None
        self._throttle.success(self.client_host)
        self.identity = self._entry.identity
        self._auth_step = ""
        if self._change_user_db is not None:
            # COM_CHANGE_USER: reset the upstream session (same service account), then answer.
            self.phase = Phase.READY
            self._response = _Response(m.Command.RESET_CONNECTION, _Mode.SINGLE, change_user="reset")
            out.append(SendUpstream(_frame(bytes((m.Command.RESET_CONNECTION,)), 0)))
            self._upstream.expect(1)
            return
        self.phase = Phase.UPSTREAM_CONNECT
        out.append(self.settings.upstream.target)

    # ------------------------------------------------------------------ upstream login

    def _on_login(self, outcome: UpstreamReady | UpstreamRefused | None, out: list[MysqlSessionAction]) -> None:
        if outcome is None:
            return
        self._login = None
        if isinstance(outcome, UpstreamRefused):
            self._close(out, outcome.reason, outcome.client_error.encode())
            return
        if self.capabilities & C.DEPRECATE_EOF and not outcome.capabilities & C.DEPRECATE_EOF:
            # The client reads resultsets without EOF packets; the server would send them.
            self._close(out, "upstream lacks DEPRECATE_EOF", self._err(
                ERRNO_UPSTREAM_REFUSED, SQLSTATE_REJECTED,
                "dbguard: the upstream server is too old (no CLIENT_DEPRECATE_EOF); MySQL 5.7.5+ or MariaDB 10.2+"))
            return
        # The client's view of the session: what both it and the server can do.
        self.capabilities = self.capabilities & (outcome.capabilities | C.SSL | C.CONNECT_WITH_DB)
        self._deprecate_eof = bool(self.capabilities & C.DEPRECATE_EOF)
        self.upstream_version = outcome.greeting.server_version
        self.upstream_thread = outcome.greeting.connection_id
        self.server_status = outcome.status
        self._open_gate()
        self._journal_started()
        ok = m.OkPacket(status_flags=outcome.status)
        self._send_client(ok.encode(self.capabilities), out)
        self.phase = Phase.READY
        self._client.max_payload, self._client.max_buffer = self._client_bounds
        self._client.expect(0)
        log.info("session.started", extra={"session": self.session_id, "user": self._user,
                                           "listener": self.settings.name})
        self._start_state_sync(out)  # the server's sql_mode may not be the default
        if outcome.rest:
            self._upstream.feed(outcome.rest)
            self._drain_upstream(out)
        self._drain_client_safely(out)

    def _journal_started(self, attrs: tuple[tuple[bytes, bytes], ...] | None = None) -> None:
        """The session is ready: its start goes to the journal, with the client's connect
        attributes and the intent declared in them (`dbguard.intent` / `dbguard_intent`)."""
        if self.journal is None:
            return
        assert self.info is not None
        assert self._handshake is not None
        attributes, intent = connect_attributes(self._handshake.connect_attrs if attrs is None else attrs)
        self.journal.started(self.info, attributes, intent)

    def journal_refused(self, message: str) -> list[MysqlSessionAction]:
        """The driver could not make the current statement's journal event durable and the
        listener refuses unjournaled statements: the client gets an ERR in place of the
        statement's response (which the server never produced: nothing was sent), and the
        session closes."""
        out: list[MysqlSessionAction] = []
        self._close(out, "journal unavailable", self._err(ER_UNKNOWN_ERROR, "HY000", message))
        return out

    def _open_gate(self) -> None:
        """Fix the session's facts for the (newly) authenticated identity and open its gate."""
        assert self.identity is not None
        assert self._handshake is not None
        self.info = SessionInfo(
            session_id=self.session_id, listener=self.settings.name, protocol="mysql",
            identity=self.identity, client_address=self.client_address, database=self.database,
            application_name=dict(self._handshake.connect_attrs).get(b"program_name", b"").decode("utf-8", "replace"),
            tls=self.client_tls)
        startup = {"database": self.database, "user": self._user}
        self.gate = self.settings.gate.open(self.info, startup)
        if self.database:
            self.gate.server_parameter("database", self.database)

    # ------------------------------------------------------------------ command phase

    def _refuse(self, out: list[MysqlSessionAction], errno: int, sqlstate: str, message: str) -> None:
        """Answer the current command ourselves; the session continues."""
        self._send_client(self._err(errno, sqlstate, message), out)
        self._client.expect(0)

    def _forward(self, packet: Packet, out: list[MysqlSessionAction]) -> None:
        data, _ = encode_packets(packet.payload, packet.sequence_id)
        out.append(SendUpstream(data))
        self._upstream.expect(packet.next_sequence_id)

    def _decide(self, sql: bytes, source: StatementSource) -> Decision:
        assert self.gate is not None
        return self.gate.decide(sql, source, "")

    def _on_command(self, packet: Packet, out: list[MysqlSessionAction]) -> None:
        payload = packet.payload
        if not payload:
            raise ProtocolViolation("empty command packet")
        code = payload[0]
        try:
            cmd = m.Command(code)
        except ValueError:
            self._refuse(out, ER_UNKNOWN_COM, _S_PROTOCOL, f"dbguard: unknown command 0x{code:02x}")
            return
        if cmd in (m.Command.QUERY, m.Command.STMT_PREPARE):
            sql = payload[1:]
            source = StatementSource.SIMPLE_QUERY if cmd == m.Command.QUERY else StatementSource.PARSE
            decided, self._decided = self._decided, None
            decision = decided if decided is not None and cmd == m.Command.QUERY else self._decide(sql, source)
            if cmd == m.Command.QUERY and _held(decision):
                self._start_hold(_Hold(packet, self._held_statement(sql, None, decision)), out)
                return
            # A statement whose executions are held is prepared: preparing runs nothing.
            if not _runs(decision) and not _held(decision):
                log.info("session.refused", extra={"session": self.session_id, "rules": decision.rule_ids})
                self._refuse(out, ER_SPECIFIC_ACCESS_DENIED, "42000", refusal_message(decision))
                if self.journal is not None:  # answered here: no server cycle, no outcome
                    self.journal.statement(sql, decision, forwarded=False, absorbs=cmd == m.Command.QUERY)
                return
            if cmd == m.Command.STMT_PREPARE and len(self.statements) >= MAX_TRACKED_STATEMENTS:
                self._refuse(out, ER_MAX_PREPARED_STMT_COUNT, "42000",
                             "dbguard: too many prepared statements in this session")
                return
            self._send_text(packet, decision, out)
            return
        if cmd in (m.Command.STMT_EXECUTE, m.Command.STMT_FETCH, m.Command.STMT_RESET,
                   m.Command.STMT_CLOSE, m.Command.STMT_SEND_LONG_DATA):
            if len(payload) < 5:
                raise ProtocolViolation(f"{cmd.name} truncated")
            stmt_id = int.from_bytes(payload[1:5], "little")
            if stmt_id not in self.statements:
                if cmd in (m.Command.STMT_CLOSE, m.Command.STMT_SEND_LONG_DATA):
                    self._client.expect(0)  # no response to these, not even an error
                    return
                self._refuse(out, ER_UNKNOWN_STMT_HANDLER, "HY000",
                             f"dbguard: unknown prepared statement handler ({stmt_id}) given to {cmd.name}")
                return
            prepared = self.statements[stmt_id]
            if cmd == m.Command.STMT_CLOSE:
                del self.statements[stmt_id]
            elif cmd == m.Command.STMT_EXECUTE and _held(prepared.decision):
                # Each execution is held, with its parameters; the statement stays prepared.
                held = self._held_statement(prepared.sql, self._held_parameters(prepared, payload),
                                            prepared.decision)
                self._start_hold(_Hold(packet, held, prepared), out)
                return
            elif cmd == m.Command.STMT_EXECUTE and not _runs(prepared.decision):
                # Prepared under an earlier policy that the reloaded one refuses (`revalidate`).
                self._refuse(out, ER_SPECIFIC_ACCESS_DENIED, "42000", refusal_message(prepared.decision))
                self._journal_execute(prepared, payload, forwarded=False)
                return
            elif cmd == m.Command.STMT_EXECUTE:
                self._send_execute(packet, prepared, prepared.decision, out)
                return
            self._forward(packet, out)
            if cmd in (m.Command.STMT_CLOSE, m.Command.STMT_SEND_LONG_DATA):
                # Bytes per parameter, for the journal and for held executions' parameters.
                if cmd == m.Command.STMT_SEND_LONG_DATA and len(payload) >= 7 and (
                        self.journal is not None or _held(prepared.decision)):
                    index = int.from_bytes(payload[5:7], "little")
                    sent = prepared.long_data if prepared.long_data is not None else {}
                    sent[index] = sent.get(index, 0) + len(payload) - 7
                    prepared.long_data = sent
                self._client.expect(0)
                return
            self._response = _Response(code, _Mode.ROWS if cmd == m.Command.STMT_FETCH else _Mode.SINGLE)
            if cmd == m.Command.STMT_FETCH and self.settings.masks is not None:
                self._response.masking = self._masking(prepared.sql, prepared.decision, binary=True,
                                                       plan=prepared.cursor_plan)
            if cmd == m.Command.STMT_RESET:
                prepared.long_data = None
            return
        if cmd == m.Command.PROCESS_KILL:
            self._process_kill(packet, out)
            return
        if cmd in (m.Command.PING, m.Command.STATISTICS, m.Command.SET_OPTION, m.Command.RESET_CONNECTION,
                   m.Command.INIT_DB, m.Command.FIELD_LIST, m.Command.QUIT):
            m.decode_command(payload, self.capabilities)  # strict check of the arguments
            self._forward(packet, out)
            if cmd == m.Command.QUIT:
                self._response = _Response(code, _Mode.SINGLE)
                return
            self._response = _Response(code, _Mode.COLUMNS if cmd == m.Command.FIELD_LIST else _Mode.SINGLE,
                                       remaining=-1)
            if cmd == m.Command.INIT_DB:
                self._response.init_db = payload[1:]
                if self.journal is not None:
                    self.journal.statement(b"USE `" + payload[1:].replace(b"`", b"``") + b"`", _COMMAND_DECISION)
                    self.journal.client_cycle_end()
                    self._response.journaled = True
            return
        if cmd == m.Command.CHANGE_USER:
            self._start_change_user(m.ComChangeUser.decode(payload, self.capabilities), out)
            return
        self._refuse(out, ER_NOT_SUPPORTED, "42000", f"dbguard: {cmd.name} is not allowed through the proxy")

    def _send_text(self, packet: Packet, decision: Decision, out: list[MysqlSessionAction],
                   approval_id: str | None = None) -> None:
        """Send an allowed (or approved: `approval_id`) COM_QUERY or COM_STMT_PREPARE upstream
        and track its response (a KILL's thread id mapped, session.mysql_kill)."""
        code = packet.payload[0]
        query = code == m.Command.QUERY
        sql = text = packet.payload[1:]
        if query and (request := parse_kill(sql)) is not None:
            target = self._kill_target(request)
            if target is None:
                message = f"Unknown thread id: {request.thread_id}"
                self._refuse(out, ER_NO_SUCH_THREAD, "HY000", message)
                self._journal_answered(sql, decision, ER_NO_SUCH_THREAD, message, approval_id)
                return
            self._journal_kill(target)
            if target != request.thread_id:  # a dbguard connection id: the server's thread instead
                sql = request.statement(target)
                packet = Packet(packet.sequence_id, bytes((code,)) + sql, packet.next_sequence_id)
        self._response = _Response(code, _Mode.FIRST if query else _Mode.SINGLE, sql=sql, decision=decision,
                                   allowed_infile=query and _names_local_infile(sql))
        if query and self.settings.masks is not None:
            self._response.masking = self._masking(sql, decision, binary=False)
        if self.journal is not None and query:
            # The text as the client sent it (a KILL's id as the client knows it).
            self.journal.statement(text, decision, absorbs=True, approval_id=approval_id)
            self.journal.client_cycle_end()
            self._response.journaled = True
        self._forward(packet, out)

    def _send_execute(self, packet: Packet, prepared: PreparedStatement, decision: Decision,
                      out: list[MysqlSessionAction], approval_id: str | None = None) -> None:
        """Send an allowed (or approved: `approval_id`) COM_STMT_EXECUTE upstream; its response
        carries the statement's decision (a prepared SET or USE is a barrier too)."""
        self._forward(packet, out)
        self._response = _Response(packet.payload[0], _Mode.FIRST, decision=decision, executed=prepared)
        if self.settings.masks is not None:
            self._response.masking = self._masking(prepared.sql, decision, binary=True)
        if self.journal is not None:
            self._journal_execute(prepared, packet.payload, forwarded=True, decision=decision,
                                  approval_id=approval_id)
            self._response.journaled = True
        elif _held(decision):  # the server's view, for reading the next held execution's parameters
            with contextlib.suppress(ProtocolViolation):  # unreadable: the server will say so
                _, prepared.types = execute_parameters(packet.payload, prepared.params, prepared.types,
                                                       prepared.long_data)
            prepared.long_data = None

    # ------------------------------------------------------------------ holds (approvals)

    def _held_statement(self, sql: bytes, parameters: tuple[str | None, ...] | None,
                        decision: Decision) -> HeldStatement:
        journal = self.journal
        return HeldStatement(
            sql=statement_text(sql), parameters=parameters, decision=decision,
            statement_seq=journal.seq + 1 if journal is not None else None,
            intent=journal.statement_intent(sql) if journal is not None else "",
        )

    @staticmethod
    def _held_parameters(prepared: PreparedStatement, payload: bytes) -> tuple[str | None, ...] | None:
        """A held execution's parameters as text (as the journal renders them); None when the
        packet cannot be read (the server will say so if it is approved)."""
        try:
            params, _ = execute_parameters(payload, prepared.params, prepared.types, prepared.long_data)
        except ProtocolViolation:
            return None
        return params or None

    def _start_hold(self, hold: _Hold, out: list[MysqlSessionAction]) -> None:
        """Park `hold` until the driver calls hold_resolved(); no command is taken meanwhile."""
        assert self.info is not None
        self._hold = hold
        out.append(HoldStatement(hold.held))
        log.info("statement.held", extra={
            "session": self.session_id, "identity": self.info.identity.name,
            "rules": ",".join(hold.held.rule_ids),
        })

    def hold_requested(self, approval_id: str) -> list[MysqlSessionAction]:
        """Wait mode: the request exists. MySQL has no notices: the client just waits."""
        return []

    def hold_resolved(self, resolution: HoldResolved) -> list[MysqlSessionAction]:
        """The queue answered for the held command: send the very same packet upstream once,
        or answer it with ERR 1227 (as a block is answered); then go on with what the client
        sent behind it."""
        out: list[MysqlSessionAction] = []
        hold, self._hold = self._hold, None
        if hold is None or self.phase is not Phase.READY:
            return out
        held, packet = hold.held, hold.packet
        self._client_seq = packet.next_sequence_id  # our answer follows the client's command
        refusal = resolution.refusal
        try:
            if resolution.run or refusal is None:
                approval_id = resolution.approval_id or None
                if hold.prepared is not None:
                    self._send_execute(packet, hold.prepared, held.decision, out, approval_id)
                elif packet.payload[0] == m.Command.PROCESS_KILL:
                    self._send_process_kill(packet, held.decision, out, approval_id)
                else:
                    self._send_text(packet, held.decision, out, approval_id)
            else:
                log.info("session.hold_refused", extra={"session": self.session_id,
                                                        "approval": resolution.approval_id})
                if resolution.sqlstate == "57014":  # cancelled
                    self._refuse(out, ER_QUERY_INTERRUPTED, "70100", refusal_message(refusal))
                else:
                    self._refuse(out, ER_SPECIFIC_ACCESS_DENIED, "42000", refusal_message(refusal))
                if self.journal is not None:  # answered here: no server cycle, no outcome
                    self.journal.statement(held.sql, refusal, parameters=held.parameters, forwarded=False,
                                           approval_id=resolution.approval_id or None)
            self._drain_client(out)
        except ProtocolViolation as exc:
            self._protocol_error(out, str(exc))
        return out

    def hold_abandoned(self, reason: str) -> None:
        """The session ends while a command is held: journal it as never run."""
        hold, self._hold = self._hold, None
        if hold is not None:
            journal_abandoned(self.journal, hold.held, reason)

    def _kill_target(self, request: KillRequest) -> int | None:
        """The server thread a KILL of this session's identity may end (session.mysql_kill)."""
        if self._kills is None:
            return request.thread_id
        assert self.identity is not None
        return resolve(request, self.identity.name, self._kills)

    def _process_kill(self, packet: Packet, out: list[MysqlSessionAction]) -> None:
        """COM_PROCESS_KILL: decided by policy as the `KILL CONNECTION <id>` it means, the id
        mapped as for the statement, then sent upstream with the server's thread id."""
        request = _process_kill_request(packet)
        text = request.statement(request.thread_id)
        decision = self._decide(text, StatementSource.SIMPLE_QUERY)
        if _held(decision):
            self._start_hold(_Hold(packet, self._held_statement(text, None, decision)), out)
            return
        if not _runs(decision):
            self._refuse(out, ER_SPECIFIC_ACCESS_DENIED, "42000", refusal_message(decision))
            if self.journal is not None:
                self.journal.statement(text, decision, forwarded=False)
            return
        self._send_process_kill(packet, decision, out)

    def _send_process_kill(self, packet: Packet, decision: Decision, out: list[MysqlSessionAction],
                           approval_id: str | None = None) -> None:
        """An allowed (or approved: `approval_id`) COM_PROCESS_KILL, sent with the server's id."""
        request = _process_kill_request(packet)
        text = request.statement(request.thread_id)
        target = self._kill_target(request)
        if target is None:
            message = f"Unknown thread id: {request.thread_id}"
            self._refuse(out, ER_NO_SUCH_THREAD, "HY000", message)
            self._journal_answered(text, decision, ER_NO_SUCH_THREAD, message, approval_id)
            return
        self._journal_kill(target)
        self._forward(Packet(packet.sequence_id, m.ComProcessKill(target).encode(), packet.next_sequence_id), out)
        self._response = _Response(packet.payload[0], _Mode.SINGLE, decision=decision)
        if self.journal is not None:
            self.journal.statement(text, decision, approval_id=approval_id)
            self.journal.client_cycle_end()
            self._response.journaled = True

    def _journal_answered(self, sql: bytes, decision: Decision, errno: int, message: str,
                          approval_id: str | None = None) -> None:
        """An allowed statement that dbguard answered with an error itself (KILL of a thread
        out of reach): journaled with that error as its outcome."""
        journal = self.journal
        if journal is None:
            return
        journal.statement(sql, decision, approval_id=approval_id)
        journal.client_cycle_end()
        journal.error(str(errno), message)
        journal.server_cycle_end()

    def _journal_kill(self, thread_id: int) -> None:
        """A KILL that goes upstream for a server thread of another dbguard session: a cancel
        event in that session's journal (the statement it interrupts, if one is running)."""
        if self._kills is None:
            return
        target = self._kills.journal_of(thread_id)
        if target is not None and target is not self.journal:
            target.cancelled(self.client_address)

    def _journal_execute(self, prepared: PreparedStatement, payload: bytes, *, forwarded: bool,
                         decision: Decision | None = None, approval_id: str | None = None) -> None:
        """One execution of a prepared statement, with its parameters as text (`decision`:
        the one it runs under, if not the statement's own; `approval_id`: it was held)."""
        journal = self.journal
        if journal is None:
            return
        params: tuple[str | None, ...] | None
        try:
            params, types = execute_parameters(payload, prepared.params, prepared.types, prepared.long_data)
        except ProtocolViolation:
            params = None  # unreadable: the server will say so; the statement is journaled anyway
        else:
            if forwarded:  # the server's view: the types of the last execution it saw
                prepared.types = types
        if forwarded:
            prepared.long_data = None
        journal.statement(prepared.sql, prepared.decision if decision is None else decision,
                          parameters=params or None, forwarded=forwarded, approval_id=approval_id)
        if forwarded:
            journal.client_cycle_end()

    def _start_change_user(self, msg: m.ComChangeUser, out: list[MysqlSessionAction]) -> None:
        """COM_CHANGE_USER re-authenticates against dbguard's identities, never switching
        identity silently: the client is always switched to the listener's plugin with a fresh
        nonce (its first response was computed over the old one); on success the upstream
        session is reset (COM_RESET_CONNECTION, same service account) and the gate reopened
        for the new identity; on failure the connection closes, as MySQL's does."""
        self.gate = None
        self.identity = None
        self.statements.clear()
        self._user = msg.username.decode("utf-8", "replace")
        self._entry = self.settings.identities.get(self._user)
        self._change_user_db = msg.schema
        self._change_user_attrs = msg.connect_attrs
        self.phase = Phase.CLIENT_AUTH
        self._plugin = self.settings.default_auth_plugin
        self._nonce = auth.generate_nonce()
        self._auth_step = "switch"
        self._auth_rounds = 0
        self._send_client(m.AuthSwitchRequest(self._plugin, self._nonce + b"\x00").encode(), out)
        self._client.expect(self._client_seq)

    def _on_change_user_reply(self, resp: _Response, packet: Packet, out: list[MysqlSessionAction]) -> bool:
        """The upstream's answers to COM_CHANGE_USER's reset; True when the client has its OK."""
        payload = packet.payload
        if m.is_err(payload):
            self._close(out, "upstream reset after COM_CHANGE_USER failed", m.ErrPacket.decode(payload).encode())
            return True
        if not m.is_ok(payload):
            raise ProtocolViolation("unexpected answer to COM_RESET_CONNECTION / COM_INIT_DB")
        db = self._change_user_db or b""
        if resp.change_user == "reset" and db:
            resp.change_user = "init-db"
            out.append(SendUpstream(_frame(bytes((m.Command.INIT_DB,)) + db, 0)))
            self._upstream.expect(1)
            return False
        if db:
            self.database = db.decode("utf-8", "replace")
        self._change_user_db = None
        self.server_status = _lenenc_status(payload)
        if self.journal is not None:
            # Another identity from here on: the journal session ends and a new one starts.
            previous = self.session_id
            self.journal.ended(f"changed user to {self._user}")
            self.session_id = str(uuid.uuid4())
            self.journal.renew(self.session_id)
            log.info("session.journal_renewed", extra={"session": self.session_id, "previous": previous})
        self._open_gate()
        self._journal_started(self._change_user_attrs)
        self._send_client(m.OkPacket(status_flags=self.server_status).encode(self.capabilities), out)
        log.info("session.changed_user", extra={"session": self.session_id, "user": self._user})
        return True

    def _on_infile_data(self, packet: Packet, out: list[MysqlSessionAction]) -> None:
        """The client sends the file the server asked for; an empty packet ends it."""
        resp = self._response
        assert resp is not None
        assert resp.mode is _Mode.INFILE_UPLOAD
        self._forward(packet, out)
        if not packet.payload:
            resp.mode = _Mode.FIRST  # the server's OK/ERR (and maybe more results) follows
            self._client.expect(0)

    def _finish(self, out: list[MysqlSessionAction]) -> None:
        resp = self._response
        self._response = None
        self._client.expect(0)
        if resp is not None and resp.command == m.Command.QUIT:
            self._close(out, "client quit")

    def _drain_upstream(self, out: list[MysqlSessionAction]) -> None:
        relay: list[bytes] = []
        for packet in self._upstream.packets():
            resp = self._response
            if resp is None:
                if m.is_err(packet.payload):  # e.g. MySQL 8's idle-timeout ERR before it closes
                    self._close(out, "upstream error while idle", m.ErrPacket.decode(packet.payload).encode())
                    return
                raise ProtocolViolation("upstream packet with no command outstanding")
            if resp.change_user:
                done = self._on_change_user_reply(resp, packet, out)
            elif resp.state is not None:
                done = self._on_state_packet(resp.state, packet.payload, out)
            elif resp.catalog is not None:
                done = self._on_catalog_packet(resp.catalog, packet.payload)
            else:
                done = self._on_response_packet(resp, packet, out, relay)
            if done:
                self._finish_relay(relay, out)
                self._finish(out)
                if self.phase is Phase.CLOSED:
                    return
                if self._state_may_have_changed(resp):
                    self._start_state_sync(out)
                elif self._catalog_due(resp):
                    self._start_catalog(out)
                # The next client command may be waiting in the reader.
                self._drain_client_safely(out)
        self._finish_relay(relay, out)
        if self._response is not None and self._response.mode is _Mode.INFILE_UPLOAD:
            self._drain_client_safely(out)

    @staticmethod
    def _state_may_have_changed(resp: _Response) -> bool:
        """Whether the finished command may have changed sql_mode, the client character set or
        the current database in ways the gate cannot know for sure (see `mysql_state_sync`)."""
        if resp.state is not None or resp.catalog is not None:
            return False
        if resp.change_user or resp.command == m.Command.RESET_CONNECTION:
            return True
        return resp.decision is not None and resp.decision.barrier

    def _start_state_sync(self, out: list[MysqlSessionAction]) -> None:
        """Ask the server for the state the gate reads text with; the client's next command
        waits in the reader until the answer is in."""
        self._response = _Response(m.Command.QUERY, _Mode.SINGLE,
                                   state=StateReader(deprecate_eof=bool(self.capabilities & C.DEPRECATE_EOF)))
        out.append(SendUpstream(_frame(STATE_QUERY, 0)))
        self._upstream.expect(1)

    def _on_state_packet(self, reader: StateReader, payload: bytes, out: list[MysqlSessionAction]) -> bool:
        try:
            state = reader.feed(payload)
        except StateQueryFailed as exc:
            # Fail closed: without the server's sql_mode the gate could misread the next text.
            self._close(out, f"session state query failed: {exc}", self._err(
                ER_SERVER_SHUTDOWN, _S_PROTOCOL, "dbguard: could not read the session's sql_mode from the server"))
            return True
        if state is None:
            return False
        modes = state.sql_mode.upper().split(",")
        self._sql_mode = ("ANSI_QUOTES" in modes, "NO_BACKSLASH_ESCAPES" in modes)
        if self.gate is not None:
            self.gate.server_parameter("sql_mode", state.sql_mode)
            self.gate.server_parameter("character_set_client", state.character_set_client)
            self.gate.server_parameter("database", state.database)
        self.database = state.database
        return True

    def _drain_client_safely(self, out: list[MysqlSessionAction]) -> None:
        try:
            self._drain_client(out)
        except ProtocolViolation as exc:
            self._protocol_error(out, str(exc))

    @staticmethod
    def _finish_relay(relay: list[bytes], out: list[MysqlSessionAction]) -> None:
        if relay:
            out.append(SendClient(b"".join(relay)))
            relay.clear()

    def _on_response_packet(self, resp: _Response, packet: Packet, out: list[MysqlSessionAction],
                            relay: list[bytes]) -> bool:
        """Relay (or swallow) one response packet; True when the response is complete."""
        payload = packet.payload
        if resp.swallow:
            done = self._result_ends(resp, payload, m.Command.QUERY)
            if done:
                self._finish_relay(relay, out)
                self._send_client(self._err(ER_SPECIFIC_ACCESS_DENIED, "42000", _INFILE_REFUSED), out,
                                  seq=resp.refused_seq)
                if resp.journaled:
                    assert self.journal is not None
                    self.journal.error(str(ER_SPECIFIC_ACCESS_DENIED), _INFILE_REFUSED)
                    self.journal.server_cycle_end()
            return done
        if resp.mode is _Mode.FIRST and payload[:1] == bytes((m.LOCAL_INFILE_HEADER,)) and \
                resp.command == m.Command.QUERY:
            if resp.allowed_infile:
                relay.append(encode_packets(payload, packet.sequence_id)[0])
                resp.mode = _Mode.INFILE_UPLOAD
                self._client.expect(packet.next_sequence_id)
                return False
            # Refused: tell the server there is no file; the client gets an ERR instead.
            log.warning("session.local_infile_refused", extra={"session": self.session_id})
            data, _ = encode_packets(b"", packet.next_sequence_id)
            out.append(SendUpstream(data))
            self._upstream.expect((packet.next_sequence_id + 1) & 0xFF)
            resp.swallow = True
            resp.refused_seq = packet.sequence_id
            return False
        if resp.masking is None:
            relay.append(encode_packets(payload, packet.sequence_id)[0])
            self._client_seq = packet.next_sequence_id  # an error of ours would follow this packet
        else:
            payload = self._relay_masked(resp, resp.masking, packet, relay)
        if resp.mode is _Mode.INFILE_UPLOAD:
            raise ProtocolViolation("upstream data while the client sends a file")
        if not resp.journaled:
            return self._result_ends(resp, payload, m.Command(resp.command))
        mode = resp.mode
        done = self._result_ends(resp, payload, m.Command(resp.command))
        self._journal_response(resp, mode, payload, done)
        return done

    def _journal_response(self, resp: _Response, mode: _Mode, payload: bytes, done: bool) -> None:
        """The journal's view of one response packet (`mode`: where the response was before it)."""
        journal = self.journal
        assert journal is not None
        if m.is_err(payload):
            journal.error(*error_fields(payload))
        elif mode is _Mode.FIRST or mode is _Mode.SINGLE:
            if m.is_ok(payload):
                journal.result(ok_affected_rows(payload, 0))
        elif mode is _Mode.ROWS:
            if _is_terminator(payload):
                journal.result(resp.rows, masked=resp.masked)
                resp.rows = 0
                resp.masked = ()
            else:
                resp.rows += 1
        elif mode is _Mode.COLUMNS_EOF and done:
            journal.result(None)  # a cursor: its rows come later, by COM_STMT_FETCH
        if done:
            journal.server_cycle_end()

    # ------------------------------------------------------------------ masking

    def _masking(self, sql: bytes, decision: Decision, *, binary: bool,
                 plan: ResultPlan | None = None) -> ResponseMasking | None:
        """The masking of a response, when masks apply to the session (asked per command, so a
        reloaded policy applies from the next one on); None: relayed untouched."""
        directory = self.settings.masks
        if directory is None or not directory.active or self.info is None:
            return None
        masks = directory.for_session(self.info)
        if masks is None:
            return None
        return ResponseMasking(masks, self._catalog, sql=statement_text(sql), database=self.database or None,
                               binary=binary, sql_mode=self._sql_mode, tables=_StatementTables(decision.analysis),
                               plan=plan)

    def _relay_masked(self, resp: _Response, masking: ResponseMasking, packet: Packet, relay: list[bytes]) -> bytes:
        """Relay one packet of a masked response as the client may see it; returns that payload.
        A payload re-framed into another number of packets shifts the rest's sequence ids."""
        payload = self._masked_payload(resp, masking, packet.payload)
        data, next_seq = encode_packets(payload, (packet.sequence_id + masking.shift) & 0xFF)
        masking.shift = (next_seq - packet.next_sequence_id) & 0xFF
        relay.append(data)
        self._client_seq = next_seq
        return payload

    def _masked_payload(self, resp: _Response, masking: ResponseMasking, payload: bytes) -> bytes:
        mode = resp.mode
        if m.is_err(payload) and mode in (_Mode.FIRST, _Mode.ROWS):
            return masking.error(payload)
        if mode is _Mode.FIRST:
            if m.is_ok(payload):
                masking.ok()
            elif payload[:1] != bytes((m.LOCAL_INFILE_HEADER,)):
                masking.column_count(m.decode_column_count(payload))
        elif mode is _Mode.COLUMNS and resp.remaining > 0:
            masking.definition(payload, self.capabilities)
            if resp.executed is not None and masking.plan is not None:
                resp.executed.cursor_plan = masking.plan  # what a cursor's COM_STMT_FETCH returns
        elif mode is _Mode.ROWS:
            if not _is_terminator(payload):
                return masking.row(payload)
            resp.masked = masking.result_end()
        return payload

    def _catalog_due(self, resp: _Response) -> bool:
        """Whether to read the catalog now: masks with column masks apply and what the session
        knows is stale (never read, DDL or user code ran, an unknown table was met)."""
        directory = self.settings.masks
        if directory is None or not directory.active or self.info is None:
            return False
        if resp.catalog is not None:
            return self._catalog.stale  # a failed read is tried again at once (a few times)
        decision = resp.decision
        if decision is not None:
            for info in decision.analysis:
                if not _CATALOG_CHANGES.isdisjoint(info.kinds):
                    self._catalog.invalidate()
                    break
        if not self._catalog.stale:
            return False
        masks = directory.for_session(self.info)
        return masks is not None and masks.has_column_masks

    def _start_catalog(self, out: list[MysqlSessionAction]) -> None:
        """Read the tables and views (CATALOG_QUERY); the client's next command waits for it."""
        self._response = _Response(m.Command.QUERY, _Mode.SINGLE,
                                   catalog=CatalogReader(deprecate_eof=bool(self.capabilities & C.DEPRECATE_EOF)))
        out.append(SendUpstream(_frame(CATALOG_QUERY, 0)))
        self._upstream.expect(1)

    def _on_catalog_packet(self, reader: CatalogReader, payload: bytes) -> bool:
        try:
            entries = reader.feed(payload)
        except CatalogFailed as exc:
            # Every table stays unknown, so every masked column of the session applies to all.
            log.warning("session.catalog_failed", extra={"session": self.session_id, "error": str(exc)})
            self._catalog.failed()
            return True
        if entries is None:
            return False
        if reader.truncated:
            log.warning("session.catalog_failed", extra={"session": self.session_id, "error": "too many tables"})
            self._catalog.failed()
        else:
            self._catalog.replace(entries)
        return True

    def _result_ends(self, resp: _Response, payload: bytes, cmd: m.Command) -> bool:
        """Advance the response tracker over one packet; True when the command's response is over."""
        deprecate_eof = bool(self.capabilities & C.DEPRECATE_EOF)
        if not payload:
            raise ProtocolViolation("empty response packet")
        mode = resp.mode
        if m.is_err(payload):
            if mode is _Mode.PREPARE_DEFS or mode is _Mode.COLUMNS_EOF:
                raise ProtocolViolation("ERR inside a definitions block")
            return True
        if mode is _Mode.SINGLE:
            if cmd == m.Command.STMT_PREPARE and m.is_ok(payload):
                ok = m.StmtPrepareOk.decode(payload)
                assert resp.decision is not None
                self.statements[ok.statement_id] = PreparedStatement(resp.sql, resp.decision, ok.num_params)
                resp.remaining = ok.num_params + ok.num_columns
                resp.eofs = 0 if deprecate_eof else (ok.num_params > 0) + (ok.num_columns > 0)
                resp.mode = _Mode.PREPARE_DEFS
                return resp.remaining == 0
            if cmd == m.Command.INIT_DB and m.is_ok(payload) and resp.init_db is not None and self.gate:
                self.database = resp.init_db.decode("utf-8", "replace")
                self.gate.server_parameter("database", self.database)
            if cmd == m.Command.RESET_CONNECTION and m.is_ok(payload):
                self.statements.clear()
            return True
        if mode is _Mode.PREPARE_DEFS:
            if payload[:1] == b"\xfe":
                resp.eofs -= 1
            else:
                resp.remaining -= 1
            if resp.remaining < 0 or resp.eofs < 0:
                raise ProtocolViolation("too many definitions after COM_STMT_PREPARE_OK")
            return resp.remaining == 0 and resp.eofs == 0
        if mode is _Mode.FIRST:
            if m.is_ok(payload):
                return not self._more_results(_lenenc_status(payload))
            count = m.decode_column_count(payload)
            resp.remaining = count
            resp.mode = _Mode.COLUMNS
            return False
        if mode is _Mode.COLUMNS:
            if resp.remaining < 0:  # COM_FIELD_LIST: definitions until EOF / OK-0xFE
                return _is_terminator(payload)
            resp.remaining -= 1
            if resp.remaining == 0:
                resp.mode = _Mode.ROWS if deprecate_eof else _Mode.COLUMNS_EOF
            return False
        if mode is _Mode.COLUMNS_EOF:
            if not m.is_eof(payload):
                raise ProtocolViolation("missing EOF after the column definitions")
            status = _terminator_status(payload, deprecate_eof)
            resp.mode = _Mode.ROWS
            # COM_STMT_EXECUTE with a cursor: the rows come later through COM_STMT_FETCH.
            return bool(status & m.ServerStatus.CURSOR_EXISTS) and cmd == m.Command.STMT_EXECUTE
        if mode is _Mode.ROWS:
            if not _is_terminator(payload):
                return False
            status = _terminator_status(payload, deprecate_eof)
            if cmd == m.Command.STMT_FETCH or not self._more_results(status):
                return True
            resp.mode = _Mode.FIRST
            return False
        raise ProtocolViolation(f"unexpected response packet in {mode.value}")

    def _more_results(self, status: m.ServerStatus) -> bool:
        self.server_status = status
        return bool(status & m.ServerStatus.MORE_RESULTS_EXISTS)


def _process_kill_request(packet: Packet) -> KillRequest:
    """COM_PROCESS_KILL as the `KILL CONNECTION <id>` it means."""
    if len(packet.payload) != 5:
        raise ProtocolViolation("COM_PROCESS_KILL: the payload is not a 4-byte id")
    return KillRequest(b"CONNECTION", int.from_bytes(packet.payload[1:5], "little"))


def _frame(payload: bytes, seq: int) -> bytes:
    return encode_packets(payload, seq)[0]
