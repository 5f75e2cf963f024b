"""Typed MySQL/MariaDB protocol messages: strict decode from payloads, encode back to payloads.

Owns: the message catalogue of the connection phase (greeting, handshake response, SSLRequest,
auth switch / more data), the generic responses (OK, ERR, EOF, LOCAL INFILE request), the
commands (`decode_command`), prepared-statement messages, column definitions and resultset
rows in the text and binary protocols. Payloads come from `packets.PacketReader`; `encode()`
returns a payload for `packets.encode_packets` (the session owns sequence ids).
Must not touch: sockets, asyncio, sequence ids, the session's state (which packet is expected
when: a payload starting with 0xFE is an EOF, an OK, an auth switch or a row depending on the
state, so the caller picks the decoder), policy, logging.

Decoding is strict: a truncated field, a missing terminator or trailing bytes raise
`ProtocolViolation`, never IndexError or struct.error. Strings stay `bytes`: their encoding is
the connection's character set, which only the session knows.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Final

from dbguard.wire.mysql.packets import (
    NULL_MARKER,
    PayloadReader,
    ProtocolViolation,
    UnsupportedFeature,
    lenenc_bytes,
    lenenc_bytes_or_null,
    lenenc_int,
    nul_bytes,
    uint_bytes,
)


class Capability(IntFlag):
    """Capability flags (CLIENT_*). Bits 32-63 are MariaDB's extended capabilities, sent in the
    greeting's and the handshake response's filler when CLIENT_MYSQL (bit 0) is clear."""

    LONG_PASSWORD = 1 << 0  # MariaDB: CLIENT_MYSQL; a MariaDB server clears it
    FOUND_ROWS = 1 << 1
    LONG_FLAG = 1 << 2
    CONNECT_WITH_DB = 1 << 3
    NO_SCHEMA = 1 << 4
    COMPRESS = 1 << 5
    ODBC = 1 << 6
    LOCAL_FILES = 1 << 7
    IGNORE_SPACE = 1 << 8
    PROTOCOL_41 = 1 << 9
    INTERACTIVE = 1 << 10
    SSL = 1 << 11
    IGNORE_SIGPIPE = 1 << 12
    TRANSACTIONS = 1 << 13
    RESERVED = 1 << 14
    SECURE_CONNECTION = 1 << 15
    MULTI_STATEMENTS = 1 << 16
    MULTI_RESULTS = 1 << 17
    PS_MULTI_RESULTS = 1 << 18
    PLUGIN_AUTH = 1 << 19
    CONNECT_ATTRS = 1 << 20
    PLUGIN_AUTH_LENENC_CLIENT_DATA = 1 << 21
    CAN_HANDLE_EXPIRED_PASSWORDS = 1 << 22
    SESSION_TRACK = 1 << 23
    DEPRECATE_EOF = 1 << 24
    OPTIONAL_RESULTSET_METADATA = 1 << 25
    ZSTD_COMPRESSION = 1 << 26
    QUERY_ATTRIBUTES = 1 << 27
    MULTI_FACTOR_AUTH = 1 << 28
    CAPABILITY_EXTENSION = 1 << 29
    SSL_VERIFY_SERVER_CERT = 1 << 30
    REMEMBER_OPTIONS = 1 << 31
    MARIADB_PROGRESS = 1 << 32
    MARIADB_COM_MULTI = 1 << 33
    MARIADB_STMT_BULK_OPERATIONS = 1 << 34
    MARIADB_EXTENDED_TYPE_INFO = 1 << 35
    MARIADB_CACHE_METADATA = 1 << 36
    MARIADB_BULK_UNIT_RESULTS = 1 << 37


CLIENT_MYSQL: Final = Capability.LONG_PASSWORD
NO_CAPABILITIES: Final = Capability(0)
_LOW32: Final = 0xFFFF_FFFF


class ServerStatus(IntFlag):
    IN_TRANS = 0x0001
    AUTOCOMMIT = 0x0002
    MORE_RESULTS_EXISTS = 0x0008
    NO_GOOD_INDEX_USED = 0x0010
    NO_INDEX_USED = 0x0020
    CURSOR_EXISTS = 0x0040
    LAST_ROW_SENT = 0x0080
    DB_DROPPED = 0x0100
    NO_BACKSLASH_ESCAPES = 0x0200
    METADATA_CHANGED = 0x0400
    QUERY_WAS_SLOW = 0x0800
    PS_OUT_PARAMS = 0x1000
    IN_TRANS_READONLY = 0x2000
    SESSION_STATE_CHANGED = 0x4000


class Command(IntEnum):
    SLEEP = 0x00
    QUIT = 0x01
    INIT_DB = 0x02
    QUERY = 0x03
    FIELD_LIST = 0x04
    CREATE_DB = 0x05
    DROP_DB = 0x06
    REFRESH = 0x07
    SHUTDOWN = 0x08
    STATISTICS = 0x09
    PROCESS_INFO = 0x0A
    CONNECT = 0x0B
    PROCESS_KILL = 0x0C
    DEBUG = 0x0D
    PING = 0x0E
    TIME = 0x0F
    DELAYED_INSERT = 0x10
    CHANGE_USER = 0x11
    BINLOG_DUMP = 0x12
    TABLE_DUMP = 0x13
    CONNECT_OUT = 0x14
    REGISTER_SLAVE = 0x15
    STMT_PREPARE = 0x16
    STMT_EXECUTE = 0x17
    STMT_SEND_LONG_DATA = 0x18
    STMT_CLOSE = 0x19
    STMT_RESET = 0x1A
    SET_OPTION = 0x1B
    STMT_FETCH = 0x1C
    DAEMON = 0x1D
    BINLOG_DUMP_GTID = 0x1E
    RESET_CONNECTION = 0x1F
    CLONE = 0x20
    SUBSCRIBE_GROUP_REPLICATION_STREAM = 0x21
    MARIADB_STMT_BULK_EXECUTE = 0xFA
    MARIADB_MULTI = 0xFE


class ColumnType(IntEnum):
    DECIMAL = 0
    TINY = 1
    SHORT = 2
    LONG = 3
    FLOAT = 4
    DOUBLE = 5
    NULL = 6
    TIMESTAMP = 7
    LONGLONG = 8
    INT24 = 9
    DATE = 10
    TIME = 11
    DATETIME = 12
    YEAR = 13
    NEWDATE = 14
    VARCHAR = 15
    BIT = 16
    TIMESTAMP2 = 17
    DATETIME2 = 18
    TIME2 = 19
    TYPED_ARRAY = 20
    VECTOR = 242
    INVALID = 243
    BOOL = 244
    JSON = 245
    NEWDECIMAL = 246
    ENUM = 247
    SET = 248
    TINY_BLOB = 249
    MEDIUM_BLOB = 250
    LONG_BLOB = 251
    BLOB = 252
    VAR_STRING = 253
    STRING = 254
    GEOMETRY = 255


class ColumnFlag(IntFlag):
    NOT_NULL = 1
    PRI_KEY = 2
    UNIQUE_KEY = 4
    MULTIPLE_KEY = 8
    BLOB = 16
    UNSIGNED = 32
    ZEROFILL = 64
    BINARY = 128
    ENUM = 256
    AUTO_INCREMENT = 512
    TIMESTAMP = 1024
    SET = 2048
    NO_DEFAULT_VALUE = 4096
    ON_UPDATE_NOW = 8192
    NUM = 32768


OK_HEADER: Final = 0x00
EOF_HEADER: Final = 0xFE
ERR_HEADER: Final = 0xFF
LOCAL_INFILE_HEADER: Final = 0xFB
AUTH_MORE_DATA_HEADER: Final = 0x01
AUTH_SWITCH_HEADER: Final = 0xFE
_SSL_REQUEST_SIZE: Final = 32
_MAX_EOF_PAYLOAD: Final = 9  # an 0xFE-headed payload shorter than this is an EOF, not an OK/row


def _u16(v: int) -> bytes:
    return uint_bytes(v, 2)


def _u32(v: int) -> bytes:
    return uint_bytes(v, 4)


# --------------------------------------------------------------------------- connection phase


@dataclass(frozen=True, slots=True)
class HandshakeV10:
    """The server greeting. `auth_plugin_data` is the whole scramble as sent (part 1 + part 2,
    usually 20 bytes + a NUL); `nonce` is it without the trailing NUL."""

    server_version: bytes
    connection_id: int
    auth_plugin_data: bytes
    capabilities: Capability
    character_set: int
    status_flags: ServerStatus
    auth_plugin_name: bytes

    @property
    def nonce(self) -> bytes:
        d = self.auth_plugin_data
        return d[:-1] if d.endswith(b"\x00") else d

    @classmethod
    def decode(cls, payload: bytes) -> HandshakeV10:
        r = PayloadReader(payload, "HandshakeV10")
        if r.uint8() != 10:
            raise r.fail("only protocol version 10 is supported")
        version = r.nul_bytes()
        connection_id = r.uint32()
        part1 = r.raw(8)
        if r.uint8() != 0:
            raise r.fail("filler byte is not 0")
        caps = r.uint16()
        charset = r.uint8()
        status = r.uint16()
        caps |= r.uint16() << 16
        data_len = r.uint8()
        filler = r.raw(10)
        if not caps & CLIENT_MYSQL:
            caps |= int.from_bytes(filler[6:], "little") << 32
        if not caps & Capability.PROTOCOL_41 or not caps & Capability.SECURE_CONNECTION:
            raise UnsupportedFeature("HandshakeV10: servers without PROTOCOL_41 and SECURE_CONNECTION")
        part2 = r.raw(max(13, data_len - 8))
        plugin = r.nul_bytes_or_rest() if caps & Capability.PLUGIN_AUTH else b""
        r.end()
        return cls(version, connection_id, part1 + part2, Capability(caps), charset, ServerStatus(status), plugin)

    def encode(self) -> bytes:
        caps = int(self.capabilities)
        if not caps & Capability.PROTOCOL_41 or not caps & Capability.SECURE_CONNECTION:
            raise ValueError("PROTOCOL_41 and SECURE_CONNECTION are required")
        if len(self.auth_plugin_data) < 8 + 13 or len(self.auth_plugin_data) > 255:
            raise ValueError("auth_plugin_data must be 21..255 bytes (scramble + NUL)")
        if not caps & Capability.PLUGIN_AUTH and len(self.auth_plugin_data) != 8 + 13:
            raise ValueError("without PLUGIN_AUTH, auth_plugin_data is 21 bytes (scramble + NUL)")
        ext = _extended_caps(caps)
        plugin = nul_bytes(self.auth_plugin_name) if caps & Capability.PLUGIN_AUTH else b""
        return b"".join((
            b"\x0a", nul_bytes(self.server_version), _u32(self.connection_id), self.auth_plugin_data[:8], b"\x00",
            _u16(caps & 0xFFFF), bytes((self.character_set,)), _u16(self.status_flags),
            _u16(caps >> 16 & 0xFFFF),
            bytes((len(self.auth_plugin_data) if caps & Capability.PLUGIN_AUTH else 0,)),
            b"\x00" * 6, ext, self.auth_plugin_data[8:], plugin,
        ))


def _client_caps(r: PayloadReader) -> tuple[int, int, int]:
    caps = r.uint32()
    max_packet = r.uint32()
    charset = r.uint8()
    filler = r.raw(23)
    if not caps & CLIENT_MYSQL:
        caps |= int.from_bytes(filler[19:], "little") << 32
    return caps, max_packet, charset


def _extended_caps(caps: int) -> bytes:
    """The 4 filler bytes that carry MariaDB's extended capabilities when CLIENT_MYSQL is clear."""
    if caps & CLIENT_MYSQL:
        if caps >> 32:
            raise ValueError("MariaDB extended capabilities need CLIENT_MYSQL (LONG_PASSWORD) clear")
        return b"\x00" * 4
    return _u32(caps >> 32)


def _client_caps_bytes(caps: int, max_packet: int, charset: int) -> bytes:
    ext = _extended_caps(caps)
    return _u32(caps & _LOW32) + _u32(max_packet) + bytes((charset,)) + b"\x00" * 19 + ext


@dataclass(frozen=True, slots=True)
class SSLRequest:
    """The 32-byte truncated handshake response a client sends before the TLS handshake."""

    capabilities: Capability
    max_packet_size: int
    character_set: int

    def encode(self) -> bytes:
        return _client_caps_bytes(int(self.capabilities | Capability.SSL), self.max_packet_size, self.character_set)


def _decode_attrs(r: PayloadReader) -> tuple[tuple[bytes, bytes], ...]:
    blob = r.lenenc_bytes()
    ar = PayloadReader(blob, "connection attributes")
    attrs = []
    while ar.remaining():
        attrs.append((ar.lenenc_bytes(), ar.lenenc_bytes()))
    return tuple(attrs)


def _encode_attrs(attrs: Sequence[tuple[bytes, bytes]]) -> bytes:
    return lenenc_bytes(b"".join(lenenc_bytes(k) + lenenc_bytes(v) for k, v in attrs))


@dataclass(frozen=True, slots=True)
class HandshakeResponse41:
    """The client's login. The auth response's encoding follows the capabilities: lenenc with
    PLUGIN_AUTH_LENENC_CLIENT_DATA, 1-byte length with SECURE_CONNECTION, else NUL-terminated."""

    capabilities: Capability
    max_packet_size: int
    character_set: int
    username: bytes
    auth_response: bytes = field(repr=False)
    database: bytes | None = None
    auth_plugin_name: bytes | None = None
    connect_attrs: tuple[tuple[bytes, bytes], ...] = ()
    zstd_level: int | None = None

    @classmethod
    def decode(cls, payload: bytes) -> HandshakeResponse41:
        r = PayloadReader(payload, "HandshakeResponse41")
        caps, max_packet, charset = _client_caps(r)
        if not caps & Capability.PROTOCOL_41:
            raise UnsupportedFeature("HandshakeResponse41: clients without PROTOCOL_41")
        user = r.nul_bytes()
        if caps & Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA:
            auth = r.lenenc_bytes()
        elif caps & Capability.SECURE_CONNECTION:
            auth = r.raw(r.uint8())
        else:
            auth = r.nul_bytes()
        database = r.nul_bytes() if caps & Capability.CONNECT_WITH_DB else None
        plugin = None
        if caps & Capability.PLUGIN_AUTH and r.remaining():
            plugin = r.nul_bytes_or_rest()
        attrs: tuple[tuple[bytes, bytes], ...] = ()
        if caps & Capability.CONNECT_ATTRS and r.remaining():
            attrs = _decode_attrs(r)
        zstd = r.uint8() if caps & Capability.ZSTD_COMPRESSION and r.remaining() else None
        r.end()
        return cls(Capability(caps), max_packet, charset, user, auth, database, plugin, attrs, zstd)

    def encode(self) -> bytes:
        caps = int(self.capabilities)
        if not caps & Capability.PROTOCOL_41:
            raise ValueError("PROTOCOL_41 is required")
        parts = [_client_caps_bytes(caps, self.max_packet_size, self.character_set), nul_bytes(self.username)]
        if caps & Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA:
            parts.append(lenenc_bytes(self.auth_response))
        elif caps & Capability.SECURE_CONNECTION:
            parts.append(bytes((len(self.auth_response),)) + self.auth_response)
        else:
            parts.append(nul_bytes(self.auth_response))
        if caps & Capability.CONNECT_WITH_DB:
            parts.append(nul_bytes(self.database or b""))
        elif self.database is not None:
            raise ValueError("a database needs CONNECT_WITH_DB")
        if caps & Capability.PLUGIN_AUTH and self.auth_plugin_name is not None:
            parts.append(nul_bytes(self.auth_plugin_name))
        elif self.auth_plugin_name is not None:
            raise ValueError("a plugin name needs PLUGIN_AUTH")
        elif caps & Capability.PLUGIN_AUTH and (caps & Capability.CONNECT_ATTRS or self.zstd_level is not None):
            raise ValueError("with PLUGIN_AUTH, a plugin name must precede connect attributes / zstd level")
        if caps & Capability.CONNECT_ATTRS:
            parts.append(_encode_attrs(self.connect_attrs))
        elif self.connect_attrs:
            raise ValueError("connect attributes need CONNECT_ATTRS")
        if self.zstd_level is not None:
            if not caps & Capability.ZSTD_COMPRESSION:
                raise ValueError("a zstd level needs ZSTD_COMPRESSION")
            parts.append(bytes((self.zstd_level,)))
        return b"".join(parts)


def decode_client_handshake(payload: bytes) -> SSLRequest | HandshakeResponse41:
    """The client's first packet: an SSLRequest (32 bytes, SSL flag set) or a full response."""
    if len(payload) == _SSL_REQUEST_SIZE:
        r = PayloadReader(payload, "SSLRequest")
        caps, max_packet, charset = _client_caps(r)
        if not caps & Capability.SSL:
            raise r.fail("32-byte handshake response without the SSL flag")
        return SSLRequest(Capability(caps), max_packet, charset)
    return HandshakeResponse41.decode(payload)


@dataclass(frozen=True, slots=True)
class AuthSwitchRequest:
    """0xFE + plugin name + plugin data (for native/caching_sha2: 20-byte nonce + NUL)."""

    plugin_name: bytes
    plugin_data: bytes

    @classmethod
    def decode(cls, payload: bytes) -> AuthSwitchRequest:
        r = PayloadReader(payload, "AuthSwitchRequest")
        if r.uint8() != AUTH_SWITCH_HEADER:
            raise r.fail("header is not 0xFE")
        if not r.remaining():
            raise UnsupportedFeature("AuthSwitchRequest: the pre-4.1 old-password switch")
        return cls(r.nul_bytes(), r.rest())

    def encode(self) -> bytes:
        return b"\xfe" + nul_bytes(self.plugin_name) + self.plugin_data


@dataclass(frozen=True, slots=True)
class AuthMoreData:
    """0x01 + data: caching_sha2's 0x03 (fast auth ok) / 0x04 (full auth), a public key PEM..."""

    data: bytes

    @classmethod
    def decode(cls, payload: bytes) -> AuthMoreData:
        r = PayloadReader(payload, "AuthMoreData")
        if r.uint8() != AUTH_MORE_DATA_HEADER:
            raise r.fail("header is not 0x01")
        return cls(r.rest())

    def encode(self) -> bytes:
        return b"\x01" + self.data


@dataclass(frozen=True, slots=True)
class AuthSwitchResponse:
    """The client's reply in an auth exchange: the plugin's raw data, the whole payload."""

    data: bytes = field(repr=False)

    @classmethod
    def decode(cls, payload: bytes) -> AuthSwitchResponse:
        return cls(payload)

    def encode(self) -> bytes:
        return self.data


# --------------------------------------------------------------------------- generic responses


@dataclass(frozen=True, slots=True)
class OkPacket:
    """OK (header 0x00, or 0xFE where it replaces EOF under DEPRECATE_EOF).

    With SESSION_TRACK, `info` is a lenenc string (absent when empty) followed, if the status
    has SESSION_STATE_CHANGED, by the raw session-state-change block; without it `info` runs to
    the end of the payload. Requires PROTOCOL_41 (no pre-4.1 format)."""

    affected_rows: int = 0
    last_insert_id: int = 0
    status_flags: ServerStatus = ServerStatus.AUTOCOMMIT
    warnings: int = 0
    info: bytes = b""
    session_state_changes: bytes | None = None
    header: int = OK_HEADER

    @classmethod
    def decode(cls, payload: bytes, capabilities: Capability) -> OkPacket:
        r = PayloadReader(payload, "OK packet")
        header = r.uint8()
        if header not in (OK_HEADER, EOF_HEADER):
            raise r.fail(f"header 0x{header:02x} is not 0x00 or 0xFE")
        if header == EOF_HEADER and len(payload) < 7:
            raise r.fail("too short for an 0xFE-headed OK (is it an EOF?)")
        affected = r.lenenc_int()
        insert_id = r.lenenc_int()
        status = r.uint16()
        warnings = r.uint16()
        changes = None
        if capabilities & Capability.SESSION_TRACK:
            info = r.lenenc_bytes() if r.remaining() else b""
            if status & ServerStatus.SESSION_STATE_CHANGED:
                changes = r.lenenc_bytes()
        else:
            info = r.rest()
        r.end()
        return cls(affected, insert_id, ServerStatus(status), warnings, info, changes, header)

    def encode(self, capabilities: Capability) -> bytes:
        if self.header not in (OK_HEADER, EOF_HEADER):
            raise ValueError("an OK header is 0x00 or 0xFE")
        parts = [bytes((self.header,)), lenenc_int(self.affected_rows), lenenc_int(self.last_insert_id),
                 _u16(self.status_flags), _u16(self.warnings)]
        if capabilities & Capability.SESSION_TRACK:
            changed = bool(self.status_flags & ServerStatus.SESSION_STATE_CHANGED)
            if changed != (self.session_state_changes is not None):
                raise ValueError("session_state_changes goes with SESSION_STATE_CHANGED")
            if self.info or changed:
                parts.append(lenenc_bytes(self.info))
            if self.session_state_changes is not None:
                parts.append(lenenc_bytes(self.session_state_changes))
        elif self.session_state_changes is not None:
            raise ValueError("session state changes need SESSION_TRACK")
        else:
            parts.append(self.info)
        return b"".join(parts)


@dataclass(frozen=True, slots=True)
class ErrPacket:
    """ERR: 0xFF, errno, optional '#' + 5-character SQLSTATE, message. An ERR sent before the
    capabilities are known (e.g. "too many connections" instead of a greeting) has no SQLSTATE."""

    errno: int
    sqlstate: bytes | None
    message: bytes

    @classmethod
    def decode(cls, payload: bytes) -> ErrPacket:
        r = PayloadReader(payload, "ERR packet")
        if r.uint8() != ERR_HEADER:
            raise r.fail("header is not 0xFF")
        errno = r.uint16()
        if errno == 0xFFFF:
            raise UnsupportedFeature("ERR packet: MariaDB progress report (MARIADB_PROGRESS is not supported)")
        sqlstate = None
        if r.remaining() and r.peek() == ord("#"):
            r.uint8()
            sqlstate = r.raw(5)
        return cls(errno, sqlstate, r.rest())

    def encode(self) -> bytes:
        state = b""
        if self.sqlstate is not None:
            if len(self.sqlstate) != 5:
                raise ValueError("an SQLSTATE is 5 characters")
            state = b"#" + self.sqlstate
        return b"\xff" + _u16(self.errno) + state + self.message


def err(errno: int, sqlstate: str, message: str) -> ErrPacket:
    """Build an ERR packet (message in UTF-8; the session must send it in the connection charset)."""
    state = sqlstate.encode("ascii")
    if len(state) != 5:
        raise ValueError("an SQLSTATE is 5 characters")
    return ErrPacket(errno, state, message.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class EofPacket:
    warnings: int = 0
    status_flags: ServerStatus = ServerStatus.AUTOCOMMIT

    @classmethod
    def decode(cls, payload: bytes) -> EofPacket:
        r = PayloadReader(payload, "EOF packet")
        if r.uint8() != EOF_HEADER:
            raise r.fail("header is not 0xFE")
        warnings = r.uint16()
        status = r.uint16()
        r.end()
        return cls(warnings, ServerStatus(status))

    def encode(self) -> bytes:
        return b"\xfe" + _u16(self.warnings) + _u16(self.status_flags)


def is_ok(payload: bytes) -> bool:
    return payload[:1] == b"\x00"


def is_err(payload: bytes) -> bool:
    return payload[:1] == b"\xff"


def is_eof(payload: bytes) -> bool:
    """An EOF packet (0xFE, shorter than 9 bytes): a row or an 0xFE OK is never that short."""
    return payload[:1] == b"\xfe" and len(payload) < _MAX_EOF_PAYLOAD


@dataclass(frozen=True, slots=True)
class LocalInfileRequest:
    """0xFB + file name: the server asks the client to send a local file (LOAD DATA LOCAL)."""

    filename: bytes

    @classmethod
    def decode(cls, payload: bytes) -> LocalInfileRequest:
        r = PayloadReader(payload, "LOCAL INFILE request")
        if r.uint8() != LOCAL_INFILE_HEADER:
            raise r.fail("header is not 0xFB")
        return cls(r.rest())

    def encode(self) -> bytes:
        return b"\xfb" + self.filename


def decode_column_count(payload: bytes) -> int:
    """The first packet of a resultset: a lenenc column count (no OPTIONAL_RESULTSET_METADATA)."""
    r = PayloadReader(payload, "column count")
    count = r.lenenc_int()
    r.end()
    if count == 0:
        raise r.fail("a resultset has at least one column")
    return count


def encode_column_count(count: int) -> bytes:
    return lenenc_int(count)


@dataclass(frozen=True, slots=True)
class ColumnDefinition41:
    catalog: bytes
    schema: bytes
    table: bytes
    org_table: bytes
    name: bytes
    org_name: bytes
    character_set: int
    column_length: int
    type: int
    flags: ColumnFlag
    decimals: int
    extended_metadata: bytes | None = None  # MariaDB, with MARIADB_EXTENDED_TYPE_INFO
    default_value: bytes | None = None  # only in COM_FIELD_LIST responses

    @property
    def unsigned(self) -> bool:
        return bool(self.flags & ColumnFlag.UNSIGNED)

    @classmethod
    def decode(cls, payload: bytes, capabilities: Capability = NO_CAPABILITIES) -> ColumnDefinition41:
        r = PayloadReader(payload, "ColumnDefinition41")
        catalog, schema, table, org_table, name, org_name = (r.lenenc_bytes() for _ in range(6))
        ext = r.lenenc_bytes() if capabilities & Capability.MARIADB_EXTENDED_TYPE_INFO else None
        if r.lenenc_int() != 0x0C:
            raise r.fail("length of the fixed fields is not 12")
        charset = r.uint16()
        length = r.uint32()
        col_type = r.uint8()
        flags = r.uint16()
        decimals = r.uint8()
        r.raw(2)
        default = r.lenenc_bytes() if r.remaining() else None
        r.end()
        return cls(catalog, schema, table, org_table, name, org_name, charset, length, col_type,
                   ColumnFlag(flags), decimals, ext, default)

    def encode(self, capabilities: Capability = NO_CAPABILITIES) -> bytes:
        parts = [lenenc_bytes(n) for n in (self.catalog, self.schema, self.table, self.org_table,
                                           self.name, self.org_name)]
        if capabilities & Capability.MARIADB_EXTENDED_TYPE_INFO:
            parts.append(lenenc_bytes(self.extended_metadata or b""))
        elif self.extended_metadata is not None:
            raise ValueError("extended metadata needs MARIADB_EXTENDED_TYPE_INFO")
        parts += [b"\x0c", _u16(self.character_set), _u32(self.column_length), bytes((self.type,)),
                  _u16(self.flags), bytes((self.decimals,)), b"\x00\x00"]
        if self.default_value is not None:
            parts.append(lenenc_bytes(self.default_value))
        return b"".join(parts)


# --------------------------------------------------------------------------- resultset rows

Row = list[bytes | None]


def decode_text_row(payload: bytes, column_count: int) -> Row:
    """A text-protocol row: one lenenc string or 0xFB (NULL) per column.

    Values shorter than 251 bytes are read inline (the rows a proxy sees most); any other
    prefix, and anything malformed, is read by the strict reader, which names the problem."""
    values: Row = []
    pos = 0
    size = len(payload)
    for _ in range(column_count):
        if pos >= size:
            break
        first = payload[pos]
        if first < 0xFB:
            end = pos + 1 + first
            values.append(payload[pos + 1 : end])
            pos = end
        elif first == NULL_MARKER:
            values.append(None)
            pos += 1
        else:
            break
    else:
        if pos == size:
            return values
    return _decode_text_row_strictly(payload, column_count)


def _decode_text_row_strictly(payload: bytes, column_count: int) -> Row:
    r = PayloadReader(payload, "text row")
    values = [r.lenenc_bytes_or_null() for _ in range(column_count)]
    r.end()
    return values


def encode_text_row(values: Sequence[bytes | None]) -> bytes:
    return b"".join(lenenc_bytes_or_null(v) for v in values)


_FIXED_SIZES: Final[dict[int, int]] = {
    ColumnType.TINY: 1, ColumnType.SHORT: 2, ColumnType.YEAR: 2, ColumnType.LONG: 4, ColumnType.INT24: 4,
    ColumnType.FLOAT: 4, ColumnType.LONGLONG: 8, ColumnType.DOUBLE: 8, ColumnType.NULL: 0,
}
_DATE_TYPES: Final = frozenset({ColumnType.DATE, ColumnType.DATETIME, ColumnType.TIMESTAMP, ColumnType.NEWDATE})
# Temporal values: a length byte, but one of a few fixed layouts (never a plain string).
_TEMPORAL_TYPES: Final = _DATE_TYPES | {ColumnType.TIME}
_DATE_LENGTHS: Final = frozenset({0, 4, 7, 11})
_TIME_LENGTHS: Final = frozenset({0, 8, 12})


def _read_binary_value(r: PayloadReader, column_type: int) -> bytes:
    """One binary-protocol value's raw bytes (without any length prefix)."""
    size = _FIXED_SIZES.get(column_type)
    if size is not None:
        return r.raw(size)
    if column_type in _DATE_TYPES:
        n = r.uint8()
        if n not in _DATE_LENGTHS:
            raise r.fail(f"date/time value of length {n}")
        return r.raw(n)
    if column_type == ColumnType.TIME:
        n = r.uint8()
        if n not in _TIME_LENGTHS:
            raise r.fail(f"TIME value of length {n}")
        return r.raw(n)
    return r.lenenc_bytes()


def _binary_value_bytes(column_type: int, value: bytes) -> bytes:
    size = _FIXED_SIZES.get(column_type)
    if size is not None:
        if len(value) != size:
            raise ValueError(f"a value of type {column_type} is {size} bytes")
        return value
    if column_type in _DATE_TYPES or column_type == ColumnType.TIME:
        allowed = _TIME_LENGTHS if column_type == ColumnType.TIME else _DATE_LENGTHS
        if len(value) not in allowed:
            raise ValueError(f"a value of type {column_type} is one of {sorted(allowed)} bytes")
        return bytes((len(value),)) + value
    return lenenc_bytes(value)


def null_bitmap(values: Sequence[object | None], offset: int) -> bytes:
    bitmap = bytearray((len(values) + 7 + offset) // 8)
    for i, v in enumerate(values):
        if v is None:
            bit = i + offset
            bitmap[bit >> 3] |= 1 << (bit & 7)
    return bytes(bitmap)


def _is_null(bitmap: bytes, i: int, offset: int) -> bool:
    bit = i + offset
    return bool(bitmap[bit >> 3] >> (bit & 7) & 1)


def decode_binary_row(payload: bytes, column_types: Sequence[int]) -> Row:
    """A binary-protocol row (COM_STMT_EXECUTE results): 0x00, NULL bitmap with offset 2, values.

    Values are the raw bytes of each column without their length prefix (fixed-width ints and
    floats little-endian; temporal values in their variable-length form; the rest as strings).
    Fixed-width values and strings shorter than 251 bytes are read inline; anything else, and
    anything malformed, by the strict reader, which names the problem."""
    pos = 1 + (len(column_types) + 9) // 8
    if len(payload) >= pos and payload[0] == 0x00:
        found = _binary_values_inline(payload, column_types, 1, 2, pos)
        if found is not None and found[1] == len(payload):
            return found[0]
    return _decode_binary_row_strictly(payload, column_types)


def _binary_values_inline(payload: bytes, types: Sequence[int], bitmap_at: int, bit_offset: int,
                          pos: int) -> tuple[Row, int] | None:
    """Binary-protocol values of `types` from `pos` (their NULL bitmap at `bitmap_at`, its first
    `bit_offset` bits unused), read in place: (values, the position after them), or None when
    one is neither fixed-width nor a string shorter than 251 bytes. A value cut short shows as
    a position past the end: the caller then reads the payload with the strict reader."""
    values: Row = []
    size = len(payload)
    fixed_sizes = _FIXED_SIZES
    for i, column_type in enumerate(types):
        bit = i + bit_offset
        if payload[bitmap_at + (bit >> 3)] >> (bit & 7) & 1:
            values.append(None)
            continue
        fixed = fixed_sizes.get(column_type)
        if fixed is not None:
            end = pos + fixed
        elif pos < size and payload[pos] < 0xFB and column_type not in _TEMPORAL_TYPES:
            end = pos + 1 + payload[pos]
            pos += 1
        else:
            return None
        values.append(payload[pos:end])
        pos = end
    return values, pos


def lone_string_values(payloads: Sequence[bytes], column_type: int, binary: bool) -> list[bytes] | None:
    """The non-NULL values of rows of a one-column result (binary or text protocol) whose
    column is neither fixed-width nor temporal, read in place: what `decode_binary_row` /
    `decode_text_row` give for each row's one value, NULLs left out. None as soon as a row is
    anything but NULL or a string shorter than 251 bytes (the row readers take those: they
    read or name the rest). For masking's batch pre-check, which runs on every row of a
    result (tests/unit/test_mysql_messages.py compares it with the row readers)."""
    if column_type in _FIXED_SIZES or column_type in _TEMPORAL_TYPES:  # (as `_binary_values_inline`)
        return None
    values: list[bytes] = []
    append = values.append
    if binary:  # 0x00, a NULL bitmap of one byte (the column's bit is 0x04), the value
        for payload in payloads:
            size = len(payload)
            if size < 2 or payload[0] != 0:
                return None
            if payload[1] & 0x04:
                if size != 2:
                    return None
                continue
            if size < 3 or payload[2] >= 0xFB or size != 3 + payload[2]:
                return None
            append(payload[3:])
    else:  # a lenenc string, or 0xFB for NULL
        for payload in payloads:
            size = len(payload)
            if size == 0:
                return None
            first = payload[0]
            if first == NULL_MARKER and size == 1:
                continue
            if first >= 0xFB or size != 1 + first:
                return None
            append(payload[1:])
    return values


def execute_values_inline(payload: bytes, param_count: int, previous_types: Sequence[tuple[int, bool]] | None,
                          ) -> tuple[Row, tuple[tuple[int, bool], ...]] | None:
    """A COM_STMT_EXECUTE's parameter values (raw, as `ComStmtExecute.decode` gives them; no
    query attributes) and the types they were bound with, read in place when every value is
    fixed-width, NULL or a string shorter than 251 bytes; None for any other payload, which
    `ComStmtExecute.decode` reads (or says what is wrong with it). For the journal, which
    renders every execution's parameters (tests/unit/test_mysql_journal.py compares the two)."""
    bound_at = 10 + (param_count + 7) // 8  # command, statement id, flags, iteration count, NULL bitmap
    if len(payload) <= bound_at or payload[0] != Command.STMT_EXECUTE:
        return None
    pos = bound_at + 1
    if payload[bound_at] == 1:
        if pos + 2 * param_count > len(payload):
            return None
        end = pos + 2 * param_count
        column_types: Sequence[int] = payload[pos:end:2]  # (bytes: a sequence of ints)
        types = tuple([(payload[at], payload[at + 1] & 0x80 != 0) for at in range(pos, end, 2)])
        pos = end
    elif payload[bound_at] == 0 and previous_types is not None and len(previous_types) == param_count:
        types = tuple(previous_types)
        column_types = [column_type for column_type, _ in types]
    else:
        return None
    found = _binary_values_inline(payload, column_types, 10, 0, pos)
    if found is None or found[1] != len(payload):
        return None
    return found[0], types


def _decode_binary_row_strictly(payload: bytes, column_types: Sequence[int]) -> Row:
    r = PayloadReader(payload, "binary row")
    if r.uint8() != 0x00:
        raise r.fail("header is not 0x00")
    n = len(column_types)
    bitmap = r.raw((n + 9) // 8)
    values: Row = [None if _is_null(bitmap, i, 2) else _read_binary_value(r, t) for i, t in enumerate(column_types)]
    r.end()
    return values


def encode_binary_row(values: Sequence[bytes | None], column_types: Sequence[int]) -> bytes:
    if len(values) != len(column_types):
        raise ValueError("one value per column")
    body = b"".join(_binary_value_bytes(t, v) for v, t in zip(values, column_types, strict=True) if v is not None)
    return b"\x00" + null_bitmap(values, 2) + body


BinaryValue = int | float | bytes | datetime.date | datetime.datetime | datetime.timedelta


def binary_value_to_python(column_type: int, raw: bytes, unsigned: bool = False) -> BinaryValue:
    """Interpret a raw binary-protocol value (as returned by `decode_binary_row`, whose lengths
    are already checked). Dates Python cannot represent (zero dates 0000-00-00, month or day 0,
    which MySQL allows) raise ValueError: keep the raw bytes for those. Strings, decimals, BIT,
    JSON... come back as bytes."""
    if column_type in (ColumnType.TINY, ColumnType.SHORT, ColumnType.YEAR, ColumnType.LONG, ColumnType.INT24,
                       ColumnType.LONGLONG):
        return int.from_bytes(raw, "little", signed=not unsigned and column_type != ColumnType.YEAR)
    if column_type == ColumnType.FLOAT:
        return float(struct.unpack("<f", raw)[0])
    if column_type == ColumnType.DOUBLE:
        return float(struct.unpack("<d", raw)[0])
    if column_type in _DATE_TYPES:
        if not raw:
            raise ValueError("zero date")
        year, month, day = int.from_bytes(raw[0:2], "little"), raw[2], raw[3]
        if column_type in (ColumnType.DATE, ColumnType.NEWDATE):
            return datetime.date(year, month, day)
        h, m, s = (raw[4], raw[5], raw[6]) if len(raw) >= 7 else (0, 0, 0)
        us = int.from_bytes(raw[7:11], "little") if len(raw) == 11 else 0
        return datetime.datetime(year, month, day, h, m, s, us)
    if column_type == ColumnType.TIME:
        if not raw:
            return datetime.timedelta(0)
        negative = raw[0] == 1
        days = int.from_bytes(raw[1:5], "little")
        us = int.from_bytes(raw[8:12], "little") if len(raw) == 12 else 0
        delta = datetime.timedelta(days=days, hours=raw[5], minutes=raw[6], seconds=raw[7], microseconds=us)
        return -delta if negative else delta
    return raw


def python_to_binary_value(column_type: int, value: BinaryValue, unsigned: bool = False) -> bytes:
    """The raw binary-protocol bytes of a value (inverse of `binary_value_to_python`), for a
    type-valid replacement in a rebuilt row."""
    size = _FIXED_SIZES.get(column_type)
    if column_type in (ColumnType.FLOAT, ColumnType.DOUBLE):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise TypeError("a float column needs a number")
        return struct.pack("<f" if column_type == ColumnType.FLOAT else "<d", float(value))
    if size:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError("an integer column needs an int")
        signed = not unsigned and column_type != ColumnType.YEAR
        return value.to_bytes(size, "little", signed=signed)
    if column_type in _DATE_TYPES:
        if not isinstance(value, datetime.date):
            raise TypeError("a date column needs a date or datetime")
        # The shortest form, as servers send it: 4 bytes at midnight, 7 without microseconds.
        out = _u16(value.year) + bytes((value.month, value.day))
        if isinstance(value, datetime.datetime) and column_type not in (ColumnType.DATE, ColumnType.NEWDATE):
            if value.hour or value.minute or value.second or value.microsecond:
                out += bytes((value.hour, value.minute, value.second))
            if value.microsecond:
                out += _u32(value.microsecond)
        return out
    if column_type == ColumnType.TIME:
        if not isinstance(value, datetime.timedelta):
            raise TypeError("a TIME column needs a timedelta")
        if not value:
            return b""
        negative = value < datetime.timedelta(0)
        v = -value if negative else value
        secs = v.seconds
        out = bytes((negative,)) + _u32(v.days) + bytes((secs // 3600, secs // 60 % 60, secs % 60))
        if v.microseconds:
            out += _u32(v.microseconds)
        return out
    if not isinstance(value, bytes):
        raise TypeError("a string-like column needs bytes")
    return value


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class QueryAttribute:
    """One bound parameter (COM_STMT_EXECUTE) or query attribute (COM_QUERY). `value` is the
    raw binary-protocol value, None for NULL; `long_data` marks a parameter whose value was sent
    before by COM_STMT_SEND_LONG_DATA and is therefore absent here (value None, not NULL)."""

    type: int
    unsigned: bool
    name: bytes
    value: bytes | None
    long_data: bool = False


@dataclass(frozen=True, slots=True)
class ComQuery:
    query: bytes
    attributes: tuple[QueryAttribute, ...] = ()
    command = Command.QUERY

    def encode(self, capabilities: Capability = NO_CAPABILITIES) -> bytes:
        if not capabilities & Capability.QUERY_ATTRIBUTES:
            if self.attributes:
                raise ValueError("query attributes need QUERY_ATTRIBUTES")
            return b"\x03" + self.query
        return b"\x03" + _encode_params(self.attributes, with_count=True, with_names=True) + self.query


def _decode_params(r: PayloadReader, count: int, types: Sequence[tuple[int, bool]] | None,
                   with_names: bool, long_data: Collection[int] = ()) -> tuple[tuple[QueryAttribute, ...], bool]:
    """NULL bitmap, new-params-bound flag, [types (+names)], values. Returns (params, bound)."""
    if count == 0:
        return (), False
    bitmap = r.raw((count + 7) // 8)
    bound = r.uint8()
    if bound not in (0, 1):
        raise r.fail(f"new-params-bound flag {bound}")
    names = [b""] * count
    if bound:
        parsed = []
        for i in range(count):
            t, flag = r.uint8(), r.uint8()
            parsed.append((t, bool(flag & 0x80)))
            if with_names:
                names[i] = r.lenenc_bytes()
        types = parsed
    elif types is None:
        raise r.fail("parameter types not bound and none known from a previous execution")
    elif len(types) != count:
        raise r.fail("previous parameter types do not match the parameter count")
    params = []
    for i, (t, u) in enumerate(types):
        if _is_null(bitmap, i, 0):
            params.append(QueryAttribute(t, u, names[i], None))
        elif i in long_data:
            params.append(QueryAttribute(t, u, names[i], None, long_data=True))
        else:
            params.append(QueryAttribute(t, u, names[i], _read_binary_value(r, t)))
    return tuple(params), bool(bound)


def _encode_params(params: Sequence[QueryAttribute], *, with_count: bool, with_names: bool,
                   bind_types: bool = True) -> bytes:
    parts = [lenenc_int(len(params)) + b"\x01"] if with_count else []
    if params:
        parts.append(null_bitmap([b"" if p.long_data else p.value for p in params], 0))
        parts.append(b"\x01" if bind_types else b"\x00")
        if bind_types:
            for p in params:
                parts.append(bytes((p.type, 0x80 if p.unsigned else 0)))
                if with_names:
                    parts.append(lenenc_bytes(p.name))
        parts += [_binary_value_bytes(p.type, p.value) for p in params if p.value is not None and not p.long_data]
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class ComInitDb:
    schema: bytes
    command = Command.INIT_DB

    def encode(self) -> bytes:
        return b"\x02" + self.schema


@dataclass(frozen=True, slots=True)
class ComFieldList:
    table: bytes
    wildcard: bytes
    command = Command.FIELD_LIST

    def encode(self) -> bytes:
        return b"\x04" + nul_bytes(self.table) + self.wildcard


@dataclass(frozen=True, slots=True)
class ComSimple:
    """A command with no arguments: QUIT, PING, STATISTICS, RESET_CONNECTION, ... ."""

    command: Command

    def encode(self) -> bytes:
        return bytes((self.command,))


@dataclass(frozen=True, slots=True)
class ComStmtPrepare:
    query: bytes
    command = Command.STMT_PREPARE

    def encode(self) -> bytes:
        return b"\x16" + self.query


@dataclass(frozen=True, slots=True)
class ComStmtExecute:
    """COM_STMT_EXECUTE. `parameters` carry type, unsigned flag, name (query attributes only)
    and the raw value bytes (None for NULL). `new_params_bound` False means the types were
    taken from the previous execution of the statement (the caller passes them to decode).
    Parameters sent by COM_STMT_SEND_LONG_DATA since the last execute/reset have no value here:
    the caller passes their indices as `long_data` (the server tracks the same state)."""

    statement_id: int
    flags: int
    iteration_count: int = 1
    parameters: tuple[QueryAttribute, ...] = ()
    new_params_bound: bool = True
    command = Command.STMT_EXECUTE

    PARAMETER_COUNT_AVAILABLE = 0x08

    @classmethod
    def decode(cls, payload: bytes, param_count: int, capabilities: Capability = NO_CAPABILITIES,
               previous_types: Sequence[tuple[int, bool]] | None = None,
               long_data: Collection[int] = ()) -> ComStmtExecute:
        """`param_count` comes from the statement's COM_STMT_PREPARE_OK."""
        r = PayloadReader(payload, "COM_STMT_EXECUTE")
        if r.uint8() != Command.STMT_EXECUTE:
            raise r.fail("not a COM_STMT_EXECUTE")
        stmt_id = r.uint32()
        flags = r.uint8()
        iterations = r.uint32()
        with_names = bool(capabilities & Capability.QUERY_ATTRIBUTES)
        if with_names and (param_count > 0 or flags & cls.PARAMETER_COUNT_AVAILABLE):
            param_count = r.lenenc_int()
        params, bound = _decode_params(r, param_count, previous_types, with_names, long_data)
        r.end()
        return cls(stmt_id, flags, iterations, params, bound or param_count == 0)

    def encode(self, capabilities: Capability = NO_CAPABILITIES) -> bytes:
        head = b"\x17" + _u32(self.statement_id) + bytes((self.flags,)) + _u32(self.iteration_count)
        with_names = bool(capabilities & Capability.QUERY_ATTRIBUTES)
        if with_names and (self.parameters or self.flags & self.PARAMETER_COUNT_AVAILABLE):
            head += lenenc_int(len(self.parameters))
        return head + _encode_params(self.parameters, with_count=False, with_names=with_names,
                                     bind_types=self.new_params_bound)


@dataclass(frozen=True, slots=True)
class ComStmtFetch:
    statement_id: int
    num_rows: int
    command = Command.STMT_FETCH

    def encode(self) -> bytes:
        return b"\x1c" + _u32(self.statement_id) + _u32(self.num_rows)


@dataclass(frozen=True, slots=True)
class ComStmtClose:
    statement_id: int
    command = Command.STMT_CLOSE

    def encode(self) -> bytes:
        return b"\x19" + _u32(self.statement_id)


@dataclass(frozen=True, slots=True)
class ComStmtReset:
    statement_id: int
    command = Command.STMT_RESET

    def encode(self) -> bytes:
        return b"\x1a" + _u32(self.statement_id)


@dataclass(frozen=True, slots=True)
class ComStmtSendLongData:
    statement_id: int
    param_id: int
    data: bytes
    command = Command.STMT_SEND_LONG_DATA

    def encode(self) -> bytes:
        return b"\x18" + _u32(self.statement_id) + _u16(self.param_id) + self.data


@dataclass(frozen=True, slots=True)
class ComSetOption:
    option: int  # 0 = MULTI_STATEMENTS_ON, 1 = MULTI_STATEMENTS_OFF
    command = Command.SET_OPTION

    def encode(self) -> bytes:
        return b"\x1b" + _u16(self.option)


@dataclass(frozen=True, slots=True)
class ComProcessKill:
    connection_id: int
    command = Command.PROCESS_KILL

    def encode(self) -> bytes:
        return b"\x0c" + _u32(self.connection_id)


@dataclass(frozen=True, slots=True)
class ComChangeUser:
    """COM_CHANGE_USER. Fields after the schema exist only if the client sends them."""

    username: bytes
    auth_response: bytes = field(repr=False)
    schema: bytes
    character_set: int | None = None
    auth_plugin_name: bytes | None = None
    connect_attrs: tuple[tuple[bytes, bytes], ...] | None = None
    command = Command.CHANGE_USER

    @classmethod
    def decode(cls, payload: bytes, capabilities: Capability) -> ComChangeUser:
        r = PayloadReader(payload, "COM_CHANGE_USER")
        if r.uint8() != Command.CHANGE_USER:
            raise r.fail("not a COM_CHANGE_USER")
        user = r.nul_bytes()
        auth = r.raw(r.uint8()) if capabilities & Capability.SECURE_CONNECTION else r.nul_bytes()
        schema = r.nul_bytes()
        charset = plugin = attrs = None
        if r.remaining():
            charset = r.uint16()
            if capabilities & Capability.PLUGIN_AUTH and r.remaining():
                plugin = r.nul_bytes()
            if capabilities & Capability.CONNECT_ATTRS and r.remaining():
                attrs = _decode_attrs(r)
        r.end()
        return cls(user, auth, schema, charset, plugin, attrs)

    def encode(self, capabilities: Capability) -> bytes:
        parts = [b"\x11", nul_bytes(self.username)]
        if capabilities & Capability.SECURE_CONNECTION:
            parts.append(bytes((len(self.auth_response),)) + self.auth_response)
        else:
            parts.append(nul_bytes(self.auth_response))
        parts.append(nul_bytes(self.schema))
        if self.character_set is not None:
            parts.append(_u16(self.character_set))
            if self.auth_plugin_name is not None:
                if not capabilities & Capability.PLUGIN_AUTH:
                    raise ValueError("a plugin name needs PLUGIN_AUTH")
                parts.append(nul_bytes(self.auth_plugin_name))
            if self.connect_attrs is not None:
                if not capabilities & Capability.CONNECT_ATTRS or self.auth_plugin_name is None:
                    raise ValueError("connect attributes need CONNECT_ATTRS and a plugin name")
                parts.append(_encode_attrs(self.connect_attrs))
        elif self.auth_plugin_name is not None or self.connect_attrs is not None:
            raise ValueError("a plugin name or attributes need a character set")
        return b"".join(parts)


@dataclass(frozen=True, slots=True)
class ComBinlogDump:
    """Recognised so it can be refused: a replication stream must not go through the proxy."""

    position: int
    flags: int
    server_id: int
    filename: bytes
    command = Command.BINLOG_DUMP

    def encode(self) -> bytes:
        return b"\x12" + _u32(self.position) + _u16(self.flags) + _u32(self.server_id) + self.filename


@dataclass(frozen=True, slots=True)
class ComUnsupported:
    """A known command the codec does not model (COM_CREATE_DB, COM_SHUTDOWN, COM_BINLOG_DUMP_GTID,
    MariaDB's bulk execute...): the session must refuse it with an ERR."""

    command: Command
    body: bytes

    def encode(self) -> bytes:
        return bytes((self.command,)) + self.body


CommandMessage = (ComQuery | ComInitDb | ComFieldList | ComSimple | ComStmtPrepare | ComStmtExecute
                  | ComStmtFetch | ComStmtClose | ComStmtReset | ComStmtSendLongData | ComSetOption
                  | ComProcessKill | ComChangeUser | ComBinlogDump | ComUnsupported)

_SIMPLE: Final = frozenset({Command.QUIT, Command.PING, Command.STATISTICS, Command.RESET_CONNECTION,
                            Command.DEBUG, Command.PROCESS_INFO})


class UnknownCommand(ProtocolViolation):
    """A command byte that is not a MySQL or MariaDB command (ERR 1047, 08S01)."""


def decode_command(payload: bytes, capabilities: Capability = NO_CAPABILITIES, *,
                   param_counts: dict[int, int] | None = None,
                   param_types: dict[int, Sequence[tuple[int, bool]]] | None = None,
                   long_data: dict[int, Collection[int]] | None = None) -> CommandMessage:
    """Decode a command-phase client payload.

    COM_STMT_EXECUTE needs the statement's parameter count (from its COM_STMT_PREPARE_OK) in
    `param_counts`, and the types bound by its previous execution in `param_types` if the
    client does not re-send them, and in `long_data` the indices of parameters sent by
    COM_STMT_SEND_LONG_DATA since its last execute/reset; an unknown statement id raises
    ProtocolViolation."""
    r = PayloadReader(payload, "command")
    code = r.uint8()
    try:
        cmd = Command(code)
    except ValueError:
        raise UnknownCommand(f"unknown command byte 0x{code:02x}") from None
    if cmd == Command.QUERY:
        if capabilities & Capability.QUERY_ATTRIBUTES:
            count = r.lenenc_int()
            if r.lenenc_int() != 1:
                raise UnsupportedFeature("COM_QUERY: parameter set count other than 1")
            attrs, _ = _decode_params(r, count, None, True)
            return ComQuery(r.rest(), attrs)
        return ComQuery(r.rest())
    if cmd in _SIMPLE:
        r.end()
        return ComSimple(cmd)
    if cmd == Command.INIT_DB:
        return ComInitDb(r.rest())
    if cmd == Command.FIELD_LIST:
        return ComFieldList(r.nul_bytes(), r.rest())
    if cmd == Command.STMT_PREPARE:
        return ComStmtPrepare(r.rest())
    if cmd == Command.STMT_EXECUTE:
        if len(payload) < 5:
            raise r.fail("packet truncated")
        stmt_id = int.from_bytes(payload[1:5], "little")
        known = (param_counts or {}).get(stmt_id)
        if known is None:
            raise ProtocolViolation(f"COM_STMT_EXECUTE: unknown statement id {stmt_id}")
        return ComStmtExecute.decode(payload, known, capabilities, (param_types or {}).get(stmt_id),
                                     (long_data or {}).get(stmt_id, ()))
    if cmd == Command.CHANGE_USER:
        return ComChangeUser.decode(payload, capabilities)
    result: CommandMessage
    if cmd == Command.STMT_FETCH:
        result = ComStmtFetch(r.uint32(), r.uint32())
    elif cmd in (Command.STMT_CLOSE, Command.STMT_RESET):
        result = ComStmtClose(r.uint32()) if cmd == Command.STMT_CLOSE else ComStmtReset(r.uint32())
    elif cmd == Command.STMT_SEND_LONG_DATA:
        return ComStmtSendLongData(r.uint32(), r.uint16(), r.rest())
    elif cmd == Command.SET_OPTION:
        result = ComSetOption(r.uint16())
    elif cmd == Command.PROCESS_KILL:
        result = ComProcessKill(r.uint32())
    elif cmd == Command.BINLOG_DUMP:
        return ComBinlogDump(r.uint32(), r.uint16(), r.uint32(), r.rest())
    else:
        return ComUnsupported(cmd, r.rest())
    r.end()
    return result


# --------------------------------------------------------------------------- prepared statements


@dataclass(frozen=True, slots=True)
class StmtPrepareOk:
    """COM_STMT_PREPARE_OK: followed by `num_params` then `num_columns` column definitions."""

    statement_id: int
    num_columns: int
    num_params: int
    warnings: int = 0

    @classmethod
    def decode(cls, payload: bytes) -> StmtPrepareOk:
        r = PayloadReader(payload, "COM_STMT_PREPARE_OK")
        if r.uint8() != 0x00:
            raise r.fail("header is not 0x00")
        stmt_id, cols, params = r.uint32(), r.uint16(), r.uint16()
        if r.uint8() != 0:
            raise r.fail("reserved byte is not 0")
        warnings = r.uint16() if r.remaining() else 0
        if r.remaining():
            raise UnsupportedFeature("COM_STMT_PREPARE_OK: optional resultset metadata")
        return cls(stmt_id, cols, params, warnings)

    def encode(self) -> bytes:
        return (b"\x00" + _u32(self.statement_id) + _u16(self.num_columns) + _u16(self.num_params) + b"\x00"
                + _u16(self.warnings))
