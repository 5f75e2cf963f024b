"""The PostgreSQL facts the journal needs, read from messages the session already has.

Owns: a Bind's statement name and parameters, and their journal text (binary values of common
types rendered from the Parse's parameter types), a CommandComplete tag's row
count, and an ErrorResponse's SQLSTATE and message. Pure functions; the session decides
when to call them (session.pg), the journal what to record (session.journal).
"""

from __future__ import annotations

import contextlib
import datetime
import struct
import uuid
from typing import Final, NamedTuple

from dbguard.wire.pg import messages as m
from dbguard.wire.pg.framing import ProtocolViolation

__all__ = ["BoundValues", "bind_parameters", "error_fields", "parameter_types", "render_parameters", "rows_from_tag"]


# Binary-format parameters of these types are journaled as PostgreSQL would print them;
# every other binary value as `\\x` and its bytes in hex.
_INT_OIDS: Final = {21: 2, 23: 4, 20: 8, 26: 4}  # int2, int4, int8, oid -> width
_FLOAT_OIDS: Final = {700: "!f", 701: "!d"}  # float4, float8
_TEXT_OIDS: Final = frozenset({25, 1043, 1042, 19})  # text, varchar, bpchar, name
_BOOL_OID: Final = 16
_UUID_OID: Final = 2950
_DATE_OID: Final = 1082
_TIMESTAMP_OIDS: Final = frozenset({1114, 1184})  # timestamp, timestamptz (as UTC)
_PG_EPOCH: Final = datetime.datetime(2000, 1, 1)


class BoundValues(NamedTuple):  # a tuple: one is read for every execution of a prepared statement
    """One Bind's statement name and parameter values, as sent (text or binary format)."""

    statement: bytes
    values: tuple[bytes | None, ...]
    binary: tuple[bool, ...]


_U16: Final = struct.Struct("!H")
_I16: Final = struct.Struct("!h")
_I32: Final = struct.Struct("!i")


def bind_parameters(payload: bytes) -> BoundValues:
    """The statement name and parameter values of a Bind payload. Raises ProtocolViolation
    for a malformed Bind: exactly what `messages.decode_frontend` refuses (every count,
    length and terminator checked, nothing after the result formats), read in one pass with
    no reader object, since it runs for every execution of a prepared statement when the
    journal is on (tests/unit/test_pg_journal.py compares the two)."""
    end = len(payload)
    portal_end = payload.find(b"\x00")
    statement_end = payload.find(b"\x00", portal_end + 1) if portal_end >= 0 else -1
    if statement_end < 0:
        raise ProtocolViolation("frontend message b'B': string without terminator")
    pos = statement_end + 1
    if pos + 2 > end:
        raise _truncated()
    nformats = _U16.unpack_from(payload, pos)[0]
    pos += 2
    if pos + 2 * nformats + 2 > end:
        raise _truncated()
    formats = (() if not nformats else _I16.unpack_from(payload, pos) if nformats == 1
               else struct.unpack_from(f"!{nformats}h", payload, pos))
    pos += 2 * nformats
    nvalues = _U16.unpack_from(payload, pos)[0]
    pos += 2
    values: list[bytes | None] = []
    append = values.append
    unpack = _I32.unpack_from
    for _ in range(nvalues):
        if pos + 4 > end:
            raise _truncated()
        length = unpack(payload, pos)[0]
        pos += 4
        if length < 0:
            if length != -1:
                raise ProtocolViolation(f"Bind: invalid value length {length}")
            append(None)
            continue
        if pos + length > end:
            raise _truncated()
        append(payload[pos : pos + length])
        pos += length
    if pos + 2 > end:
        raise _truncated()
    nresults = _U16.unpack_from(payload, pos)[0]
    pos += 2 + 2 * nresults
    if pos > end:
        raise _truncated()
    if pos < end:
        raise ProtocolViolation(f"frontend message b'B': {end - pos} unexpected trailing bytes")
    if len(formats) == 1:
        binary = (formats[0] == 1,) * nvalues
    elif len(formats) == nvalues:
        binary = tuple(f == 1 for f in formats)
    elif not formats:
        binary = (False,) * nvalues
    else:
        raise ProtocolViolation("Bind: parameter format count does not match the parameters")
    return BoundValues(payload[portal_end + 1 : statement_end], tuple(values), binary)


def _truncated() -> ProtocolViolation:
    return ProtocolViolation("frontend message b'B': message truncated")


def parameter_types(data: bytes, start: int, end: int) -> tuple[int, ...]:
    """The parameter type OIDs at `data[start:end]`, the tail of a Parse after its SQL text
    (a count, then one OID each); () when they are absent or malformed (the server says)."""
    if end - start < 2:
        return ()
    count = int.from_bytes(data[start : start + 2], "big")
    if count == 0 or end - start < 2 + 4 * count:
        return ()
    return struct.unpack_from(f"!{count}I", data, start + 2)


def _binary_text(value: bytes, oid: int) -> str:
    width = _INT_OIDS.get(oid)
    if width is not None and len(value) == width:
        return str(int.from_bytes(value, "big", signed=oid != 26))
    fmt = _FLOAT_OIDS.get(oid)
    if fmt is not None and len(value) == struct.calcsize(fmt):
        return repr(struct.unpack(fmt, value)[0])
    if oid in _TEXT_OIDS:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    elif oid == _BOOL_OID and len(value) == 1:
        return "true" if value != b"\x00" else "false"
    elif oid == _UUID_OID and len(value) == 16:
        return str(uuid.UUID(bytes=value))
    elif oid == _DATE_OID and len(value) == 4:
        with contextlib.suppress(OverflowError):
            return (_PG_EPOCH.date() + datetime.timedelta(days=int.from_bytes(value, "big", signed=True))).isoformat()
    elif oid in _TIMESTAMP_OIDS and len(value) == 8:
        with contextlib.suppress(OverflowError):
            moment = _PG_EPOCH + datetime.timedelta(microseconds=int.from_bytes(value, "big", signed=True))
            return moment.isoformat(sep=" ") + ("+00" if oid == 1184 else "")
    return "\\x" + value.hex()


def render_parameters(bound: BoundValues, types: tuple[int, ...]) -> tuple[str | None, ...]:
    """The parameters as journal text. Text-format values as sent (if UTF-8); binary-format
    values of common types (integers, floats, bool, text, uuid, date, timestamp) as PostgreSQL
    prints them, when the Parse named the type; anything else as `\\x` and hex."""
    out: list[str | None] = []
    for index, (value, binary) in enumerate(zip(bound.values, bound.binary, strict=True)):
        if value is None:
            out.append(None)
        elif not binary:
            try:
                out.append(value.decode("utf-8"))
            except UnicodeDecodeError:
                out.append("\\x" + value.hex())
        else:
            out.append(_binary_text(value, types[index] if index < len(types) else -1))
    return tuple(out)


def rows_from_tag(tag: bytes) -> int | None:
    """The row count a CommandComplete tag reports (`SELECT 5`, `INSERT 0 1`, `UPDATE 3`,
    `COPY 10`...), or None for a command without one (`BEGIN`, `CREATE TABLE`)."""
    space = tag.rfind(b" ")
    if space < 0:
        return None
    last = tag[space + 1 :].rstrip(b"\x00")
    return int(last) if last.isdigit() else None


def error_fields(payload: bytes) -> tuple[str, str]:
    """(SQLSTATE, message) of an ErrorResponse payload; ("", "") if it cannot be read."""
    try:
        error = m.decode_backend(b"E", payload)
    except ProtocolViolation:
        return "", ""
    assert isinstance(error, m.ErrorOrNotice)
    return error.sqlstate or "", error.message or ""
