"""The MySQL/MariaDB facts the journal needs, read from packets the session already has.

Owns: a COM_STMT_EXECUTE's bound parameters as journal text, an OK packet's affected rows, an
ERR packet's errno and message, and the client's connect attributes with the intent declared
in them. Pure functions; the session decides when to call them (session.mysql), the journal
what to record (session.journal).

Parameters as text: NULL is None; integers in decimal (unsigned when flagged); FLOAT and DOUBLE
as Python's `repr` of the value; DATE / DATETIME / TIMESTAMP as `YYYY-MM-DD[ hh:mm:ss[.ffffff]]`
(as MySQL writes them, zero dates included); TIME as `[-]hhh:mm:ss[.ffffff]`; strings, decimals,
JSON, ENUM and SET as UTF-8 text (`\\x` + hex when not UTF-8); BLOB types, BIT and GEOMETRY as
`\\x` + hex. A parameter sent with COM_STMT_SEND_LONG_DATA is `<long data: N bytes>`: its
value may be megabytes and went upstream in other packets.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Final

from dbguard.wire.mysql import messages as m
from dbguard.wire.mysql.packets import ProtocolViolation

__all__ = ["INTENT_ATTRIBUTES", "connect_attributes", "error_fields", "execute_parameters", "ok_affected_rows"]

# Connect attributes a client may declare its intent in (the first one present wins).
INTENT_ATTRIBUTES: Final = ("dbguard.intent", "dbguard_intent")

T = m.ColumnType
_INTEGERS: Final = frozenset({T.TINY, T.SHORT, T.LONG, T.INT24, T.LONGLONG, T.YEAR})
_DATES: Final = frozenset({T.DATE, T.NEWDATE})
_DATETIMES: Final = frozenset({T.DATETIME, T.TIMESTAMP, T.DATETIME2, T.TIMESTAMP2})
_BINARY: Final = frozenset({T.TINY_BLOB, T.MEDIUM_BLOB, T.LONG_BLOB, T.BLOB, T.BIT, T.GEOMETRY})


def _hex(raw: bytes) -> str:
    return "\\x" + raw.hex()


def _date_text(raw: bytes, with_time: bool) -> str:
    if not raw:
        return "0000-00-00 00:00:00" if with_time else "0000-00-00"
    text = f"{int.from_bytes(raw[0:2], 'little'):04d}-{raw[2]:02d}-{raw[3]:02d}"
    if not with_time:
        return text
    h, mi, s = (raw[4], raw[5], raw[6]) if len(raw) >= 7 else (0, 0, 0)
    text += f" {h:02d}:{mi:02d}:{s:02d}"
    if len(raw) == 11:
        text += f".{int.from_bytes(raw[7:11], 'little'):06d}"
    return text


def _time_text(raw: bytes) -> str:
    if not raw:
        return "00:00:00"
    hours = int.from_bytes(raw[1:5], "little") * 24 + raw[5]
    text = f"{'-' if raw[0] == 1 else ''}{hours:02d}:{raw[6]:02d}:{raw[7]:02d}"
    if len(raw) == 12:
        text += f".{int.from_bytes(raw[8:12], 'little'):06d}"
    return text


def parameter_text(column_type: int, unsigned: bool, raw: bytes) -> str:
    """One bound value (raw binary-protocol bytes, lengths already checked) as journal text."""
    if column_type in _INTEGERS:
        return str(int.from_bytes(raw, "little", signed=not unsigned and column_type != T.YEAR))
    if column_type == T.DOUBLE:
        return repr(struct.unpack("<d", raw)[0])
    if column_type == T.FLOAT:
        return repr(struct.unpack("<f", raw)[0])
    if column_type in _DATES:
        return _date_text(raw, False)
    if column_type in _DATETIMES:
        return _date_text(raw, True)
    if column_type == T.TIME or column_type == T.TIME2:
        return _time_text(raw)
    if column_type in _BINARY:
        return _hex(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return _hex(raw)


def execute_parameters(
    payload: bytes, count: int, previous_types: Sequence[tuple[int, bool]] | None,
    long_data: Mapping[int, int] | None,
) -> tuple[tuple[str | None, ...], tuple[tuple[int, bool], ...] | None]:
    """(parameters as text, the types they were bound with) of a COM_STMT_EXECUTE payload for a
    statement with `count` parameters. `previous_types`: the types of its previous execution
    (used when the client does not send them again); `long_data`: bytes sent so far by
    COM_STMT_SEND_LONG_DATA per parameter index. Raises ProtocolViolation for a payload that
    cannot be read."""
    if count == 0:
        return (), None
    if not long_data:
        plain = _plain_execute_parameters(payload, count, previous_types)
        if plain is not None:
            return plain
    return _decoded_execute_parameters(payload, count, previous_types, long_data)


def _plain_execute_parameters(
    payload: bytes, count: int, previous_types: Sequence[tuple[int, bool]] | None,
) -> tuple[tuple[str | None, ...], tuple[tuple[int, bool], ...]] | None:
    """`execute_parameters` of a payload whose values the wire layer reads in place
    (`messages.execute_values_inline`: fixed-width, NULL, strings under 251 bytes), without the
    decoder's objects; None for any other payload (the decoder reads it)."""
    found = m.execute_values_inline(payload, count, previous_types)
    if found is None:
        return None
    raw, types = found
    return tuple([None if value is None else parameter_text(column_type, unsigned, value)
                  for value, (column_type, unsigned) in zip(raw, types, strict=True)]), types


def _decoded_execute_parameters(
    payload: bytes, count: int, previous_types: Sequence[tuple[int, bool]] | None,
    long_data: Mapping[int, int] | None,
) -> tuple[tuple[str | None, ...], tuple[tuple[int, bool], ...] | None]:
    execute = m.ComStmtExecute.decode(payload, count, m.NO_CAPABILITIES, previous_types, long_data or ())
    values: list[str | None] = []
    for index, param in enumerate(execute.parameters):
        if param.long_data:
            values.append(f"<long data: {(long_data or {}).get(index, 0)} bytes>")
        elif param.value is None:
            values.append(None)
        else:
            values.append(parameter_text(param.type, param.unsigned, param.value))
    return tuple(values), tuple((p.type, p.unsigned) for p in execute.parameters)


def ok_affected_rows(data: bytes, start: int, end: int | None = None) -> int | None:
    """The affected rows of the OK packet (0x00 or 0xFE headed) whose payload is data[start:end],
    or None when it cannot be read."""
    stop = len(data) if end is None else end
    p = start + 1
    if p >= stop:
        return None
    first = data[p]
    if first < 0xFB:
        return first
    size = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
    if size is None or p + 1 + size > stop:
        return None
    return int.from_bytes(data[p + 1 : p + 1 + size], "little")


def error_fields(payload: bytes) -> tuple[str, str]:
    """(errno as text, message) of an ERR packet payload; ("", "") if it cannot be read."""
    try:
        error = m.ErrPacket.decode(payload)
    except ProtocolViolation:
        return "", ""
    return str(error.errno), error.message.decode("utf-8", "replace")


def connect_attributes(attrs: Sequence[tuple[bytes, bytes]]) -> tuple[dict[str, str], str]:
    """(the client's connect attributes as text, the intent it declared in one of them)."""
    found = {key.decode("utf-8", "replace"): value.decode("utf-8", "replace") for key, value in attrs}
    intent = next((found[name] for name in INTENT_ATTRIBUTES if found.get(name)), "")
    return found, intent
