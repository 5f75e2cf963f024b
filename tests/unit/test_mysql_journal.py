"""session.mysql_journal: bound parameters, OK and ERR packets, connect attributes as the journal records them."""

from __future__ import annotations

import datetime
import struct

from dbguard.session.mysql_journal import (
    connect_attributes,
    error_fields,
    execute_parameters,
    ok_affected_rows,
    parameter_text,
)
from dbguard.wire.mysql import messages as m

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
