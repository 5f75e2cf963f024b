"""The PostgreSQL facts the journal needs, read from messages the session already has.

Owns: a Bind's statement name and parameters as journal text, a CommandComplete tag's row
count, and an ErrorResponse's SQLSTATE and message. Pure functions; the session decides
when to call them (session.pg), the journal what to record (session.journal).
"""

from __future__ import annotations

from dbguard.wire.pg import messages as m
from dbguard.wire.pg.framing import ProtocolViolation

__all__ = ["bind_parameters", "error_fields", "rows_from_tag"]


def _parameter_text(value: bytes | None, binary: bool) -> str | None:
    if value is None:
        return None
    if not binary:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    # A binary-format value (or text that is not UTF-8) is journaled as bytea shows it.
    return "\\x" + value.hex()


def bind_parameters(payload: bytes) -> tuple[bytes, tuple[str | None, ...]]:
    """(statement name, parameters as text) of a Bind payload. Binary-format parameters are
    written as `\\x` and their bytes in hex. Raises ProtocolViolation for a malformed Bind."""
    bind = m.decode_frontend(b"B", payload)
    assert isinstance(bind, m.Bind)
    formats = bind.param_formats
    params = bind.params
    if len(formats) == 1:
        binary = [formats[0] == 1] * len(params)
    elif len(formats) == len(params):
        binary = [f == 1 for f in formats]
    elif not formats:
        binary = [False] * len(params)
    else:
        raise ProtocolViolation("Bind: parameter format count does not match the parameters")
    return bind.statement.encode("utf-8", "surrogateescape"), tuple(
        _parameter_text(value, is_binary) for value, is_binary in zip(params, binary, strict=True))


def rows_from_tag(tag: bytes) -> int | None:
    """The row count a CommandComplete tag reports (`SELECT 5`, `INSERT 0 1`, `UPDATE 3`,
    `COPY 10`...), or None for a command without one (`BEGIN`, `CREATE TABLE`)."""
    last = tag.rstrip(b"\x00").rpartition(b" ")[2]
    return int(last) if last.isdigit() and b" " in tag else None


def error_fields(payload: bytes) -> tuple[str, str]:
    """(SQLSTATE, message) of an ErrorResponse payload; ("", "") if it cannot be read."""
    try:
        error = m.decode_backend(b"E", payload)
    except ProtocolViolation:
        return "", ""
    assert isinstance(error, m.ErrorOrNotice)
    return error.sqlstate or "", error.message or ""
