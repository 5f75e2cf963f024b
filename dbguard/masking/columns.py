"""Column type descriptors for masking, and what kind of value each one carries.

Owns: `PgColumn` (type OID, typmod, client encoding) and `MysqlColumn` (column type code,
character set, length, decimals, unsigned), the wire format (`WireFormat`), the PostgreSQL
OIDs and MySQL character sets masking knows, and `shape_of(column)`: the `ColumnShape` a
masker is built from (the kind of value, its length limits, integer width, scale, codec).
Must not: produce masked values (`masking.strategies`), or read messages off the wire (the
sessions fill these descriptors from RowDescription / ColumnDefinition41). The MySQL column
types (`wire.mysql.messages`, ~1 MiB of classes) are imported at the first MySQL column, so a
PostgreSQL-only proxy does not load the MySQL wire format.
"""

from __future__ import annotations

import codecs
import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, NamedTuple

__all__ = [
    "MYSQL_BINARY_CHARSET",
    "ColumnKind",
    "ColumnShape",
    "Dialect",
    "MysqlColumn",
    "PgColumn",
    "PgOid",
    "WireFormat",
    "mysql_charset",
    "pg_codec",
    "shape_of",
]


class WireFormat(enum.IntEnum):
    """PostgreSQL format codes; for MySQL, the text protocol (COM_QUERY) or the binary one
    (COM_STMT_EXECUTE result rows)."""

    TEXT = 0
    BINARY = 1


class Dialect(enum.Enum):
    POSTGRES = "postgres"
    MYSQL = "mysql"


class PgOid(enum.IntEnum):
    """The built-in PostgreSQL type OIDs masking produces values for (pg_type.dat)."""

    BOOL = 16
    BYTEA = 17
    CHAR = 18  # "char": one byte
    NAME = 19
    INT8 = 20
    INT2 = 21
    INT4 = 23
    TEXT = 25
    JSON = 114
    CIDR = 650
    UNKNOWN = 705
    FLOAT4 = 700
    FLOAT8 = 701
    INET = 869
    BPCHAR = 1042
    VARCHAR = 1043
    DATE = 1082
    TIME = 1083
    TIMESTAMP = 1114
    TIMESTAMPTZ = 1184
    TIMETZ = 1266
    NUMERIC = 1700
    UUID = 2950
    JSONB = 3802


MYSQL_BINARY_CHARSET: Final = 63


@dataclass(frozen=True, slots=True)
class PgColumn:
    """A PostgreSQL result column: RowDescription's type OID and type modifier, and the
    Python codec of the session's client_encoding (see `pg_codec`)."""

    type_oid: int
    type_modifier: int = -1
    encoding: str = "utf-8"


@dataclass(frozen=True, slots=True)
class MysqlColumn:
    """A MySQL/MariaDB result column: ColumnDefinition41's type, character set, column length
    (in bytes), decimals and the UNSIGNED flag."""

    column_type: int
    character_set: int = 255
    column_length: int = 0
    decimals: int = 0
    unsigned: bool = False


class ColumnKind(enum.Enum):
    TEXT = "text"
    BYTES = "bytes"
    INT = "int"
    NUMERIC = "numeric"
    FLOAT = "float"
    BOOL = "bool"
    DATE = "date"
    TIMESTAMP = "timestamp"
    TIMESTAMPTZ = "timestamptz"
    TIME = "time"
    TIMETZ = "timetz"
    UUID = "uuid"
    JSON = "json"
    JSONB = "jsonb"
    INET = "inet"
    CIDR = "cidr"
    BIT = "bit"  # MySQL BIT(n): big-endian bytes
    UNSUPPORTED = "unsupported"  # masked to NULL whatever the strategy
    ALWAYS_NULL = "always_null"  # MySQL's NULL type: nothing to mask


@dataclass(frozen=True, slots=True)
class ColumnShape:
    """What a masker needs to know about a column, decided once per column.

    `max_chars`: the declared length limit in characters (None: unlimited or unknown);
    `fixed`: blank-padded fixed length (PostgreSQL char(n), MySQL CHAR/BINARY);
    `int_bytes`/`int_bits`/`signed`: the wire width of an integer and the bits of its range;
    `precision`/`scale`: numeric(p, s) (precision None: unconstrained);
    `codec`: the Python codec of text (None: raw bytes); `decimals`: MySQL fractional seconds."""

    dialect: Dialect
    kind: ColumnKind
    max_chars: int | None = None
    fixed: bool = False
    int_bytes: int = 0
    int_bits: int = 0
    signed: bool = True
    precision: int | None = None
    scale: int = 0
    codec: str | None = "utf-8"
    decimals: int = 0


# ---------------------------------------------------------------------------------------------
# PostgreSQL

_PG_KINDS: Final[Mapping[int, ColumnKind]] = {
    PgOid.BOOL: ColumnKind.BOOL,
    PgOid.BYTEA: ColumnKind.BYTES,
    PgOid.CHAR: ColumnKind.TEXT,
    PgOid.NAME: ColumnKind.TEXT,
    PgOid.INT8: ColumnKind.INT,
    PgOid.INT2: ColumnKind.INT,
    PgOid.INT4: ColumnKind.INT,
    PgOid.TEXT: ColumnKind.TEXT,
    PgOid.JSON: ColumnKind.JSON,
    PgOid.CIDR: ColumnKind.CIDR,
    PgOid.UNKNOWN: ColumnKind.TEXT,
    PgOid.FLOAT4: ColumnKind.FLOAT,
    PgOid.FLOAT8: ColumnKind.FLOAT,
    PgOid.INET: ColumnKind.INET,
    PgOid.BPCHAR: ColumnKind.TEXT,
    PgOid.VARCHAR: ColumnKind.TEXT,
    PgOid.DATE: ColumnKind.DATE,
    PgOid.TIME: ColumnKind.TIME,
    PgOid.TIMESTAMP: ColumnKind.TIMESTAMP,
    PgOid.TIMESTAMPTZ: ColumnKind.TIMESTAMPTZ,
    PgOid.TIMETZ: ColumnKind.TIMETZ,
    PgOid.NUMERIC: ColumnKind.NUMERIC,
    PgOid.UUID: ColumnKind.UUID,
    PgOid.JSONB: ColumnKind.JSONB,
}
_PG_INT_BYTES: Final[Mapping[int, int]] = {PgOid.INT2: 2, PgOid.INT4: 4, PgOid.INT8: 8}
_PG_NAMEDATALEN: Final = 63  # the longest name, in bytes

# client_encoding (as ParameterStatus reports it) -> Python codec. Every PostgreSQL client
# encoding is ASCII-compatible, so an encoding missing here falls back to ASCII: values that
# are not pure ASCII then get the full mask instead of a partial one.
_PG_CODECS: Final[Mapping[str, str]] = {
    "UTF8": "utf-8",
    "SQL_ASCII": "utf-8",
    "LATIN1": "iso8859-1",
    "LATIN2": "iso8859-2",
    "LATIN3": "iso8859-3",
    "LATIN4": "iso8859-4",
    "LATIN5": "iso8859-9",
    "LATIN6": "iso8859-10",
    "LATIN7": "iso8859-13",
    "LATIN8": "iso8859-14",
    "LATIN9": "iso8859-15",
    "LATIN10": "iso8859-16",
    "ISO_8859_5": "iso8859-5",
    "ISO_8859_6": "iso8859-6",
    "ISO_8859_7": "iso8859-7",
    "ISO_8859_8": "iso8859-8",
    "WIN866": "cp866",
    "WIN874": "cp874",
    "WIN1250": "cp1250",
    "WIN1251": "cp1251",
    "WIN1252": "cp1252",
    "WIN1253": "cp1253",
    "WIN1254": "cp1254",
    "WIN1255": "cp1255",
    "WIN1256": "cp1256",
    "WIN1257": "cp1257",
    "WIN1258": "cp1258",
    "KOI8R": "koi8-r",
    "KOI8U": "koi8-u",
    "EUC_JP": "euc-jp",
    "EUC_CN": "gb2312",
    "EUC_KR": "euc-kr",
    "EUC_JIS_2004": "euc-jis-2004",
    "SJIS": "shift-jis",
    "SHIFT_JIS_2004": "shift-jis-2004",
    "BIG5": "big5",
    "GBK": "gbk",
    "GB18030": "gb18030",
    "UHC": "cp949",
    "JOHAB": "johab",
}


def pg_codec(client_encoding: str) -> str:
    """The Python codec for a PostgreSQL client_encoding name ('UTF8', 'LATIN1', 'WIN1252'...)."""
    return _PG_CODECS.get(client_encoding.upper().replace("-", "_"), "ascii")


def _pg_shape(col: PgColumn) -> ColumnShape:
    kind = _PG_KINDS.get(col.type_oid, ColumnKind.UNSUPPORTED)
    oid, mod = col.type_oid, col.type_modifier
    try:
        codec = codecs.lookup(col.encoding).name
    except LookupError:
        codec = "ascii"
    pg = Dialect.POSTGRES
    if kind is ColumnKind.TEXT:
        if oid == PgOid.CHAR:
            return ColumnShape(pg, kind, max_chars=1, fixed=True, codec=codec)
        if oid in (PgOid.BPCHAR, PgOid.VARCHAR):
            limit = mod - 4 if mod >= 4 else None
            return ColumnShape(pg, kind, max_chars=limit, fixed=oid == PgOid.BPCHAR, codec=codec)
        if oid == PgOid.NAME:
            return ColumnShape(pg, kind, max_chars=_PG_NAMEDATALEN, codec=codec)
        return ColumnShape(pg, kind, codec=codec)
    if kind is ColumnKind.INT:
        size = _PG_INT_BYTES[oid]
        return ColumnShape(pg, kind, int_bytes=size, int_bits=size * 8, signed=True)
    if kind is ColumnKind.NUMERIC:
        if mod >= 4:
            precision, scale = ((mod - 4) >> 16) & 0xFFFF, (mod - 4) & 0xFFFF
            if scale > 1000:  # PostgreSQL 15+ negative scales: multiples of 10^-scale
                scale -= 0x10000
            return ColumnShape(pg, kind, precision=precision, scale=scale)
        return ColumnShape(pg, kind)
    if kind is ColumnKind.FLOAT:
        return ColumnShape(pg, kind, int_bytes=4 if oid == PgOid.FLOAT4 else 8)
    if kind in (ColumnKind.JSON, ColumnKind.JSONB):
        return ColumnShape(pg, kind, codec=codec)
    return ColumnShape(pg, kind, codec=None)


# ---------------------------------------------------------------------------------------------
# MySQL / MariaDB


def _charsets() -> dict[int, tuple[str | None, int]]:
    table: dict[int, tuple[str | None, int]] = {MYSQL_BINARY_CHARSET: (None, 1)}

    def add(codec: str, mbmaxlen: int, *ids: int | range) -> None:
        for item in ids:
            for i in item if isinstance(item, range) else (item,):
                table[i] = (codec, mbmaxlen)

    add("utf-8", 3, 33, 76, 83, range(192, 216), 223)  # utf8mb3
    add("utf-8", 4, 45, 46, range(224, 248), range(255, 324))  # utf8mb4
    add("cp1252", 1, 5, 8, 15, 31, 47, 48, 49, 94)  # MySQL's latin1 is cp1252
    add("iso8859-2", 1, 2, 9, 21, 27, 77)
    add("ascii", 1, 11, 65)
    add("big5", 2, 1, 84)
    add("cp850", 1, 4, 80)
    add("koi8-r", 1, 7, 74)
    add("koi8-u", 1, 22, 75)
    add("euc-jp", 3, 12, 91, 97, 98)
    add("cp932", 2, 13, 88, 95, 96)
    add("cp1251", 1, 14, 23, 50, 51, 52)
    add("iso8859-8", 1, 16, 71)
    add("tis-620", 1, 18, 69)
    add("euc-kr", 2, 19, 85)
    add("iso8859-13", 1, 20, 41, 42, 79)
    add("gb2312", 2, 24, 86)
    add("iso8859-7", 1, 25, 70)
    add("cp1250", 1, 26, 34, 44, 66, 99)
    add("gbk", 2, 28, 87)
    add("iso8859-9", 1, 30, 78)
    add("utf-16-be", 2, 35, 90, range(128, 152), 159)  # ucs2
    add("cp866", 1, 36, 68)
    add("mac-latin2", 1, 38, 43)
    add("mac-roman", 1, 39, 53)
    add("cp852", 1, 40, 81)
    add("utf-16-be", 4, 54, 55, range(101, 125))  # utf16
    add("utf-16-le", 4, 56, 62)  # utf16le
    add("cp1256", 1, 57, 67)
    add("cp1257", 1, 29, 58, 59)
    add("utf-32-be", 4, 60, 61, range(160, 184))  # utf32
    add("gb18030", 4, 248, 249, 250)
    return table


_MYSQL_CHARSETS: Final = _charsets()


def mysql_charset(charset_id: int) -> tuple[str | None, int]:
    """(Python codec, longest character in bytes) of a MySQL/MariaDB collation id; codec None
    is `binary`. Ids above 255 not in the table are taken for utf8mb4 (MariaDB's newer UCA
    collations); other unknown ids for an ASCII-compatible charset of up to 4 bytes a character."""
    found = _MYSQL_CHARSETS.get(charset_id)
    if found is not None:
        return found
    return ("utf-8", 4) if charset_id > 255 else ("ascii", 4)


class _MysqlTypes(NamedTuple):
    ints: Mapping[int, tuple[int, int]]  # type -> (wire bytes, range bits)
    strings: frozenset[int]
    simple: Mapping[int, ColumnKind]
    string: int
    year: int
    floats: tuple[int, int]  # FLOAT, DOUBLE


@functools.cache
def _mysql_types() -> _MysqlTypes:
    from dbguard.wire.mysql.messages import ColumnType

    return _MysqlTypes(
        ints={
            ColumnType.TINY: (1, 8),
            ColumnType.SHORT: (2, 16),
            ColumnType.INT24: (4, 24),
            ColumnType.LONG: (4, 32),
            ColumnType.LONGLONG: (8, 64),
        },
        strings=frozenset(
            {
                ColumnType.VARCHAR,
                ColumnType.VAR_STRING,
                ColumnType.STRING,
                ColumnType.TINY_BLOB,
                ColumnType.MEDIUM_BLOB,
                ColumnType.LONG_BLOB,
                ColumnType.BLOB,
                ColumnType.ENUM,
                ColumnType.SET,
            }
        ),
        simple={
            ColumnType.DECIMAL: ColumnKind.NUMERIC,
            ColumnType.NEWDECIMAL: ColumnKind.NUMERIC,
            ColumnType.DATE: ColumnKind.DATE,
            ColumnType.NEWDATE: ColumnKind.DATE,
            ColumnType.DATETIME: ColumnKind.TIMESTAMP,
            ColumnType.DATETIME2: ColumnKind.TIMESTAMP,
            ColumnType.TIMESTAMP: ColumnKind.TIMESTAMP,
            ColumnType.TIMESTAMP2: ColumnKind.TIMESTAMP,
            ColumnType.TIME: ColumnKind.TIME,
            ColumnType.TIME2: ColumnKind.TIME,
            ColumnType.JSON: ColumnKind.JSON,
            ColumnType.BIT: ColumnKind.BIT,
            ColumnType.NULL: ColumnKind.ALWAYS_NULL,
        },
        string=ColumnType.STRING,
        year=ColumnType.YEAR,
        floats=(ColumnType.FLOAT, ColumnType.DOUBLE),
    )


def _mysql_shape(col: MysqlColumn) -> ColumnShape:
    t, my = col.column_type, Dialect.MYSQL
    types = _mysql_types()
    if t in types.strings:
        codec, mbmaxlen = mysql_charset(col.character_set)
        kind = ColumnKind.BYTES if codec is None else ColumnKind.TEXT
        limit = col.column_length // mbmaxlen if col.column_length > 0 else None
        # BLOB/TEXT columns report the type's maximum (up to 4 GiB): no useful limit.
        fixed = t == types.string
        return ColumnShape(my, kind, max_chars=limit, fixed=fixed and kind is ColumnKind.BYTES, codec=codec)
    if t in types.ints:
        size, bits = types.ints[t]
        return ColumnShape(my, ColumnKind.INT, int_bytes=size, int_bits=bits, signed=not col.unsigned)
    if t == types.year:
        return ColumnShape(my, ColumnKind.INT, int_bytes=2, int_bits=0, signed=False)
    if t in types.floats:
        return ColumnShape(my, ColumnKind.FLOAT, int_bytes=4 if t == types.floats[0] else 8)
    kind = types.simple.get(t, ColumnKind.UNSUPPORTED)
    if kind is ColumnKind.NUMERIC:
        digits = col.column_length - (1 if col.decimals else 0) - (0 if col.unsigned else 1)
        precision = digits if col.column_length > 0 and digits > 0 else None
        return ColumnShape(my, kind, precision=precision, scale=col.decimals, signed=not col.unsigned)
    if kind in (ColumnKind.TIMESTAMP, ColumnKind.TIME):
        return ColumnShape(my, kind, decimals=col.decimals if 0 < col.decimals <= 6 else 0)
    if kind is ColumnKind.JSON:
        return ColumnShape(my, kind, codec="utf-8")  # JSON is utf8mb4 whatever charset is announced
    return ColumnShape(my, kind, codec=None)


def shape_of(column: PgColumn | MysqlColumn) -> ColumnShape:
    """What kind of value a column carries, with its limits (see `ColumnShape`)."""
    if isinstance(column, PgColumn):
        return _pg_shape(column)
    return _mysql_shape(column)
