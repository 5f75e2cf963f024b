"""Reading back from a MySQL/MariaDB server the session state that decides how SQL text lexes.

Owns: dbguard's one internal query on a MySQL session, `STATE_QUERY`, and reading its answer
(never relayed to the client) into a `ServerSessionState`: the session's sql_mode (ANSI_QUOTES and
NO_BACKSLASH_ESCAPES change where strings and identifiers end), its character_set_client (which
bytes can hide a backslash) and its current database (what unqualified names mean).

Why ask rather than follow the statements: a server's global sql_mode may already include those
modes at login; a `SET sql_mode = ...` may fail, or only be prepared and never executed, or run
inside a prepared statement or a stored program; COM_RESET_CONNECTION and COM_CHANGE_USER put the
defaults back. The analyser's own tracking of SET and USE inside one message is provisional; what
the server answers here is what the next message is read with. The session sends the query after
login and after any command that may have changed these (see `session.mysql`), before it takes
the client's next command.

Must not touch: sockets, the gate, the client's packets.
"""

from __future__ import annotations

from dataclasses import dataclass

from dbguard.wire.mysql import messages as m
from dbguard.wire.mysql.packets import PayloadReader, ProtocolViolation

STATE_QUERY = bytes((m.Command.QUERY,)) + b"SELECT @@SESSION.sql_mode, @@SESSION.character_set_client, DATABASE()"
_COLUMNS = 3


@dataclass(frozen=True, slots=True)
class ServerSessionState:
    sql_mode: str
    character_set_client: str
    database: str  # "" when no database is selected


class StateQueryFailed(Exception):
    """The server answered STATE_QUERY with an ERR (its message is in the exception)."""


class StateReader:
    """Consumes the response packets to STATE_QUERY; `feed` returns the state with the last one."""

    def __init__(self, *, deprecate_eof: bool) -> None:
        self._deprecate_eof = deprecate_eof
        self._columns_left = -1  # before the column count
        self._eof_left = 0 if deprecate_eof else 1
        self._row: tuple[bytes | None, ...] | None = None

    def feed(self, payload: bytes) -> ServerSessionState | None:
        if m.is_err(payload):
            raise StateQueryFailed(m.ErrPacket.decode(payload).message.decode("utf-8", "replace"))
        if self._columns_left < 0:
            count = PayloadReader(payload, "session state column count").lenenc_int()
            if count != _COLUMNS:
                raise ProtocolViolation(f"session state query: {count} columns, expected {_COLUMNS}")
            self._columns_left = _COLUMNS
            return None
        if self._columns_left > 0:
            self._columns_left -= 1
            return None
        if self._eof_left > 0:
            if not m.is_eof(payload):
                raise ProtocolViolation("session state query: no EOF after the column definitions")
            self._eof_left -= 1
            return None
        if payload[:1] == b"\xfe" and len(payload) < 0xFFFFFF:  # EOF, or DEPRECATE_EOF's OK
            if self._row is None:
                raise ProtocolViolation("session state query: no row")
            sql_mode, charset, database = self._row
            if sql_mode is None or charset is None:
                raise ProtocolViolation("session state query: NULL sql_mode or character set")
            return ServerSessionState(sql_mode.decode("ascii", "replace"), charset.decode("ascii", "replace"),
                                      (database or b"").decode("utf-8", "replace"))
        if self._row is not None:
            raise ProtocolViolation("session state query: more than one row")
        reader = PayloadReader(payload, "session state row")
        self._row = tuple(reader.lenenc_bytes_or_null() for _ in range(_COLUMNS))
        if reader.remaining():
            raise ProtocolViolation("session state query: trailing bytes in the row")
        return None
