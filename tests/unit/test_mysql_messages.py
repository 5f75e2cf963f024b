"""Unit tests for dbguard.wire.mysql.messages: golden payloads, PyMySQL cross-checks, round-trips.

Covers: golden payloads written out by hand from the protocol documentation for the greeting
(MySQL 8 and MariaDB with extended capabilities in the filler), the handshake response in its
three auth-response encodings, SSLRequest, auth switch / more data, OK (plain, with SESSION_TRACK
info and state changes, 0xFE-headed), ERR (with and without SQLSTATE), EOF, LOCAL INFILE,
column definitions, text and binary rows, every command and COM_STMT_PREPARE_OK; PyMySQL's
parsers reading our greeting, OK, EOF and column definitions, and our decoder reading PyMySQL's
handshake response; binary rows for every column type with NULL bitmaps at 1..17 columns
(the bitmap offset 2 moves the 7th column into the second byte); typed value helpers; query
attributes on COM_QUERY and COM_STMT_EXECUTE; hypothesis round-trips for every message and
random bytes into every decoder (only ProtocolViolation may come out).
"""

from __future__ import annotations

import contextlib
import datetime
import struct
from collections.abc import Callable
from typing import Any

import pymysql.connections
import pymysql.constants.CLIENT
import pymysql.protocol
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguard.wire.mysql import messages
from dbguard.wire.mysql.messages import (
    NO_CAPABILITIES,
    AuthMoreData,
    AuthSwitchRequest,
    AuthSwitchResponse,
    Capability,
    ColumnDefinition41,
    ColumnFlag,
    ColumnType,
    ComBinlogDump,
    ComChangeUser,
    ComFieldList,
    ComInitDb,
    Command,
    ComProcessKill,
    ComQuery,
    ComSetOption,
    ComSimple,
    ComStmtClose,
    ComStmtExecute,
    ComStmtFetch,
    ComStmtPrepare,
    ComStmtReset,
    ComStmtSendLongData,
    ComUnsupported,
    EofPacket,
    ErrPacket,
    HandshakeResponse41,
    HandshakeV10,
    LocalInfileRequest,
    OkPacket,
    QueryAttribute,
    ServerStatus,
    SSLRequest,
    StmtPrepareOk,
    UnknownCommand,
    binary_value_to_python,
    decode_binary_row,
    decode_client_handshake,
    decode_column_count,
    decode_command,
    decode_text_row,
    encode_binary_row,
    encode_column_count,
    encode_text_row,
    err,
    is_eof,
    is_err,
    is_ok,
    lone_string_values,
    python_to_binary_value,
)
from dbguard.wire.mysql.packets import ProtocolViolation, UnsupportedFeature

# PyMySQL, used only to cross-check, through `Any`: its parsers set attributes dynamically.
pymysql_connections: Any = pymysql.connections
PYMYSQL_CLIENT: Any = pymysql.constants.CLIENT
_protocol: Any = pymysql.protocol
MysqlPacket = _protocol.MysqlPacket
OKPacketWrapper = _protocol.OKPacketWrapper
EOFPacketWrapper = _protocol.EOFPacketWrapper
FieldDescriptorPacket = _protocol.FieldDescriptorPacket

C = Capability
BASE_CLIENT = (C.LONG_PASSWORD | C.LONG_FLAG | C.PROTOCOL_41 | C.TRANSACTIONS | C.SECURE_CONNECTION
               | C.MULTI_RESULTS | C.PLUGIN_AUTH)
NONCE = b"abcdefghijklmnopqrst"

# ----------------------------------------------------------------------------- golden: greeting

GOLDEN_MYSQL_GREETING = (
    b"\x0a8.0.36\x00"
    b"\x0d\x00\x00\x00"  # connection id 13
    b"abcdefgh\x00"  # scramble part 1 + filler
    b"\xff\xf7"  # capabilities low: 0xF7FF (all but SSL)
    b"\xff"  # utf8mb4_0900_ai_ci
    b"\x02\x00"  # AUTOCOMMIT
    b"\xff\xdf"  # capabilities high: 0xDFFF
    b"\x15"  # auth plugin data length 21
    + b"\x00" * 10
    + b"ijklmnopqrst\x00"
    b"caching_sha2_password\x00"
)

GOLDEN_MARIADB_GREETING = (
    b"\x0a5.5.5-11.4.2-MariaDB\x00"
    b"\x05\x00\x00\x00"
    b"abcdefgh\x00"
    b"\xfe\xf7"  # CLIENT_MYSQL (bit 0) clear: extended capabilities follow
    b"\x2d"
    b"\x02\x00"
    b"\xff\x81"
    b"\x15"
    + b"\x00" * 6
    + b"\x1d\x00\x00\x00"  # PROGRESS | STMT_BULK_OPERATIONS | EXTENDED_TYPE_INFO | CACHE_METADATA
    + b"ijklmnopqrst\x00"
    b"mysql_native_password\x00"
)


def test_golden_mysql_greeting() -> None:
    g = HandshakeV10.decode(GOLDEN_MYSQL_GREETING)
    assert g.server_version == b"8.0.36"
    assert g.connection_id == 13
    assert g.nonce == NONCE
    assert g.capabilities == Capability(0xDFFFF7FF)
    assert C.SSL not in g.capabilities
    assert C.DEPRECATE_EOF in g.capabilities
    assert g.character_set == 255
    assert g.status_flags == ServerStatus.AUTOCOMMIT
    assert g.auth_plugin_name == b"caching_sha2_password"
    assert g.encode() == GOLDEN_MYSQL_GREETING


def test_golden_mariadb_greeting() -> None:
    g = HandshakeV10.decode(GOLDEN_MARIADB_GREETING)
    assert g.capabilities & 0xFFFFFFFF == 0x81FFF7FE
    assert C.MARIADB_PROGRESS in g.capabilities
    assert C.MARIADB_EXTENDED_TYPE_INFO in g.capabilities
    assert C.MARIADB_COM_MULTI not in g.capabilities
    assert g.auth_plugin_name == b"mysql_native_password"
    assert g.encode() == GOLDEN_MARIADB_GREETING


def test_greeting_plugin_name_without_nul() -> None:
    # MySQL bug #59453: the plugin name may run to the end of the packet.
    g = HandshakeV10.decode(GOLDEN_MYSQL_GREETING[:-1])
    assert g.auth_plugin_name == b"caching_sha2_password"


@pytest.mark.parametrize("greeting", [GOLDEN_MYSQL_GREETING, GOLDEN_MARIADB_GREETING])
def test_pymysql_reads_our_greeting(greeting: bytes) -> None:
    conn: Any = pymysql_connections.Connection.__new__(pymysql_connections.Connection)
    conn._read_packet = lambda: MysqlPacket(greeting, "utf8")
    conn._get_server_information()
    g = HandshakeV10.decode(greeting)
    assert conn.salt == g.nonce
    assert conn.server_capabilities == int(g.capabilities) & 0xFFFFFFFF
    assert conn._auth_plugin_name.encode() == g.auth_plugin_name


def test_greeting_rejects_other_protocols() -> None:
    with pytest.raises(ProtocolViolation, match="version 10"):
        HandshakeV10.decode(b"\x09" + GOLDEN_MYSQL_GREETING[1:])
    with pytest.raises(ProtocolViolation):
        HandshakeV10.decode(GOLDEN_MYSQL_GREETING[:30])


# ----------------------------------------------------------------------------- golden: client handshake

GOLDEN_SSL_REQUEST = struct.pack("<IIB", int(BASE_CLIENT | C.SSL), 16777216, 45) + b"\x00" * 23

GOLDEN_RESPONSE_SECURE = (
    struct.pack("<IIB", int(BASE_CLIENT | C.CONNECT_WITH_DB), 16777216, 45) + b"\x00" * 23
    + b"app\x00"
    + b"\x14" + bytes(range(20))  # 1-byte length + 20-byte native scramble
    + b"shop\x00"
    + b"mysql_native_password\x00"
)


def test_golden_ssl_request() -> None:
    msg = decode_client_handshake(GOLDEN_SSL_REQUEST)
    assert msg == SSLRequest(BASE_CLIENT | C.SSL, 16777216, 45)
    assert msg.encode() == GOLDEN_SSL_REQUEST
    with pytest.raises(ProtocolViolation, match="SSL flag"):
        decode_client_handshake(struct.pack("<IIB", int(BASE_CLIENT), 0, 45) + b"\x00" * 23)


def test_golden_handshake_response_secure_connection() -> None:
    msg = decode_client_handshake(GOLDEN_RESPONSE_SECURE)
    assert isinstance(msg, HandshakeResponse41)
    assert msg.username == b"app"
    assert msg.auth_response == bytes(range(20))
    assert msg.database == b"shop"
    assert msg.auth_plugin_name == b"mysql_native_password"
    assert msg.connect_attrs == ()
    assert msg.encode() == GOLDEN_RESPONSE_SECURE


def test_handshake_response_lenenc_and_attrs() -> None:
    caps = BASE_CLIENT | C.PLUGIN_AUTH_LENENC_CLIENT_DATA | C.CONNECT_ATTRS
    payload = (
        struct.pack("<IIB", int(caps), 0xFFFFFF, 33) + b"\x00" * 23 + b"u\x00"
        + b"\x03abc" + b"caching_sha2_password\x00"
        + b"\x0f" + b"\x04_pid\x0212" + b"\x02os\x03lin"
    )
    msg = HandshakeResponse41.decode(payload)
    assert msg.auth_response == b"abc"
    assert msg.connect_attrs == ((b"_pid", b"12"), (b"os", b"lin"))
    assert msg.encode() == payload


def test_handshake_response_nul_terminated_auth() -> None:
    caps = C.PROTOCOL_41 | C.LONG_PASSWORD
    payload = struct.pack("<IIB", int(caps), 0, 8) + b"\x00" * 23 + b"u\x00secret\x00"
    msg = HandshakeResponse41.decode(payload)
    assert msg.auth_response == b"secret"
    assert msg.encode() == payload


def test_handshake_response_mariadb_extended_caps() -> None:
    caps = (BASE_CLIENT & ~C.LONG_PASSWORD) | C.MARIADB_STMT_BULK_OPERATIONS
    msg = HandshakeResponse41(caps, 0, 45, b"u", b"", auth_plugin_name=b"mysql_native_password")
    payload = msg.encode()
    assert payload[9 + 19 : 9 + 23] == b"\x04\x00\x00\x00"
    assert HandshakeResponse41.decode(payload) == msg


def test_our_decoder_reads_pymysql_handshake_response() -> None:
    flags = (PYMYSQL_CLIENT.CAPABILITIES | PYMYSQL_CLIENT.CONNECT_WITH_DB | PYMYSQL_CLIENT.MULTI_STATEMENTS)
    sent: list[bytes] = []

    class Stop(Exception):
        pass

    def stop() -> None:
        raise Stop

    conn: Any = pymysql_connections.Connection.__new__(pymysql_connections.Connection)
    conn.__dict__.update(
        server_version="8.0.36", user="app", password=b"secret", charset="utf8mb4", encoding="utf8",
        client_flag=flags, ssl=None, _ssl_required=False, _auth_plugin_name="caching_sha2_password",
        salt=NONCE, server_capabilities=flags, db="shop",
        _connect_attrs={"_client_name": "pymysql", "program_name": "t"},
    )
    conn.write_packet = sent.append
    conn._read_packet = stop
    with pytest.raises(Stop):
        conn._request_authentication()
    msg = HandshakeResponse41.decode(sent[0])
    assert msg.username == b"app"
    assert msg.database == b"shop"
    assert msg.auth_plugin_name == b"caching_sha2_password"
    assert dict(msg.connect_attrs) == {b"_client_name": b"pymysql", b"program_name": b"t"}
    from dbguard.wire.mysql.auth import scramble_caching_sha2

    assert msg.auth_response == scramble_caching_sha2(b"secret", NONCE)
    assert msg.encode() == sent[0]


# ----------------------------------------------------------------------------- golden: auth exchange


def test_golden_auth_switch_and_more_data() -> None:
    payload = b"\xfemysql_native_password\x00" + NONCE + b"\x00"
    msg = AuthSwitchRequest.decode(payload)
    assert msg == AuthSwitchRequest(b"mysql_native_password", NONCE + b"\x00")
    assert msg.encode() == payload
    with pytest.raises(UnsupportedFeature, match="old-password"):
        AuthSwitchRequest.decode(b"\xfe")
    assert AuthMoreData.decode(b"\x01\x03") == AuthMoreData(b"\x03")
    assert AuthMoreData(b"\x04").encode() == b"\x01\x04"
    with pytest.raises(ProtocolViolation):
        AuthMoreData.decode(b"\x00\x03")
    assert AuthSwitchResponse.decode(b"\x02").encode() == b"\x02"


# ----------------------------------------------------------------------------- golden: responses


def test_golden_ok_plain_and_pymysql() -> None:
    payload = b"\x00\x01\x05\x02\x00\x00\x00Rows matched: 1"
    ok = OkPacket.decode(payload, BASE_CLIENT)
    assert ok == OkPacket(1, 5, ServerStatus.AUTOCOMMIT, 0, b"Rows matched: 1")
    assert ok.encode(BASE_CLIENT) == payload
    wrapped = OKPacketWrapper(MysqlPacket(payload, "utf8"))
    assert (wrapped.affected_rows, wrapped.insert_id, wrapped.message) == (1, 5, b"Rows matched: 1")
    assert is_ok(payload)
    assert not is_eof(payload)


def test_golden_ok_session_track() -> None:
    caps = BASE_CLIENT | C.SESSION_TRACK
    status = ServerStatus.AUTOCOMMIT | ServerStatus.SESSION_STATE_CHANGED
    # state change: SESSION_TRACK_SCHEMA (1), length 5, lenenc "shop"
    changes = b"\x01\x05\x04shop"
    payload = b"\x00\x00\x00\x02\x40\x00\x00" + b"\x00" + b"\x07" + changes
    ok = OkPacket.decode(payload, caps)
    assert ok.status_flags == status
    assert ok.info == b""
    assert ok.session_state_changes == changes
    assert ok.encode(caps) == payload
    # No info and no state change: the info string is absent.
    bare = b"\x00\x00\x00\x02\x00\x00\x00"
    assert OkPacket.decode(bare, caps).encode(caps) == bare


def test_golden_ok_replacing_eof() -> None:
    payload = b"\xfe\x00\x00\x82\x00\x00\x00"
    ok = OkPacket.decode(payload, BASE_CLIENT | C.DEPRECATE_EOF)
    assert ok.header == 0xFE
    assert ok.status_flags == ServerStatus.AUTOCOMMIT | ServerStatus.LAST_ROW_SENT
    assert ok.encode(BASE_CLIENT) == payload
    assert is_eof(payload)  # by length alone it looks like an EOF: the caller knows DEPRECATE_EOF
    with pytest.raises(ProtocolViolation, match="EOF"):
        OkPacket.decode(b"\xfe\x00\x00\x02\x00", BASE_CLIENT)


def test_golden_err() -> None:
    payload = b"\xff\x48\x04#HY000No tables used"
    e = ErrPacket.decode(payload)
    assert e == ErrPacket(1096, b"HY000", b"No tables used")
    assert e.encode() == payload
    assert err(1096, "HY000", "No tables used") == e
    assert is_err(payload)
    with pytest.raises(pymysql_connections.err.OperationalError) as info:
        MysqlPacket(payload, "utf8").raise_for_error()
    assert info.value.args == (1096, "No tables used")
    pre_handshake = b"\xff\x10\x04Too many connections"
    assert ErrPacket.decode(pre_handshake) == ErrPacket(1040, None, b"Too many connections")
    assert ErrPacket.decode(pre_handshake).encode() == pre_handshake
    with pytest.raises(UnsupportedFeature, match="progress"):
        ErrPacket.decode(b"\xff\xff\xff\x01")
    with pytest.raises(ValueError, match="SQLSTATE"):
        err(1, "HY00", "x")


def test_golden_eof() -> None:
    payload = b"\xfe\x01\x00\x02\x00"
    eof = EofPacket.decode(payload)
    assert eof == EofPacket(1, ServerStatus.AUTOCOMMIT)
    assert eof.encode() == payload
    wrapped = EOFPacketWrapper(MysqlPacket(payload, "utf8"))
    assert (wrapped.warning_count, wrapped.server_status) == (1, 2)
    assert is_eof(payload)


def test_golden_local_infile_and_column_count() -> None:
    assert LocalInfileRequest.decode(b"\xfb/etc/passwd") == LocalInfileRequest(b"/etc/passwd")
    assert LocalInfileRequest(b"x.csv").encode() == b"\xfbx.csv"
    assert decode_column_count(b"\x03") == 3
    assert decode_column_count(b"\xfc\x00\x01") == 256
    assert encode_column_count(256) == b"\xfc\x00\x01"
    with pytest.raises(ProtocolViolation):
        decode_column_count(b"\x00")


GOLDEN_COLUMN = (
    b"\x03def" b"\x04shop" b"\x01u" b"\x05users" b"\x02id" b"\x02id"
    b"\x0c" b"\x3f\x00" b"\x0b\x00\x00\x00" b"\x03" b"\x23\x42" b"\x00" b"\x00\x00"
)


def test_golden_column_definition_and_pymysql() -> None:
    col = ColumnDefinition41.decode(GOLDEN_COLUMN)
    assert col == ColumnDefinition41(b"def", b"shop", b"u", b"users", b"id", b"id", 63, 11, ColumnType.LONG,
                                     ColumnFlag(0x4223), 0)
    assert col.unsigned
    assert col.encode() == GOLDEN_COLUMN
    field = FieldDescriptorPacket(GOLDEN_COLUMN, "utf8")
    assert (field.db, field.table_name, field.name, field.type_code, field.flags, field.length) == (
        b"shop", "u", "id", 3, 0x4223, 11)


def test_column_definition_field_list_default_and_mariadb_extended() -> None:
    with_default = GOLDEN_COLUMN + b"\x01" + b"0"
    assert ColumnDefinition41.decode(with_default).default_value == b"0"
    assert ColumnDefinition41.decode(with_default).encode() == with_default
    caps = C.MARIADB_EXTENDED_TYPE_INFO
    col = ColumnDefinition41(b"def", b"", b"", b"", b"j", b"", 33, 10, ColumnType.BLOB, ColumnFlag(0), 0,
                             extended_metadata=b"\x00\x04json")
    assert ColumnDefinition41.decode(col.encode(caps), caps) == col
    with pytest.raises(ProtocolViolation, match="fixed fields"):
        ColumnDefinition41.decode(GOLDEN_COLUMN.replace(b"\x0c", b"\x0d", 1))


def test_golden_text_row() -> None:
    payload = b"\x011\xfb\x05alice"
    assert decode_text_row(payload, 3) == [b"1", None, b"alice"]
    assert encode_text_row([b"1", None, b"alice"]) == payload
    with pytest.raises(ProtocolViolation, match="trailing"):
        decode_text_row(payload, 2)
    with pytest.raises(ProtocolViolation, match="truncated"):
        decode_text_row(payload, 4)


# ----------------------------------------------------------------------------- binary rows

# (type, unsigned, python value, raw bytes as written by hand)
BINARY_CASES: list[tuple[int, bool, object, bytes]] = [
    (ColumnType.TINY, False, -1, b"\xff"),
    (ColumnType.TINY, True, 255, b"\xff"),
    (ColumnType.SHORT, False, -2, b"\xfe\xff"),
    (ColumnType.YEAR, False, 2024, b"\xe8\x07"),
    (ColumnType.INT24, False, -3, b"\xfd\xff\xff\xff"),
    (ColumnType.LONG, True, 0xDEADBEEF, b"\xef\xbe\xad\xde"),
    (ColumnType.LONGLONG, False, -(1 << 63), b"\x00" * 7 + b"\x80"),
    (ColumnType.LONGLONG, True, (1 << 64) - 1, b"\xff" * 8),
    (ColumnType.FLOAT, False, 1.5, b"\x00\x00\xc0\x3f"),
    (ColumnType.DOUBLE, False, -2.25, b"\x00\x00\x00\x00\x00\x00\x02\xc0"),
    (ColumnType.NEWDECIMAL, False, b"12.50", b"12.50"),
    (ColumnType.VAR_STRING, False, b"x" * 300, b"x" * 300),
    (ColumnType.BLOB, False, b"", b""),
    (ColumnType.DATE, False, datetime.date(2024, 2, 29), b"\xe8\x07\x02\x1d"),
    (ColumnType.DATETIME, False, datetime.datetime(2024, 2, 29, 0, 0), b"\xe8\x07\x02\x1d"),
    (ColumnType.DATETIME, False, datetime.datetime(2024, 2, 29, 13, 5, 9), b"\xe8\x07\x02\x1d\x0d\x05\x09"),
    (ColumnType.TIMESTAMP, False, datetime.datetime(2024, 2, 29, 13, 5, 9, 12),
     b"\xe8\x07\x02\x1d\x0d\x05\x09\x0c\x00\x00\x00"),
    (ColumnType.TIME, False, datetime.timedelta(0), b""),
    (ColumnType.TIME, False, datetime.timedelta(days=1, hours=2, minutes=3, seconds=4),
     b"\x00\x01\x00\x00\x00\x02\x03\x04"),
    (ColumnType.TIME, False, -datetime.timedelta(hours=1, microseconds=5),
     b"\x01\x00\x00\x00\x00\x01\x00\x00\x05\x00\x00\x00"),
]


def _binary_with_prefix(col_type: int, raw: bytes) -> bytes:
    if col_type in (ColumnType.DATE, ColumnType.DATETIME, ColumnType.TIMESTAMP, ColumnType.TIME):
        return bytes((len(raw),)) + raw
    if col_type in (ColumnType.NEWDECIMAL, ColumnType.VAR_STRING, ColumnType.BLOB):
        return (b"\xfc" + len(raw).to_bytes(2, "little") if len(raw) > 250 else bytes((len(raw),))) + raw
    return raw


@pytest.mark.parametrize(("col_type", "unsigned", "value", "raw"), BINARY_CASES)
def test_binary_value_golden(col_type: int, unsigned: bool, value: object, raw: bytes) -> None:
    payload = b"\x00\x00" + _binary_with_prefix(col_type, raw)  # one column, bitmap byte 0
    assert decode_binary_row(payload, [col_type]) == [raw]
    assert encode_binary_row([raw], [col_type]) == payload
    assert binary_value_to_python(col_type, raw, unsigned) == value
    assert python_to_binary_value(col_type, value, unsigned) == raw  # type: ignore[arg-type]


@pytest.mark.parametrize("columns", list(range(1, 18)))
def test_binary_row_null_bitmap_edges(columns: int) -> None:
    types = [BINARY_CASES[i % len(BINARY_CASES)][0] for i in range(columns)]
    raws = [BINARY_CASES[i % len(BINARY_CASES)][3] for i in range(columns)]
    for null_index in range(columns):
        values: list[bytes | None] = list(raws)
        values[null_index] = None
        payload = encode_binary_row(values, types)
        bitmap_len = (columns + 9) // 8
        assert len(payload) >= 1 + bitmap_len
        bit = null_index + 2
        bitmap = payload[1 : 1 + bitmap_len]
        assert bitmap[bit // 8] == 1 << (bit % 8)
        assert sum(bitmap) == bitmap[bit // 8]
        assert decode_binary_row(payload, types) == values
    all_null: list[bytes | None] = [None] * columns
    assert decode_binary_row(encode_binary_row(all_null, types), types) == all_null


def _one_column_rows() -> st.SearchStrategy[bytes]:
    """Rows of one column as servers send them (a short or long string, NULL) and mangled."""
    value = st.one_of(st.none(), st.binary(max_size=300))
    binary = value.map(lambda v: encode_binary_row([v], [ColumnType.VAR_STRING]))
    text = value.map(lambda v: encode_text_row([v]))
    return st.one_of(binary, text, st.binary(max_size=8),
                     st.tuples(st.one_of(binary, text), st.binary(max_size=3)).map(lambda p: p[0] + p[1]),
                     st.tuples(st.one_of(binary, text), st.integers(0, 255), st.integers(0, 300)).map(
                         lambda p: p[0][: p[2]] + bytes([p[1]]) + p[0][p[2] + 1 :]))


def _read_by_rows(payloads: list[bytes], column_type: int, binary: bool) -> list[bytes] | None:
    try:
        rows = [decode_binary_row(p, [column_type]) if binary else decode_text_row(p, 1) for p in payloads]
    except ProtocolViolation:
        return None
    return [row[0] for row in rows if row[0] is not None]


@settings(max_examples=400)
@given(payloads=st.lists(_one_column_rows(), max_size=6), binary=st.booleans(),
       column_type=st.sampled_from([ColumnType.VAR_STRING, ColumnType.BLOB, ColumnType.NEWDECIMAL, ColumnType.JSON]))
def test_a_one_column_results_values_read_in_place_are_what_the_row_readers_give(
        payloads: list[bytes], binary: bool, column_type: int) -> None:
    """Where the in-place reader answers, the row readers read every row to the same values;
    where a row reader fails on a row, the in-place reader steps aside."""
    fast = lone_string_values(payloads, column_type, binary)
    if fast is not None:
        assert fast == _read_by_rows(payloads, column_type, binary)
    elif _read_by_rows(payloads, column_type, binary) is not None:
        assert any(len(p) > 251 for p in payloads), "it steps aside for a readable row only when a value is long"


def test_a_fixed_width_or_temporal_lone_column_is_left_to_the_row_readers() -> None:
    for column_type in (ColumnType.LONG, ColumnType.DOUBLE, ColumnType.DATE, ColumnType.DATETIME, ColumnType.TIME):
        assert lone_string_values([encode_binary_row([b"\x01\x00\x00\x00"], [ColumnType.LONG])],
                                  column_type, True) is None
    assert lone_string_values([encode_text_row([b"abc"]), encode_text_row([None])], ColumnType.VAR_STRING,
                              False) == [b"abc"]
    assert lone_string_values([encode_binary_row([None], [ColumnType.VAR_STRING])], ColumnType.VAR_STRING,
                              True) == []


def test_binary_row_bitmap_sizes() -> None:
    # 6 columns: bits 2..7, one byte; 7 columns: bit 8 needs a second byte.
    assert encode_binary_row([None] * 6, [ColumnType.TINY] * 6) == b"\x00\xfc"
    assert encode_binary_row([None] * 7, [ColumnType.TINY] * 7) == b"\x00\xfc\x01"
    assert encode_binary_row([None] * 8, [ColumnType.TINY] * 8) == b"\x00\xfc\x03"
    assert encode_binary_row([None] * 9, [ColumnType.TINY] * 9) == b"\x00\xfc\x07"
    with pytest.raises(ProtocolViolation, match="truncated"):
        decode_binary_row(b"\x00\xfc", [ColumnType.TINY] * 7)


def test_binary_row_rejects_bad_values() -> None:
    with pytest.raises(ProtocolViolation, match="header"):
        decode_binary_row(b"\x01\x00\x05", [ColumnType.TINY])
    with pytest.raises(ProtocolViolation, match="length 5"):
        decode_binary_row(b"\x00\x00\x05abcde", [ColumnType.DATE])
    with pytest.raises(ProtocolViolation, match="TIME value of length 4"):
        decode_binary_row(b"\x00\x00\x04abcd", [ColumnType.TIME])
    with pytest.raises(ValueError, match="bytes"):
        encode_binary_row([b"\x00"], [ColumnType.SHORT])
    with pytest.raises(ValueError, match="one value per column"):
        encode_binary_row([b"\x00"], [])


def test_masking_replacement_keeps_row_valid() -> None:
    types = [ColumnType.LONG, ColumnType.VAR_STRING, ColumnType.DATE]
    row = encode_binary_row([b"\x01\x00\x00\x00", b"alice@example.com", b"\xe8\x07\x02\x1d"], types)
    values = decode_binary_row(row, types)
    values[1] = b"***"
    values[2] = python_to_binary_value(ColumnType.DATE, datetime.date(1970, 1, 1))
    rebuilt = encode_binary_row(values, types)
    assert decode_binary_row(rebuilt, types) == [b"\x01\x00\x00\x00", b"***", b"\xb2\x07\x01\x01"]


def test_typed_helpers_errors() -> None:
    with pytest.raises(ValueError, match="zero date"):
        binary_value_to_python(ColumnType.DATE, b"")
    with pytest.raises(TypeError):
        python_to_binary_value(ColumnType.LONG, b"1")
    with pytest.raises(TypeError):
        python_to_binary_value(ColumnType.DATE, 1)
    with pytest.raises(TypeError):
        python_to_binary_value(ColumnType.TIME, datetime.date(2020, 1, 1))
    with pytest.raises(TypeError):
        python_to_binary_value(ColumnType.BLOB, 5)
    with pytest.raises(OverflowError):
        python_to_binary_value(ColumnType.TINY, 300)


# ----------------------------------------------------------------------------- commands

GOLDEN_COMMANDS: list[tuple[bytes, object]] = [
    (b"\x03SELECT 1", ComQuery(b"SELECT 1")),
    (b"\x02shop", ComInitDb(b"shop")),
    (b"\x0e", ComSimple(Command.PING)),
    (b"\x01", ComSimple(Command.QUIT)),
    (b"\x09", ComSimple(Command.STATISTICS)),
    (b"\x1f", ComSimple(Command.RESET_CONNECTION)),
    (b"\x04users\x00id%", ComFieldList(b"users", b"id%")),
    (b"\x16SELECT ?", ComStmtPrepare(b"SELECT ?")),
    (b"\x1c\x01\x00\x00\x00\x0a\x00\x00\x00", ComStmtFetch(1, 10)),
    (b"\x19\x07\x00\x00\x00", ComStmtClose(7)),
    (b"\x1a\x07\x00\x00\x00", ComStmtReset(7)),
    (b"\x18\x07\x00\x00\x00\x01\x00chunk", ComStmtSendLongData(7, 1, b"chunk")),
    (b"\x1b\x01\x00", ComSetOption(1)),
    (b"\x0c\x2a\x00\x00\x00", ComProcessKill(42)),
    (b"\x12\x04\x00\x00\x00\x00\x00\x02\x00\x00\x00binlog.000001", ComBinlogDump(4, 0, 2, b"binlog.000001")),
    (b"\x05newdb", ComUnsupported(Command.CREATE_DB, b"newdb")),
    (b"\x1e" + b"\x00" * 10, ComUnsupported(Command.BINLOG_DUMP_GTID, b"\x00" * 10)),
]


@pytest.mark.parametrize(("payload", "expected"), GOLDEN_COMMANDS)
def test_golden_commands(payload: bytes, expected: Any) -> None:
    assert decode_command(payload) == expected
    assert expected.encode() == payload


def test_unknown_and_malformed_commands() -> None:
    with pytest.raises(UnknownCommand, match="0x99"):
        decode_command(b"\x99")
    with pytest.raises(ProtocolViolation, match="truncated"):
        decode_command(b"")
    with pytest.raises(ProtocolViolation, match="trailing"):
        decode_command(b"\x0eX")
    with pytest.raises(ProtocolViolation, match="truncated"):
        decode_command(b"\x19\x01")


def test_golden_change_user() -> None:
    caps = BASE_CLIENT | C.CONNECT_ATTRS
    payload = b"\x11bob\x00\x03abc" + b"shop\x00" + b"\x2d\x00" + b"mysql_native_password\x00" + b"\x05\x01a\x02bc"
    msg = decode_command(payload, caps)
    assert msg == ComChangeUser(b"bob", b"abc", b"shop", 45, b"mysql_native_password", ((b"a", b"bc"),))
    assert isinstance(msg, ComChangeUser)
    assert msg.encode(caps) == payload
    short = b"\x11bob\x00\x00shop\x00"
    assert decode_command(short, caps) == ComChangeUser(b"bob", b"", b"shop")


def test_golden_stmt_execute() -> None:
    payload = (
        b"\x17\x01\x00\x00\x00\x00\x01\x00\x00\x00"  # stmt 1, no cursor, 1 iteration
        b"\x02"  # NULL bitmap: parameter 1 (of 3) is NULL
        b"\x01"  # new params bound
        b"\x08\x00" b"\xfd\x00" b"\x08\x80"  # LONGLONG, VAR_STRING, unsigned LONGLONG
        b"\x05\x00\x00\x00\x00\x00\x00\x00" b"\xff\xff\xff\xff\xff\xff\xff\xff"
    )
    msg = decode_command(payload, BASE_CLIENT, param_counts={1: 3})
    assert isinstance(msg, ComStmtExecute)
    assert msg.statement_id == 1
    assert [(p.type, p.unsigned, p.value) for p in msg.parameters] == [
        (8, False, b"\x05" + b"\x00" * 7), (253, False, None), (8, True, b"\xff" * 8)]
    assert msg.encode(BASE_CLIENT) == payload
    # Re-execution without re-sent types: the caller supplies the previous ones.
    again = payload[:11] + b"\x00" + payload[18:]
    types = [(8, False), (253, False), (8, True)]
    msg2 = decode_command(again, BASE_CLIENT, param_counts={1: 3}, param_types={1: types})
    assert isinstance(msg2, ComStmtExecute)
    assert not msg2.new_params_bound
    assert [p.value for p in msg2.parameters] == [p.value for p in msg.parameters]
    assert msg2.encode(BASE_CLIENT) == again
    with pytest.raises(ProtocolViolation, match="previous"):
        decode_command(again, BASE_CLIENT, param_counts={1: 3})
    with pytest.raises(ProtocolViolation, match="unknown statement id 2"):
        decode_command(payload.replace(b"\x17\x01", b"\x17\x02", 1), BASE_CLIENT, param_counts={1: 3})
    no_params = b"\x17\x09\x00\x00\x00\x00\x01\x00\x00\x00"
    assert decode_command(no_params, param_counts={9: 0}) == ComStmtExecute(9, 0, 1)


def test_stmt_execute_with_long_data() -> None:
    # Parameter 0 was sent with COM_STMT_SEND_LONG_DATA: not NULL in the bitmap, no value here.
    payload = (b"\x17\x03\x00\x00\x00\x00\x01\x00\x00\x00" b"\x00" b"\x01" b"\xfc\x00" b"\x03\x00"
               b"\x07\x00\x00\x00")
    msg = decode_command(payload, BASE_CLIENT, param_counts={3: 2}, long_data={3: {0}})
    assert isinstance(msg, ComStmtExecute)
    assert msg.parameters == (QueryAttribute(252, False, b"", None, long_data=True),
                              QueryAttribute(3, False, b"", b"\x07\x00\x00\x00"))
    assert msg.encode(BASE_CLIENT) == payload
    with pytest.raises(ProtocolViolation):
        decode_command(payload, BASE_CLIENT, param_counts={3: 2})


def test_stmt_execute_with_query_attributes() -> None:
    caps = BASE_CLIENT | C.QUERY_ATTRIBUTES
    params = (QueryAttribute(ColumnType.LONG, False, b"", b"\x01\x00\x00\x00"),
              QueryAttribute(ColumnType.VAR_STRING, False, b"trace", b"abc"))
    msg = ComStmtExecute(5, 0, 1, params)
    payload = msg.encode(caps)
    assert payload[10] == 2  # lenenc parameter count, overriding the prepare's 1
    assert ComStmtExecute.decode(payload, 1, caps) == msg


def test_com_query_attributes() -> None:
    caps = BASE_CLIENT | C.QUERY_ATTRIBUTES
    payload = (b"\x03" b"\x01" b"\x01"  # one attribute, one parameter set
               b"\x00" b"\x01" b"\xfd\x00" b"\x02id" b"\x03abc" b"SELECT 1")
    msg = decode_command(payload, caps)
    assert msg == ComQuery(b"SELECT 1", (QueryAttribute(253, False, b"id", b"abc"),))
    assert isinstance(msg, ComQuery)
    assert msg.encode(caps) == payload
    assert decode_command(b"\x03\x00\x01SELECT 1", caps) == ComQuery(b"SELECT 1")
    with pytest.raises(UnsupportedFeature, match="parameter set"):
        decode_command(b"\x03\x00\x02SELECT 1", caps)
    with pytest.raises(ProtocolViolation, match="not bound"):
        decode_command(b"\x03\x01\x01\x00\x00\x03abcSELECT 1", caps)
    with pytest.raises(ValueError, match="QUERY_ATTRIBUTES"):
        msg.encode(BASE_CLIENT)


def test_golden_stmt_prepare_ok() -> None:
    payload = b"\x00\x01\x00\x00\x00\x02\x00\x03\x00\x00\x00\x00"
    msg = StmtPrepareOk.decode(payload)
    assert msg == StmtPrepareOk(1, 2, 3, 0)
    assert msg.encode() == payload
    with pytest.raises(ProtocolViolation, match="reserved"):
        StmtPrepareOk.decode(b"\x00\x01\x00\x00\x00\x02\x00\x03\x00\x01\x00\x00")


# ----------------------------------------------------------------------------- hypothesis round-trips

short = st.binary(max_size=12)
nonul = short.filter(lambda b: b"\x00" not in b)
caps_st = st.integers(0, (1 << 38) - 1).map(lambda v: Capability(v | C.PROTOCOL_41))
status_st = st.integers(0, 0xFFFF).map(ServerStatus)


@st.composite
def handshake_responses(draw: st.DrawFn) -> HandshakeResponse41:
    caps = int(draw(caps_st))
    if caps & C.LONG_PASSWORD:
        caps &= 0xFFFFFFFF
    database = draw(nonul) if caps & C.CONNECT_WITH_DB else None
    plugin = draw(st.one_of(st.none(), nonul)) if caps & C.PLUGIN_AUTH else None
    needs_plugin = caps & C.PLUGIN_AUTH and (caps & C.CONNECT_ATTRS or caps & C.ZSTD_COMPRESSION)
    if needs_plugin and plugin is None:
        plugin = b"p"
    attrs = tuple(draw(st.lists(st.tuples(short, short), max_size=3))) if caps & C.CONNECT_ATTRS else ()
    zstd = draw(st.integers(0, 255)) if caps & C.ZSTD_COMPRESSION else None
    auth = draw(nonul if not caps & (C.SECURE_CONNECTION | C.PLUGIN_AUTH_LENENC_CLIENT_DATA) else short)
    return HandshakeResponse41(Capability(caps), draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 255)),
                               draw(nonul), auth, database, plugin, attrs, zstd)


@st.composite
def ok_packets(draw: st.DrawFn) -> tuple[OkPacket, Capability]:
    caps = draw(caps_st)
    status = draw(status_st)
    changes = None
    if caps & C.SESSION_TRACK:
        changes = draw(short) if status & ServerStatus.SESSION_STATE_CHANGED else None
    return OkPacket(draw(st.integers(0, 2**64 - 1)), draw(st.integers(0, 2**64 - 1)), status,
                    draw(st.integers(0, 0xFFFF)), draw(short), changes, draw(st.sampled_from([0x00, 0xFE]))), caps


@given(msg=handshake_responses())
@settings(max_examples=200, deadline=None)
def test_handshake_response_round_trip(msg: HandshakeResponse41) -> None:
    assert HandshakeResponse41.decode(msg.encode()) == msg


@given(version=nonul, conn_id=st.integers(0, 2**32 - 1), data=st.binary(min_size=21, max_size=40),
       caps=caps_st, charset=st.integers(0, 255), status=status_st, plugin=nonul)
@settings(max_examples=200, deadline=None)
def test_greeting_round_trip(version: bytes, conn_id: int, data: bytes, caps: Capability, charset: int,
                             status: ServerStatus, plugin: bytes) -> None:
    caps |= C.SECURE_CONNECTION | C.PLUGIN_AUTH
    if caps & C.LONG_PASSWORD:
        caps &= Capability(0xFFFFFFFF)
    msg = HandshakeV10(version, conn_id, data, caps, charset, status, plugin)
    assert HandshakeV10.decode(msg.encode()) == msg


def test_extended_caps_need_client_mysql_clear() -> None:
    with pytest.raises(ValueError, match="CLIENT_MYSQL"):
        SSLRequest(C.LONG_PASSWORD | C.MARIADB_PROGRESS, 0, 8).encode()


@given(pair=ok_packets())
@settings(max_examples=200, deadline=None)
def test_ok_round_trip(pair: tuple[OkPacket, Capability]) -> None:
    msg, caps = pair
    if msg.header == 0xFE and len(msg.encode(caps)) < 7:
        return
    assert OkPacket.decode(msg.encode(caps), caps) == msg


@given(errno=st.integers(0, 0xFFFE), state=st.one_of(st.none(), st.binary(min_size=5, max_size=5)), msg=short)
def test_err_round_trip(errno: int, state: bytes | None, msg: bytes) -> None:
    if state is None and msg.startswith(b"#"):
        return  # ambiguous by construction: a message starting with '#' needs an SQLSTATE
    packet = ErrPacket(errno, state, msg)
    assert ErrPacket.decode(packet.encode()) == packet


@given(names=st.lists(short, min_size=6, max_size=6), ints=st.tuples(
    st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(0, 0xFFFF),
    st.integers(0, 255)), default=st.one_of(st.none(), short))
def test_column_definition_round_trip(names: list[bytes], ints: tuple[int, int, int, int, int],
                                      default: bytes | None) -> None:
    col = ColumnDefinition41(names[0], names[1], names[2], names[3], names[4], names[5], ints[0], ints[1],
                             ints[2], ColumnFlag(ints[3]), ints[4], None, default)
    assert ColumnDefinition41.decode(col.encode()) == col


@st.composite
def binary_rows(draw: st.DrawFn) -> tuple[list[int], list[bytes | None]]:
    cases = draw(st.lists(st.sampled_from(BINARY_CASES), max_size=20))
    types = [c[0] for c in cases]
    values: list[bytes | None] = [None if draw(st.booleans()) else c[3] for c in cases]
    return types, values


@given(row=binary_rows())
@settings(max_examples=200, deadline=None)
def test_binary_row_round_trip(row: tuple[list[int], list[bytes | None]]) -> None:
    types, values = row
    assert decode_binary_row(encode_binary_row(values, types), types) == values


@given(values=st.lists(st.one_of(st.none(), st.binary(max_size=300)), max_size=10))
def test_text_row_round_trip(values: list[bytes | None]) -> None:
    assert decode_text_row(encode_text_row(values), len(values)) == values


params_st = st.lists(st.sampled_from(BINARY_CASES).flatmap(
    lambda c: st.tuples(st.just(c), st.booleans(), short)), max_size=10).map(
    lambda items: tuple(QueryAttribute(c[0], c[1], name, None if null else c[3]) for (c, null, name) in items))


@given(params=params_st, stmt=st.integers(0, 2**32 - 1), flags=st.integers(0, 7), attrs=st.booleans())
@settings(max_examples=200, deadline=None)
def test_stmt_execute_round_trip(params: tuple[QueryAttribute, ...], stmt: int, flags: int, attrs: bool) -> None:
    caps = BASE_CLIENT | C.QUERY_ATTRIBUTES if attrs else BASE_CLIENT
    if not attrs:
        params = tuple(QueryAttribute(p.type, p.unsigned, b"", p.value) for p in params)
    msg = ComStmtExecute(stmt, flags, 1, params, True)
    assert ComStmtExecute.decode(msg.encode(caps), len(params), caps) == msg


@given(params=params_st, query=st.binary(max_size=30))
def test_com_query_attributes_round_trip(params: tuple[QueryAttribute, ...], query: bytes) -> None:
    caps = BASE_CLIENT | C.QUERY_ATTRIBUTES
    assert decode_command(ComQuery(query, params).encode(caps), caps) == ComQuery(query, params)


@given(user=nonul, auth=st.binary(max_size=255), schema=nonul, charset=st.integers(0, 0xFFFF),
       plugin=st.one_of(st.none(), nonul), attrs=st.lists(st.tuples(short, short), max_size=3))
def test_change_user_round_trip(user: bytes, auth: bytes, schema: bytes, charset: int, plugin: bytes | None,
                                attrs: list[tuple[bytes, bytes]]) -> None:
    caps = BASE_CLIENT | C.CONNECT_ATTRS
    msg = ComChangeUser(user, auth, schema, charset, plugin, tuple(attrs) if plugin is not None else None)
    assert decode_command(msg.encode(caps), caps) == msg


@given(stmt=st.integers(0, 2**32 - 1), n=st.integers(0, 2**32 - 1), param=st.integers(0, 0xFFFF), data=short)
def test_stmt_commands_round_trip(stmt: int, n: int, param: int, data: bytes) -> None:
    for msg in (ComStmtFetch(stmt, n), ComStmtClose(stmt), ComStmtReset(stmt), ComStmtSendLongData(stmt, param, data),
                ComProcessKill(n), ComSetOption(param), StmtPrepareOk(stmt, param, param, param)):
        decoded = StmtPrepareOk.decode(msg.encode()) if isinstance(msg, StmtPrepareOk) else decode_command(msg.encode())
        assert decoded == msg


@given(w=st.integers(0, 0xFFFF), status=status_st, name=st.binary(max_size=20), data=short)
def test_small_messages_round_trip(w: int, status: ServerStatus, name: bytes, data: bytes) -> None:
    assert EofPacket.decode(EofPacket(w, status).encode()) == EofPacket(w, status)
    assert LocalInfileRequest.decode(LocalInfileRequest(name).encode()) == LocalInfileRequest(name)
    assert AuthMoreData.decode(AuthMoreData(data).encode()) == AuthMoreData(data)
    if b"\x00" not in name:
        assert AuthSwitchRequest.decode(AuthSwitchRequest(name, data).encode()) == AuthSwitchRequest(name, data)


# ----------------------------------------------------------------------------- hypothesis: random bytes

DECODERS: list[Callable[[bytes], object]] = [
    HandshakeV10.decode,
    HandshakeResponse41.decode,
    decode_client_handshake,
    AuthSwitchRequest.decode,
    AuthMoreData.decode,
    lambda p: OkPacket.decode(p, BASE_CLIENT),
    lambda p: OkPacket.decode(p, BASE_CLIENT | C.SESSION_TRACK),
    ErrPacket.decode,
    EofPacket.decode,
    LocalInfileRequest.decode,
    decode_column_count,
    ColumnDefinition41.decode,
    lambda p: ColumnDefinition41.decode(p, C.MARIADB_EXTENDED_TYPE_INFO),
    lambda p: decode_text_row(p, 3),
    lambda p: decode_binary_row(p, [t for t, *_ in BINARY_CASES]),
    lambda p: decode_binary_row(p, [ColumnType.TIME, ColumnType.DATETIME, ColumnType.LONGLONG]),
    decode_command,
    lambda p: decode_command(p, BASE_CLIENT | C.QUERY_ATTRIBUTES | C.CONNECT_ATTRS,
                             param_counts={i: i % 4 for i in range(256)}),
    lambda p: decode_command(p, NO_CAPABILITIES, param_counts=dict.fromkeys(range(256), 2),
                             param_types={i: [(3, False), (12, False)] for i in range(256)}),
    StmtPrepareOk.decode,
]


@pytest.mark.parametrize("decoder", DECODERS)
@given(data=st.binary(max_size=80))
@settings(max_examples=150, deadline=None)
def test_random_bytes_only_protocol_violation(decoder: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(ProtocolViolation):
        decoder(data)


@pytest.mark.parametrize("decoder", DECODERS[:3] + DECODERS[-4:-1])
@given(data=st.data())
@settings(max_examples=150, deadline=None)
def test_mutated_golden_only_protocol_violation(decoder: Callable[[bytes], object], data: st.DataObject) -> None:
    base = data.draw(st.sampled_from([GOLDEN_MYSQL_GREETING, GOLDEN_MARIADB_GREETING, GOLDEN_RESPONSE_SECURE,
                                      GOLDEN_SSL_REQUEST, *[p for p, _ in GOLDEN_COMMANDS]]))
    cut = data.draw(st.integers(0, len(base)))
    flip = data.draw(st.integers(0, max(len(base) - 1, 0)))
    mutated = bytearray(base[:cut] + base[cut + 1:])
    if mutated:
        mutated[flip % len(mutated)] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(ProtocolViolation):
        decoder(bytes(mutated))


def _decoded(decode: Callable[..., list[bytes | None]], *args: object) -> object:
    try:
        return decode(*args)
    except ProtocolViolation as exc:
        return ("error", str(exc))


@given(row=binary_rows(), cut=st.integers(min_value=-3, max_value=3), junk=st.binary(max_size=3))
@settings(max_examples=400, deadline=None)
def test_binary_rows_read_inline_agree_with_the_strict_reader(row: tuple[list[int], list[bytes | None]],
                                                             cut: int, junk: bytes) -> None:
    # The inline reader is a shortcut: on every row, whole, cut short or with bytes after it,
    # it gives the strict reader's values or its error.
    types, values = row
    payload = encode_binary_row(values, types)
    payload = payload[:cut] + junk if cut < 0 else payload + junk[:cut]
    assert _decoded(decode_binary_row, payload, types) == \
        _decoded(messages._decode_binary_row_strictly, payload, types)


@given(payload=st.binary(max_size=40), count=st.integers(min_value=0, max_value=6))
@settings(max_examples=400, deadline=None)
def test_text_rows_read_inline_agree_with_the_strict_reader(payload: bytes, count: int) -> None:
    assert _decoded(decode_text_row, payload, count) == _decoded(messages._decode_text_row_strictly, payload, count)


@given(values=st.lists(st.one_of(st.none(), st.binary(max_size=300)), max_size=6), junk=st.binary(max_size=3))
@settings(max_examples=200, deadline=None)
def test_text_rows_with_long_values_read_inline_agree_with_the_strict_reader(values: list[bytes | None],
                                                                             junk: bytes) -> None:
    payload = encode_text_row(values) + junk
    for count in (len(values) - 1, len(values), len(values) + 1):
        assert _decoded(decode_text_row, payload, count) == \
            _decoded(messages._decode_text_row_strictly, payload, count)
