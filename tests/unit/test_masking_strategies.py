# tests/unit/test_masking_strategies.py — mask strategies on single wire values: every strategy
# on every supported PostgreSQL and MySQL type gives a value the real client decoders accept
# (psycopg's loaders for PostgreSQL text and binary; PyMySQL's converters for the MySQL text
# protocol, mysql-connector's binary row parser for the binary one), then what each strategy
# keeps (partial: the last four, email: the domain, hash: stable, keyed, join-preserving).
# Pure: no server, no socket.
from __future__ import annotations

import datetime
import ipaddress
import json
import re
import struct
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import mysql.connector.protocol
import pymysql.converters
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg.adapt import Transformer
from psycopg.pq import Format
from psycopg.types.numeric import DecimalBinaryDumper

from dbguard.masking import MysqlColumn, PgColumn, WireFormat, build_masker, mask_value
from dbguard.masking.columns import PgOid, mysql_charset, pg_codec
from dbguard.masking.strategies import is_plain_email_masker, mask_email, plain_addresses
from dbguard.policy.rules import MaskStrategy
from dbguard.wire.mysql.messages import ColumnFlag, ColumnType, encode_binary_row

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
TEXT, BINARY = WireFormat.TEXT, WireFormat.BINARY
ALL_STRATEGIES = list(MaskStrategy)


def varchar(n: int) -> int:
    return n + 4


def numeric_mod(precision: int, scale: int) -> int:
    return ((precision << 16) | scale) + 4


def pg_days(d: datetime.date) -> bytes:
    return struct.pack(">i", (d - datetime.date(2000, 1, 1)).days)


def pg_micros(t: datetime.datetime) -> bytes:
    base = datetime.datetime(2000, 1, 1, tzinfo=t.tzinfo)
    return struct.pack(">q", (t - base) // datetime.timedelta(microseconds=1))


def pg_numeric(value: Decimal) -> bytes:
    dumped = DecimalBinaryDumper(Decimal).dump(value)
    assert dumped is not None
    return bytes(dumped)


_U = uuid.UUID("9b2f4c1e-6a3d-4e5f-8a7b-1c2d3e4f5a6b")
_TS = datetime.datetime(2024, 2, 29, 12, 34, 56, 123000)
_TSTZ = datetime.datetime(2024, 2, 29, 11, 34, 56, 123000, tzinfo=datetime.UTC)

# (name, column, text value, binary value, the Python type psycopg loads)
PG_SAMPLES: list[tuple[str, PgColumn, bytes, bytes, type | tuple[type, ...]]] = [
    ("bool", PgColumn(PgOid.BOOL), b"t", b"\x01", bool),
    ("bytea", PgColumn(PgOid.BYTEA), b"\\x68656c6c6f2d776f726c64", b"hello-world", bytes),
    ('"char"', PgColumn(PgOid.CHAR), b"a", b"a", str),
    ("name", PgColumn(PgOid.NAME), b"alice_admin", b"alice_admin", str),
    ("int2", PgColumn(PgOid.INT2), b"1234", struct.pack(">h", 1234), int),
    ("int4", PgColumn(PgOid.INT4), b"-123456", struct.pack(">i", -123456), int),
    ("int8", PgColumn(PgOid.INT8), b"1234567890123", struct.pack(">q", 1234567890123), int),
    ("text", PgColumn(PgOid.TEXT), b"alice@example.com", b"alice@example.com", str),
    ("json", PgColumn(PgOid.JSON), b'{"email": "a@b.com"}', b'{"email": "a@b.com"}', (dict, str)),
    ("json-string", PgColumn(PgOid.JSON), b'"bob@example.org"', b'"bob@example.org"', (dict, str)),
    ("jsonb", PgColumn(PgOid.JSONB), b'{"n": 1}', b'\x01{"n": 1}', (dict, str)),
    ("jsonb-string", PgColumn(PgOid.JSONB), b'"+1 415 555 2671"', b'\x01"+1 415 555 2671"', (dict, str)),
    ("cidr", PgColumn(PgOid.CIDR), b"10.0.0.0/8", bytes([2, 8, 1, 4, 10, 0, 0, 0]), ipaddress.IPv4Network),
    ("unknown", PgColumn(PgOid.UNKNOWN), b"literal", b"literal", (str, bytes)),  # no binary loader
    ("float4", PgColumn(PgOid.FLOAT4), b"1.1", struct.pack(">f", 1.1), float),
    ("float8", PgColumn(PgOid.FLOAT8), b"2.25", struct.pack(">d", 2.25), float),
    ("inet", PgColumn(PgOid.INET), b"192.168.1.10", bytes([2, 32, 0, 4, 192, 168, 1, 10]), ipaddress.IPv4Address),
    ("bpchar(10)", PgColumn(PgOid.BPCHAR, varchar(10)), b"AB12345678", b"AB12345678", str),
    ("bpchar(8) padded", PgColumn(PgOid.BPCHAR, varchar(8)), b"XY9     ", b"XY9     ", str),
    ("varchar(20)", PgColumn(PgOid.VARCHAR, varchar(20)), b"+1 415 555 2671", b"+1 415 555 2671", str),
    ("varchar", PgColumn(PgOid.VARCHAR), "Zoë Müller".encode(), "Zoë Müller".encode(), str),
    ("date", PgColumn(PgOid.DATE), b"2024-02-29", pg_days(datetime.date(2024, 2, 29)), datetime.date),
    ("time", PgColumn(PgOid.TIME), b"12:34:56.5", struct.pack(">q", 45296500000), datetime.time),
    ("timetz", PgColumn(PgOid.TIMETZ), b"12:34:56+02", struct.pack(">qi", 45296000000, -7200), datetime.time),
    ("timestamp", PgColumn(PgOid.TIMESTAMP), b"2024-02-29 12:34:56.123", pg_micros(_TS), datetime.datetime),
    (
        "timestamptz",
        PgColumn(PgOid.TIMESTAMPTZ),
        b"2024-02-29 12:34:56.123+01",
        pg_micros(_TSTZ),
        datetime.datetime,
    ),
    (
        "numeric(10,2)",
        PgColumn(PgOid.NUMERIC, numeric_mod(10, 2)),
        b"12345.67",
        pg_numeric(Decimal("12345.67")),
        Decimal,
    ),
    (
        "numeric",
        PgColumn(PgOid.NUMERIC),
        b"-0.000123",
        pg_numeric(Decimal("-0.000123")),
        Decimal,
    ),
    ("uuid", PgColumn(PgOid.UUID), str(_U).encode(), _U.bytes, uuid.UUID),
]
PG_IDS = [s[0] for s in PG_SAMPLES]

_TX = Transformer()


def pg_load(column: PgColumn, fmt: WireFormat, value: bytes) -> Any:
    """Decode as psycopg does (what a client sees); raises if the value is malformed."""
    return _TX.get_loader(column.type_oid, Format(fmt)).load(value)


def pg_strict_check(column: PgColumn, fmt: WireFormat, value: bytes) -> None:
    """What psycopg's loaders let through but PostgreSQL's input functions would not."""
    oid = column.type_oid
    if fmt is TEXT:
        text = value.decode("utf-8")
        if oid == PgOid.BOOL:
            assert text in ("t", "f")
        if oid in (PgOid.INT2, PgOid.INT4, PgOid.INT8):
            n = int(text)
            bits = {PgOid.INT2: 16, PgOid.INT4: 32, PgOid.INT8: 64}[PgOid(oid)]
            assert -(2 ** (bits - 1)) <= n < 2 ** (bits - 1)
        if oid in (PgOid.JSON, PgOid.JSONB):
            json.loads(text)
        if oid == PgOid.BPCHAR and column.type_modifier >= 4:
            assert len(text) == column.type_modifier - 4
        if oid == PgOid.VARCHAR and column.type_modifier >= 4:
            assert len(text) <= column.type_modifier - 4
        if oid == PgOid.CHAR:
            assert len(value) == 1
        if oid == PgOid.NUMERIC and column.type_modifier >= 4:
            precision, scale = (column.type_modifier - 4) >> 16, (column.type_modifier - 4) & 0xFFFF
            d = Decimal(text)
            assert len(d.as_tuple().digits) <= precision
            exponent = d.as_tuple().exponent
            assert isinstance(exponent, int)
            assert -exponent <= scale
    else:
        if oid == PgOid.JSONB:
            assert value[:1] == b"\x01"
            json.loads(value[1:])
        if oid == PgOid.JSON:
            json.loads(value)
        fixed = {PgOid.INT2: 2, PgOid.INT4: 4, PgOid.INT8: 8, PgOid.FLOAT4: 4, PgOid.FLOAT8: 8, PgOid.DATE: 4}
        fixed |= {PgOid.TIME: 8, PgOid.TIMESTAMP: 8, PgOid.TIMESTAMPTZ: 8, PgOid.TIMETZ: 12, PgOid.UUID: 16}
        fixed |= {PgOid.BOOL: 1}
        if oid in fixed:
            assert len(value) == fixed[PgOid(oid)]


# ---------------------------------------------------------------------------------------------
# PostgreSQL: every strategy x type x format decodes


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
@pytest.mark.parametrize("fmt", [TEXT, BINARY])
@pytest.mark.parametrize(("name", "column", "text", "binary", "pytype"), PG_SAMPLES, ids=PG_IDS)
def test_pg_every_strategy_gives_a_value_the_client_decodes(
    strategy: MaskStrategy,
    fmt: WireFormat,
    name: str,
    column: PgColumn,
    text: bytes,
    binary: bytes,
    pytype: type | tuple[type, ...],
) -> None:
    raw = text if fmt is TEXT else binary
    pg_load(column, fmt, raw)  # the sample itself is what a server sends
    out = mask_value(strategy, raw, column, fmt, key=KEY)
    if strategy is MaskStrategy.NULL:
        assert out is None
        return
    assert out is not None, f"{name}: only the null strategy gives NULL for a supported type"
    assert out != raw, f"{name}: {strategy} left the value unchanged"
    loaded = pg_load(column, fmt, out)
    assert isinstance(loaded, pytype), (name, loaded)
    pg_strict_check(column, fmt, out)


@pytest.mark.parametrize("fmt", [TEXT, BINARY])
def test_pg_full_values_per_type(fmt: WireFormat) -> None:
    def full(column: PgColumn, raw_text: bytes, raw_binary: bytes) -> Any:
        out = mask_value(MaskStrategy.FULL, raw_text if fmt is TEXT else raw_binary, column, fmt)
        assert out is not None
        return pg_load(column, fmt, out)

    by_name = {s[0]: s for s in PG_SAMPLES}

    def sample(name: str) -> Any:
        _, column, text, binary, _ = by_name[name]
        return full(column, text, binary)

    assert sample("text") == "****"
    assert sample("varchar") == "****"
    assert sample("bpchar(10)") == "*" * 10
    assert sample("bpchar(8) padded") == "*" * 8
    assert sample('"char"') == "*"
    assert sample("int4") == 0
    assert sample("int8") == 0
    assert sample("float8") == 0.0
    assert sample("numeric(10,2)") == Decimal("0.00")
    assert sample("date") == datetime.date(1970, 1, 1)
    assert sample("timestamp") == datetime.datetime(1970, 1, 1)
    assert sample("timestamptz") == datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    assert sample("time") == datetime.time(0, 0)
    assert sample("uuid") == uuid.UUID(int=0)
    assert sample("json") == "****"
    assert sample("jsonb") == "****"
    assert sample("bool") is False
    assert sample("inet") == ipaddress.ip_address("0.0.0.0")
    assert sample("bytea") == b"****"


def test_pg_varchar_shorter_than_the_mask_keeps_its_limit() -> None:
    column = PgColumn(PgOid.VARCHAR, varchar(2))
    assert mask_value(MaskStrategy.FULL, b"ab", column) == b"**"
    assert mask_value(MaskStrategy.HASH, b"ab", column, key=KEY) is not None
    assert len(mask_value(MaskStrategy.HASH, b"ab", column, key=KEY) or b"") == 2
    # '****@x.org' would not fit varchar(6): the full mask instead
    assert mask_value(MaskStrategy.EMAIL, b"a@x.org", PgColumn(PgOid.VARCHAR, varchar(7))) == b"****"


@pytest.mark.parametrize("oid", [1009, 1007, 142, 790, 1186, 3614, 999_999])
@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
@pytest.mark.parametrize("fmt", [TEXT, BINARY])
def test_pg_types_without_a_masked_form_become_null(oid: int, strategy: MaskStrategy, fmt: WireFormat) -> None:
    """Arrays, xml, money, interval, tsvector, user types (enums, domains...): NULL, never text
    bytes a decoder would choke on."""
    assert mask_value(strategy, b"{a,b}", PgColumn(oid), fmt, key=KEY) is None


def test_pg_binary_slots_never_get_text() -> None:
    for _, column, text, binary, _ in PG_SAMPLES:
        if column.type_oid in (PgOid.INT4, PgOid.INT8, PgOid.DATE, PgOid.UUID, PgOid.TIMESTAMP, PgOid.NUMERIC):
            for strategy in (MaskStrategy.FULL, MaskStrategy.PARTIAL, MaskStrategy.EMAIL, MaskStrategy.HASH):
                out = mask_value(strategy, binary, column, BINARY, key=KEY)
                assert out is not None
                assert b"*" not in out or column.type_oid == PgOid.NUMERIC
                assert out != text


# ---------------------------------------------------------------------------------------------
# partial


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("4111111111111111", "************1111"),
        ("+1 415 555 2671", "***********2671"),
        ("Zoë Müller", "******ller"),
        ("ÅÄÖ-ü1234", "*****1234"),
        ("abcd", "****"),
        ("abc", "***"),
        ("", ""),
    ],
)
def test_partial_keeps_the_last_four_characters(value: str, expected: str) -> None:
    out = mask_value(MaskStrategy.PARTIAL, value.encode(), PgColumn(PgOid.TEXT))
    assert out is not None
    assert out.decode() == expected
    assert len(out.decode()) == len(value)


def test_partial_on_char_n_masks_the_value_and_keeps_the_padding() -> None:
    out = mask_value(MaskStrategy.PARTIAL, b"SECRET12  ", PgColumn(PgOid.BPCHAR, varchar(10)))
    assert out == b"****ET12  "


def test_partial_in_a_single_byte_client_encoding() -> None:
    column = PgColumn(PgOid.TEXT, encoding=pg_codec("LATIN1"))
    out = mask_value(MaskStrategy.PARTIAL, "Zoë Müller".encode("latin-1"), column)
    assert out == "******ller".encode("latin-1")
    # bytes that are not text in the encoding: the full mask, never a split character
    bad = mask_value(MaskStrategy.PARTIAL, b"\xff\xfe\xfd\xfc\xfb\xfa", PgColumn(PgOid.TEXT))
    assert bad == b"****"


def test_partial_on_numbers_and_dates_is_the_full_mask() -> None:
    assert mask_value(MaskStrategy.PARTIAL, b"123456789", PgColumn(PgOid.INT8)) == b"0"
    assert mask_value(MaskStrategy.PARTIAL, b"2024-02-29", PgColumn(PgOid.DATE)) == b"1970-01-01"


def test_partial_inside_a_json_string_and_bytea() -> None:
    out = mask_value(MaskStrategy.PARTIAL, b'"4111111111111111"', PgColumn(PgOid.JSONB))
    assert out is not None
    assert json.loads(out) == "************1111"
    out = mask_value(MaskStrategy.PARTIAL, b"\\x3132333435363738", PgColumn(PgOid.BYTEA))
    assert out is not None
    assert pg_load(PgColumn(PgOid.BYTEA), TEXT, out) == b"****5678"


# ---------------------------------------------------------------------------------------------
# email


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("john.doe@example.com", "****@example.com"),
        ("a@b.co", "****@b.co"),
        ("  padded@mail.example.org", "****@mail.example.org"),
        ("not an email", "****"),
        ("", "****"),
        ("two@at@signs.com", "****"),
    ],
)
def test_email_keeps_the_domain_and_falls_back_to_full(value: str, expected: str) -> None:
    out = mask_value(MaskStrategy.EMAIL, value.encode(), PgColumn(PgOid.VARCHAR, varchar(255)))
    assert out is not None
    assert out.decode() == expected


def test_email_in_char_n_is_padded_and_in_json_stays_json() -> None:
    out = mask_value(MaskStrategy.EMAIL, b"jo@ex.io            ", PgColumn(PgOid.BPCHAR, varchar(20)))
    assert out == b"****@ex.io          "
    out = mask_value(MaskStrategy.EMAIL, b'"bob@example.org"', PgColumn(PgOid.JSON))
    assert out is not None
    assert json.loads(out) == "****@example.org"
    assert mask_value(MaskStrategy.EMAIL, b'{"e": "bob@example.org"}', PgColumn(PgOid.JSON)) == b'"****"'


def test_email_on_non_text_types_is_the_full_mask() -> None:
    assert mask_value(MaskStrategy.EMAIL, _U.bytes, PgColumn(PgOid.UUID), BINARY) == bytes(16)


# ---------------------------------------------------------------------------------------------
# hash


def test_hash_is_stable_keyed_and_distinguishes_values() -> None:
    column = PgColumn(PgOid.TEXT)
    a1 = mask_value(MaskStrategy.HASH, b"alice@example.com", column, key=KEY)
    a2 = mask_value(MaskStrategy.HASH, b"alice@example.com", column, key=KEY)
    b = mask_value(MaskStrategy.HASH, b"bob@example.com", column, key=KEY)
    other = mask_value(MaskStrategy.HASH, b"alice@example.com", column, key=OTHER_KEY)
    assert a1 == a2
    assert a1 != b
    assert a1 != other
    assert a1 is not None
    assert len(a1) == 16
    int(a1, 16)  # hex
    assert b"alice" not in a1


def test_hash_needs_a_key() -> None:
    with pytest.raises(ValueError, match="key"):
        build_masker(MaskStrategy.HASH, PgColumn(PgOid.TEXT))


def test_hash_joins_across_columns_formats_and_databases() -> None:
    """The same value hashes to the same masked value in text and varchar columns, in char(n)
    (without its padding), in a JSON string, and through MySQL."""
    def h(value: bytes, column: PgColumn | MysqlColumn, fmt: WireFormat = TEXT) -> bytes | None:
        return mask_value(MaskStrategy.HASH, value, column, fmt, key=KEY)

    ref = h(b"C-1042", PgColumn(PgOid.TEXT))
    assert ref is not None
    assert h(b"C-1042", PgColumn(PgOid.VARCHAR, varchar(40))) == ref
    assert h(b"C-1042", PgColumn(PgOid.TEXT), BINARY) == ref
    assert h(b"C-1042", MysqlColumn(ColumnType.VAR_STRING, 255, 160)) == ref
    assert h(b"C-1042", MysqlColumn(ColumnType.VAR_STRING, 8, 40)) == ref  # latin1
    bp = h(b"C-1042    ", PgColumn(PgOid.BPCHAR, varchar(10)))
    assert bp is not None
    assert bp == ref[:10]
    js = h(b'"C-1042"', PgColumn(PgOid.JSONB))
    assert js is not None
    assert json.loads(js) == ref.decode()


# psycopg has no binary loader for `unknown`: that type is compared without it.
_LOADABLE = [(sample, ident) for sample, ident in zip(PG_SAMPLES, PG_IDS, strict=True)
             if sample[1].type_oid != PgOid.UNKNOWN]


@pytest.mark.parametrize(("name", "column", "text", "binary", "pytype"), [s for s, _ in _LOADABLE],
                         ids=[i for _, i in _LOADABLE])
def test_hash_is_the_same_in_text_and_binary_format(
    name: str, column: PgColumn, text: bytes, binary: bytes, pytype: type | tuple[type, ...]
) -> None:
    from_text = mask_value(MaskStrategy.HASH, text, column, TEXT, key=KEY)
    from_binary = mask_value(MaskStrategy.HASH, binary, column, BINARY, key=KEY)
    assert from_text is not None
    assert from_binary is not None
    assert pg_load(column, TEXT, from_text) == pg_load(column, BINARY, from_binary)


def test_hash_of_numbers_stays_in_range_and_differs() -> None:
    seen = set()
    for oid, bits in ((PgOid.INT2, 16), (PgOid.INT4, 32), (PgOid.INT8, 64)):
        for i in range(200):
            out = mask_value(MaskStrategy.HASH, b"%d" % i, PgColumn(oid), key=KEY)
            assert out is not None
            n = int(out)
            assert 0 <= n < 2 ** (bits - 1)
            if oid == PgOid.INT8:
                seen.add(n)
    assert len(seen) == 200
    out = mask_value(MaskStrategy.HASH, b"12345.67", PgColumn(PgOid.NUMERIC, numeric_mod(5, 2)), key=KEY)
    assert out is not None
    assert Decimal(out.decode()) < 1000
    assert out.endswith(b".00")


def test_hash_of_a_uuid_is_a_version_8_uuid_and_dates_stay_in_range() -> None:
    out = mask_value(MaskStrategy.HASH, str(_U).encode(), PgColumn(PgOid.UUID), key=KEY)
    assert out is not None
    assert uuid.UUID(out.decode()).version == 8
    for i in range(50):
        d = mask_value(MaskStrategy.HASH, b"2001-01-%02d" % (i % 28 + 1), PgColumn(PgOid.DATE), key=KEY)
        assert d is not None
        assert datetime.date(1970, 1, 1) <= datetime.date.fromisoformat(d.decode()) < datetime.date(2038, 1, 20)


def test_hash_of_a_long_char_n_fills_its_length() -> None:
    column = PgColumn(PgOid.BPCHAR, varchar(20))
    out = mask_value(MaskStrategy.HASH, b"ABC                 ", column, key=KEY)
    assert out is not None
    assert len(out) == 20
    assert out.rstrip() == out[:16]
    text_form = mask_value(MaskStrategy.HASH, b"ABC", PgColumn(PgOid.TEXT), key=KEY)
    assert out.rstrip() == text_form  # char(20) = text compares ignoring the padding


# ---------------------------------------------------------------------------------------------
# The per-column masker


def test_a_masker_is_built_once_and_is_one_call_per_value() -> None:
    column = PgColumn(PgOid.VARCHAR, varchar(64))
    masker = build_masker(MaskStrategy.PARTIAL, column, TEXT)
    assert build_masker(MaskStrategy.PARTIAL, column, TEXT) is masker
    assert masker(b"4111111111111111") == b"************1111"
    full = build_masker(MaskStrategy.FULL, PgColumn(PgOid.INT4), BINARY)
    assert full(b"\x00\x00\x00\x01") is full(b"\x00\x00\x00\x02")  # a constant
    assert mask_value(MaskStrategy.FULL, None, column) is None


def test_format_codes_are_checked() -> None:
    assert build_masker(MaskStrategy.FULL, PgColumn(PgOid.INT4), 1)(b"\x00\x00\x00\x07") == bytes(4)
    with pytest.raises(ValueError, match="2"):
        build_masker(MaskStrategy.FULL, PgColumn(PgOid.INT4), 2)


# ---------------------------------------------------------------------------------------------
# MySQL: text protocol values through PyMySQL's converters, binary protocol rows through
# mysql-connector's parser

UTF8MB4 = 255


def my(
    column_type: int, charset: int = UTF8MB4, length: int = 0, decimals: int = 0, unsigned: bool = False
) -> MysqlColumn:
    return MysqlColumn(column_type, charset, length, decimals, unsigned)


# (name, column, text protocol value, binary protocol value, Python types the client gives)
MY_SAMPLES: list[tuple[str, MysqlColumn, bytes, bytes, type | tuple[type, ...]]] = [
    ("varchar(50)", my(ColumnType.VAR_STRING, length=200), b"alice@example.com", b"alice@example.com", str),
    ("char(10)", my(ColumnType.STRING, length=40), b"AB12", b"AB12", str),
    ("varchar(3)", my(ColumnType.VAR_STRING, 33, 9), b"abc", b"abc", str),
    ("latin1 varchar", my(ColumnType.VAR_STRING, 8, 100), "Zoë Müller".encode("cp1252"), "Zoë".encode("cp1252"), str),
    ("text", my(ColumnType.BLOB, 45, 262140), b"call +1 415 555 2671", b"call +1 415 555 2671", str),
    ("varbinary(16)", my(ColumnType.VAR_STRING, 63, 16), b"\x01\x02secret", b"\x01\x02secret", bytes),
    ("binary(8)", my(ColumnType.STRING, 63, 8), b"ABCDEFGH", b"ABCDEFGH", bytes),
    ("blob", my(ColumnType.BLOB, 63, 65535), b"\x00\xffraw", b"\x00\xffraw", bytes),
    ("tinyint", my(ColumnType.TINY, 63, 4), b"-12", struct.pack("<b", -12), int),
    ("smallint unsigned", my(ColumnType.SHORT, 63, 5, unsigned=True), b"65000", struct.pack("<H", 65000), int),
    ("mediumint", my(ColumnType.INT24, 63, 9), b"-8000000", struct.pack("<i", -8000000), int),
    ("int", my(ColumnType.LONG, 63, 11), b"2147483647", struct.pack("<i", 2147483647), int),
    ("bigint", my(ColumnType.LONGLONG, 63, 20), b"-9000000000", struct.pack("<q", -9000000000), int),
    (
        "bigint unsigned",
        my(ColumnType.LONGLONG, 63, 20, unsigned=True),
        b"18446744073709551615",
        struct.pack("<Q", 2**64 - 1),
        int,
    ),
    ("float", my(ColumnType.FLOAT, 63, 12, 31), b"1.5", struct.pack("<f", 1.5), float),
    ("double", my(ColumnType.DOUBLE, 63, 22, 31), b"2.25", struct.pack("<d", 2.25), float),
    ("decimal(10,2)", my(ColumnType.NEWDECIMAL, 63, 12, 2), b"12345.67", b"12345.67", Decimal),
    ("date", my(ColumnType.DATE, 63, 10), b"2024-02-29", struct.pack("<HBB", 2024, 2, 29), datetime.date),
    (
        "datetime(3)",
        my(ColumnType.DATETIME, 63, 23, 3),
        b"2024-02-29 12:34:56.123",
        struct.pack("<HBBBBBI", 2024, 2, 29, 12, 34, 56, 123000),
        datetime.datetime,
    ),
    (
        "timestamp",
        my(ColumnType.TIMESTAMP, 63, 19),
        b"2024-02-29 12:34:56",
        struct.pack("<HBBBBB", 2024, 2, 29, 12, 34, 56),
        datetime.datetime,
    ),
    ("time", my(ColumnType.TIME, 63, 10), b"12:34:56", struct.pack("<BIBBB", 0, 0, 12, 34, 56), datetime.timedelta),
    ("json", my(ColumnType.JSON, 63, 4294967295), b'{"a": [1, 2]}', b'{"a": [1, 2]}', str),
    ("json-string", my(ColumnType.JSON, 63, 4294967295), b'"a@b.com"', b'"a@b.com"', str),
]
MY_IDS = [s[0] for s in MY_SAMPLES]

_PROTOCOL = mysql.connector.protocol.MySQLProtocol()
_MYSQL_TEXT_TYPES = (ColumnType.VAR_STRING, ColumnType.STRING, ColumnType.VARCHAR, ColumnType.BLOB, ColumnType.BIT)


def mysql_text_load(column: MysqlColumn, value: bytes) -> Any:
    """As PyMySQL reads a text-protocol value: decoded in the charset unless binary, then the
    type's converter (which returns the string unchanged when it cannot parse a date)."""
    codec, _ = mysql_charset(column.character_set)
    data: Any = value
    if column.column_type == ColumnType.JSON:
        data = value.decode("utf-8")
    elif column.column_type not in _MYSQL_TEXT_TYPES:
        data = value.decode("ascii")
    elif codec is not None:
        data = value.decode(codec)
    convert: Callable[[Any], Any] | None = pymysql.converters.decoders.get(column.column_type)
    return convert(data) if convert is not None else data


def mysql_binary_load(column: MysqlColumn, value: bytes | None) -> Any:
    """Frame the value in a binary row and parse the row with mysql-connector."""
    payload = encode_binary_row([value, b"end"], [column.column_type, ColumnType.VAR_STRING])
    flags = ColumnFlag.UNSIGNED if column.unsigned else 0
    fields: Any = [
        ("c", column.column_type, None, None, None, None, 1, int(flags), column.character_set),
        ("end", ColumnType.VAR_STRING, None, None, None, None, 1, 0, UTF8MB4),
    ]
    codec, _ = mysql_charset(column.character_set)
    values = _PROTOCOL._parse_binary_values(fields, payload[1:], codec or "utf-8")
    assert values[1] == "end", "the value's length was wrong: the next column is garbage"
    return values[0]


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
@pytest.mark.parametrize(("name", "column", "text", "binary", "pytype"), MY_SAMPLES, ids=MY_IDS)
def test_mysql_text_protocol_values_decode(
    strategy: MaskStrategy, name: str, column: MysqlColumn, text: bytes, binary: bytes, pytype: Any
) -> None:
    assert isinstance(mysql_text_load(column, text), pytype)
    out = mask_value(strategy, text, column, TEXT, key=KEY)
    if strategy is MaskStrategy.NULL:
        assert out is None
        return
    assert out is not None
    assert out != text
    loaded = mysql_text_load(column, out)
    assert isinstance(loaded, pytype), (name, loaded)  # a date that does not parse stays a str
    if column.column_type == ColumnType.JSON:
        json.loads(loaded)
    _, mbmaxlen = mysql_charset(column.character_set)
    if isinstance(loaded, str) and column.column_type in (ColumnType.VAR_STRING, ColumnType.STRING):
        assert len(loaded) <= column.column_length // mbmaxlen


@pytest.mark.parametrize("strategy", ALL_STRATEGIES)
@pytest.mark.parametrize(("name", "column", "text", "binary", "pytype"), MY_SAMPLES, ids=MY_IDS)
def test_mysql_binary_protocol_values_decode(
    strategy: MaskStrategy, name: str, column: MysqlColumn, text: bytes, binary: bytes, pytype: Any
) -> None:
    if column.column_type == ColumnType.JSON:
        pytype = (str, bytes)
    assert isinstance(mysql_binary_load(column, binary), pytype)
    out = mask_value(strategy, binary, column, BINARY, key=KEY)
    loaded = mysql_binary_load(column, out)
    if strategy is MaskStrategy.NULL:
        assert out is None
        assert loaded is None
        return
    assert out is not None
    assert isinstance(loaded, pytype), (name, loaded)


def test_mysql_full_values() -> None:
    def full_text(column: MysqlColumn, value: bytes) -> Any:
        out = mask_value(MaskStrategy.FULL, value, column, TEXT)
        assert out is not None
        return mysql_text_load(column, out)

    by_name = {s[0]: s for s in MY_SAMPLES}
    text_of = {name: full_text(s[1], s[2]) for name, s in by_name.items()}
    assert text_of["varchar(50)"] == "****"
    assert text_of["varchar(3)"] == "***"
    assert text_of["int"] == 0
    assert text_of["decimal(10,2)"] == Decimal("0.00")
    assert text_of["date"] == datetime.date(1970, 1, 1)
    assert text_of["datetime(3)"] == datetime.datetime(1970, 1, 1)
    assert text_of["time"] == datetime.timedelta(0)
    assert json.loads(text_of["json"]) == "****"
    assert text_of["binary(8)"] == b"********"
    out = mask_value(MaskStrategy.FULL, struct.pack("<HBB", 2024, 2, 29), by_name["date"][1], BINARY)
    assert mysql_binary_load(by_name["date"][1], out) == datetime.date(1970, 1, 1)


def test_mysql_year_bit_and_geometry() -> None:
    year = my(ColumnType.YEAR, 63, 4, unsigned=True)
    out = mask_value(MaskStrategy.HASH, struct.pack("<H", 2024), year, BINARY, key=KEY)
    assert out is not None
    assert len(out) == 2
    assert 1901 <= struct.unpack("<H", out)[0] <= 2155
    text_year = mask_value(MaskStrategy.HASH, b"2024", year, TEXT, key=KEY)
    assert text_year is not None
    assert pymysql.converters.decoders[ColumnType.YEAR](text_year.decode()) == struct.unpack("<H", out)[0]
    bit = my(ColumnType.BIT, 63, 16)
    assert mask_value(MaskStrategy.FULL, b"\x12\x34", bit, BINARY) == b"\x00\x00"
    hashed = mask_value(MaskStrategy.HASH, b"\x12\x34", bit, TEXT, key=KEY)
    assert hashed is not None
    assert len(hashed) == 2
    for strategy in ALL_STRATEGIES:
        assert mask_value(strategy, b"\x00\x00\x00\x00\x01\x01", my(ColumnType.GEOMETRY, 63), BINARY, key=KEY) is None


def test_mysql_hash_is_the_same_in_both_protocols() -> None:
    for name, column, text, binary, _ in MY_SAMPLES:
        from_text = mask_value(MaskStrategy.HASH, text, column, TEXT, key=KEY)
        from_binary = mask_value(MaskStrategy.HASH, binary, column, BINARY, key=KEY)
        if name == "latin1 varchar":
            continue  # the two samples differ on purpose
        assert mysql_text_load(column, from_text or b"") == mysql_binary_load(column, from_binary) or (
            column.column_type == ColumnType.JSON
        ), name


def test_mysql_and_postgres_hash_equal_values_alike() -> None:
    pg = mask_value(MaskStrategy.HASH, b"42", PgColumn(PgOid.INT4), key=KEY)
    mysql_int = mask_value(MaskStrategy.HASH, b"42", my(ColumnType.LONG, 63, 11), key=KEY)
    assert pg == mysql_int
    pg_date = mask_value(MaskStrategy.HASH, pg_days(datetime.date(2024, 2, 29)), PgColumn(PgOid.DATE), BINARY, key=KEY)
    my_date = mask_value(MaskStrategy.HASH, b"2024-02-29", my(ColumnType.DATE, 63), key=KEY)
    assert pg_date is not None
    assert my_date is not None
    assert pg_load(PgColumn(PgOid.DATE), BINARY, pg_date).isoformat().encode() == my_date


@given(st.text(alphabet="a.@ \t\x1c\x1f\x00\n\x0bé\x85\u00a0b", max_size=10))
def test_email_fast_path_on_bytes_agrees_with_the_text_rule(text: str) -> None:
    """The e-mail strategy masks ASCII addresses without decoding; it must say exactly what
    mask_email says on the decoded text, whitespace and non-ASCII included."""
    masker = build_masker(MaskStrategy.EMAIL, PgColumn(PgOid.TEXT), WireFormat.TEXT)
    expected = mask_email(text)
    assert masker(text.encode()) == (expected.encode() if expected is not None else b"****")


# A plain address: what `plain_addresses` accepts, and what the PostgreSQL row rewriter then
# masks itself (`****@` + what follows the '@') instead of calling the masker.
_PLAIN_ADDRESS = re.compile(rb"[\x21-\x3f\x41-\x7f]+@[\x21-\x3f\x41-\x7f]+")
_ADDRESS_BYTES = st.sampled_from(b"ab.Z9-_+@@ \t\x00\x1c\x7f\x80\xe9")


@given(st.lists(st.one_of(st.binary(max_size=8), st.lists(_ADDRESS_BYTES, max_size=8).map(bytes)), max_size=6))
def test_plain_addresses_are_masked_by_cutting_the_local_part(values: list[bytes]) -> None:
    masker = build_masker(MaskStrategy.EMAIL, PgColumn(PgOid.TEXT), WireFormat.TEXT)
    assert is_plain_email_masker(masker)
    assert plain_addresses(values) == all(_PLAIN_ADDRESS.fullmatch(v) for v in values)
    for value in values:
        if plain_addresses([value]):
            assert masker(value) == b"****" + value[value.index(b"@") :]


@pytest.mark.parametrize(("column", "fmt"), [
    (PgColumn(PgOid.VARCHAR, varchar(255)), TEXT),  # a length limit: the masker checks it
    (PgColumn(PgOid.BPCHAR, varchar(20)), TEXT),  # char(n): padded
    (PgColumn(PgOid.TEXT, -1, pg_codec("SJIS")), TEXT),  # ASCII is not its own bytes everywhere
    (PgColumn(PgOid.JSON), TEXT),
    (PgColumn(PgOid.INT4), BINARY),
])
def test_only_the_plain_text_email_masker_lets_callers_cut_addresses(column: PgColumn, fmt: WireFormat) -> None:
    assert not is_plain_email_masker(build_masker(MaskStrategy.EMAIL, column, fmt))
    assert not is_plain_email_masker(build_masker(MaskStrategy.FULL, PgColumn(PgOid.TEXT), TEXT))
    assert is_plain_email_masker(build_masker(MaskStrategy.EMAIL, PgColumn(PgOid.TEXT), BINARY))
