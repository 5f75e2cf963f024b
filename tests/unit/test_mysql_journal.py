"""session.mysql_journal: bound parameters, OK and ERR packets, connect attributes as the journal records them."""

from __future__ import annotations

import datetime
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguard.session.mysql_journal import (
    _decoded_execute_parameters,
    _plain_execute_parameters,
    connect_attributes,
    error_fields,
    execute_parameters,
    ok_affected_rows,
    parameter_text,
)
from dbguard.wire.mysql import messages as m
from dbguard.wire.mysql.packets import ProtocolViolation

T = m.ColumnType


def test_parameter_text_by_type() -> None:
    assert parameter_text(T.LONGLONG, False, (-5).to_bytes(8, "little", signed=True)) == "-5"
    assert parameter_text(T.TINY, True, b"\xff") == "255"
    assert parameter_text(T.DOUBLE, False, struct.pack("<d", 2.5)) == "2.5"
    date = m.python_to_binary_value(T.DATE, datetime.date(2026, 11, 21))
    assert parameter_text(T.DATE, False, date) == "2026-11-21"
    stamp = m.python_to_binary_value(T.DATETIME, datetime.datetime(2026, 11, 21, 14, 30, 5, 123))
    assert parameter_text(T.DATETIME, False, stamp) == "2026-11-21 14:30:05.000123"
    assert parameter_text(T.DATETIME, False, b"") == "0000-00-00 00:00:00"
    time = m.python_to_binary_value(T.TIME, -datetime.timedelta(days=1, hours=2, seconds=3))
    assert parameter_text(T.TIME, False, time) == "-26:00:03"
    assert parameter_text(T.VAR_STRING, False, "caf\u00e9".encode()) == "caf\u00e9"
    assert parameter_text(T.VAR_STRING, False, b"\xff") == "\\xff"
    assert parameter_text(T.BLOB, False, b"ab") == "\\x6162"


def test_execute_parameters_with_nulls_previous_types_and_long_data() -> None:
    params = (m.QueryAttribute(T.LONG, False, b"", (7).to_bytes(4, "little")),
              m.QueryAttribute(T.VAR_STRING, False, b"", None),
              m.QueryAttribute(T.BLOB, False, b"", None, long_data=True))
    payload = m.ComStmtExecute(1, 0, 1, params).encode()
    values, types = execute_parameters(payload, 3, None, {2: 1000})
    assert values == ("7", None, "<long data: 1000 bytes>")
    assert types == ((T.LONG, False), (T.VAR_STRING, False), (T.BLOB, False))
    again = m.ComStmtExecute(1, 0, 1, (*params[:2], m.QueryAttribute(T.BLOB, False, b"", b"x")),
                             new_params_bound=False).encode()
    assert execute_parameters(again, 3, types, None)[0] == ("7", None, "\\x78")
    assert execute_parameters(b"\x17" + bytes(9), 0, None, None) == ((), None)


def test_ok_err_and_attributes() -> None:
    ok = m.OkPacket(affected_rows=70000).encode(m.Capability.PROTOCOL_41)
    assert ok_affected_rows(ok, 0) == 70000
    assert ok_affected_rows(b"\x00", 0) is None
    assert error_fields(m.err(1146, "42S02", "Table 'app.x' doesn't exist").encode()) == (
        "1146", "Table 'app.x' doesn't exist")
    assert error_fields(b"\x00") == ("", "")
    attrs, intent = connect_attributes(((b"program_name", b"app"), (b"dbguard_intent", b"cleanup")))
    assert attrs == {"program_name": "app", "dbguard_intent": "cleanup"}
    assert intent == "cleanup"


# -- the in-place reader of plain parameters, against the decoder -------------------------------

_TYPES = (T.TINY, T.SHORT, T.YEAR, T.LONG, T.INT24, T.LONGLONG, T.VAR_STRING, T.STRING, T.VARCHAR,
          T.NEWDECIMAL, T.BLOB, T.DOUBLE, T.DATE, T.JSON)


@st.composite
def _executes(draw: st.DrawFn) -> tuple[bytes, int, tuple[tuple[int, bool], ...] | None]:
    """An encoded COM_STMT_EXECUTE of plain and other values (some mangled), its parameter
    count, and the types of a previous execution."""
    count = draw(st.integers(1, 12))
    params = []
    for _ in range(count):
        column_type = draw(st.sampled_from(_TYPES))
        unsigned = draw(st.booleans())
        value: bytes | None
        if draw(st.integers(0, 5)) == 0:
            value = None
        elif column_type in (T.TINY, T.SHORT, T.YEAR, T.LONG, T.INT24, T.LONGLONG, T.DOUBLE):
            size = {T.TINY: 1, T.SHORT: 2, T.YEAR: 2, T.LONG: 4, T.INT24: 4}.get(column_type, 8)
            value = draw(st.binary(min_size=size, max_size=size))
        elif column_type == T.DATE:
            value = draw(st.sampled_from([b"", b"\xea\x07\x0b\x15"]))
        else:
            value = draw(st.binary(max_size=300))
        params.append(m.QueryAttribute(column_type, unsigned, b"", value))
    bound = draw(st.booleans())
    payload = m.ComStmtExecute(draw(st.integers(0, 2**32 - 1)), 0, 1, tuple(params), new_params_bound=bound).encode()
    if draw(st.integers(0, 3)) == 0:  # mangled: cut, extended or one byte changed
        cut = draw(st.integers(0, len(payload)))
        payload = payload[:cut] + draw(st.binary(max_size=3)) + payload[cut + draw(st.integers(0, 2)):]
    previous = tuple((p.type, p.unsigned) for p in params) if draw(st.booleans()) else None
    return payload, draw(st.sampled_from([count, count, count + 1, max(1, count - 1)])), previous


@given(_executes())
@settings(max_examples=1500, deadline=None)
def test_plain_parameters_read_in_place_are_the_decoders(case: tuple[bytes, int, Any]) -> None:
    """The hot path's reader gives exactly what the decoder gives, or leaves the payload to it
    (which then reads it or raises): never a different value, never a payload the decoder refuses."""
    payload, count, previous = case
    plain = _plain_execute_parameters(payload, count, previous)
    try:
        decoded: Any = _decoded_execute_parameters(payload, count, previous, None)
    except ProtocolViolation:
        decoded = ProtocolViolation
    if plain is not None:
        assert plain == decoded
    if decoded is ProtocolViolation:
        with pytest.raises(ProtocolViolation):
            execute_parameters(payload, count, previous, None)
    else:
        assert execute_parameters(payload, count, previous, None) == decoded


def test_sysbench_and_orm_parameters_take_the_plain_reader() -> None:
    params = (m.QueryAttribute(T.LONG, False, b"", (5043).to_bytes(4, "little")),
              m.QueryAttribute(T.VAR_STRING, False, b"", b"alice@example.com"),
              m.QueryAttribute(T.LONGLONG, True, b"", (2**64 - 1).to_bytes(8, "little")),
              m.QueryAttribute(T.VAR_STRING, False, b"", None))
    payload = m.ComStmtExecute(1, 0, 1, params).encode()
    expected = (("5043", "alice@example.com", str(2**64 - 1), None),
                ((T.LONG, False), (T.VAR_STRING, False), (T.LONGLONG, True), (T.VAR_STRING, False)))
    assert _plain_execute_parameters(payload, 4, None) == expected
    assert _decoded_execute_parameters(payload, 4, None, None) == expected
