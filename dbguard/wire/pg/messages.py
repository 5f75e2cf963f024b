"""Typed PostgreSQL protocol 3.0 messages: decode from payloads, encode to bytes.

Owns: the message catalogue of both directions (frontend = client to server, backend =
server to client) as frozen dataclasses, with `decode_frontend` / `decode_backend` for a
(type, payload) pair from `framing.MessageScanner`, and `encode()` on every message.
Decoding is strict: any truncated field, missing terminator or trailing garbage raises
`ProtocolViolation`, never IndexError or UnicodeDecodeError.

The relay hot path does not build these objects for messages it only forwards; they are for
messages the session must understand, for tests and for building messages to send.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from dbguard.wire.pg.framing import (
    CANCEL_REQUEST_CODE,
    GSSENC_REQUEST_CODE,
    SSL_REQUEST_CODE,
    ProtocolViolation,
    frame,
    frame_untyped,
)

_I16 = struct.Struct("!h")
_U16 = struct.Struct("!H")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")


class PayloadReader:
    """Bounds-checked reader over one message payload."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def _need(self, n: int) -> None:
        if n < 0 or self._pos + n > len(self._data):
            raise ProtocolViolation(f"{self._what}: message truncated")

    def int16(self) -> int:
        self._need(2)
        (v,) = _I16.unpack_from(self._data, self._pos)
        self._pos += 2
        return int(v)

    def uint16(self) -> int:
        self._need(2)
        (v,) = _U16.unpack_from(self._data, self._pos)
        self._pos += 2
        return int(v)

    def int32(self) -> int:
        self._need(4)
        (v,) = _I32.unpack_from(self._data, self._pos)
        self._pos += 4
        return int(v)

    def uint32(self) -> int:
        self._need(4)
        (v,) = _U32.unpack_from(self._data, self._pos)
        self._pos += 4
        return int(v)

    def byte(self) -> bytes:
        self._need(1)
        b = self._data[self._pos : self._pos + 1]
        self._pos += 1
        return b

    def raw(self, n: int) -> bytes:
        self._need(n)
        b = self._data[self._pos : self._pos + n]
        self._pos += n
        return b

    def cstring_bytes(self) -> bytes:
        end = self._data.find(b"\x00", self._pos)
        if end < 0:
            raise ProtocolViolation(f"{self._what}: string without terminator")
        b = self._data[self._pos : end]
        self._pos = end + 1
        return b

    def cstring(self) -> str:
        raw = self.cstring_bytes()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            # Names and identifiers in the protocol are in the client encoding; keep the
            # bytes recoverable rather than failing on a non-UTF-8 client.
            return raw.decode("utf-8", "surrogateescape")

    def rest(self) -> bytes:
        b = self._data[self._pos :]
        self._pos = len(self._data)
        return b

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def end(self) -> None:
        if self._pos != len(self._data):
            raise ProtocolViolation(f"{self._what}: {self.remaining()} unexpected trailing bytes")


def _cstr(value: str | bytes) -> bytes:
    raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    if b"\x00" in raw:
        raise ValueError("protocol strings cannot contain NUL")
    return raw + b"\x00"


def _check_count(count: int, what: str) -> None:
    if count < 0:
        raise ProtocolViolation(f"{what}: negative count {count}")


# --------------------------------------------------------------------------- startup phase


@dataclass(frozen=True, slots=True)
class StartupMessage:
    protocol: int
    parameters: dict[str, str]

    def encode(self) -> bytes:
        body = _U32.pack(self.protocol)
        for key, value in self.parameters.items():
            body += _cstr(key) + _cstr(value)
        return frame_untyped(body + b"\x00")


@dataclass(frozen=True, slots=True)
class CancelRequest:
    process_id: int
    secret_key: bytes

    def encode(self) -> bytes:
        return frame_untyped(_U32.pack(CANCEL_REQUEST_CODE) + _U32.pack(self.process_id) + self.secret_key)


def decode_startup_parameters(body: bytes) -> dict[str, str]:
    """Parse the key/value list of a StartupMessage (after the protocol version)."""
    reader = PayloadReader(body, "StartupMessage")
    params: dict[str, str] = {}
    while True:
        key = reader.cstring()
        if key == "":
            break
        if key in params:
            raise ProtocolViolation(f"StartupMessage: duplicate parameter {key!r}")
        params[key] = reader.cstring()
    reader.end()
    return params


def decode_cancel_request(body: bytes) -> CancelRequest:
    reader = PayloadReader(body, "CancelRequest")
    pid = reader.uint32()
    secret = reader.rest()
    if not 4 <= len(secret) <= 256:
        raise ProtocolViolation("CancelRequest: invalid secret key length")
    return CancelRequest(pid, secret)


SSL_REQUEST = frame_untyped(_U32.pack(SSL_REQUEST_CODE))
GSSENC_REQUEST = frame_untyped(_U32.pack(GSSENC_REQUEST_CODE))

# --------------------------------------------------------------------------- backend


AUTH_OK = 0
AUTH_KERBEROS_V5 = 2
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_GSS = 7
AUTH_GSS_CONTINUE = 8
AUTH_SSPI = 9
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12


@dataclass(frozen=True, slots=True)
class Authentication:
    """Any AuthenticationXXX message ('R'): the code and its code-specific data."""

    code: int
    data: bytes = b""
    mechanisms: tuple[str, ...] = ()

    def encode(self) -> bytes:
        sasl = self.code == AUTH_SASL
        body = b"".join(_cstr(m) for m in self.mechanisms) + b"\x00" if sasl else self.data
        return frame(b"R", _I32.pack(self.code) + body)


@dataclass(frozen=True, slots=True)
class BackendKeyData:
    process_id: int
    secret_key: bytes

    def encode(self) -> bytes:
        return frame(b"K", _U32.pack(self.process_id) + self.secret_key)


@dataclass(frozen=True, slots=True)
class ParameterStatus:
    name: str
    value: str

    def encode(self) -> bytes:
        return frame(b"S", _cstr(self.name) + _cstr(self.value))


@dataclass(frozen=True, slots=True)
class ReadyForQuery:
    status: bytes  # b"I" idle, b"T" in transaction, b"E" failed transaction

    def encode(self) -> bytes:
        return frame(b"Z", self.status)


# Field codes of ErrorResponse / NoticeResponse.
FIELD_SEVERITY = "S"
FIELD_SEVERITY_V = "V"
FIELD_CODE = "C"
FIELD_MESSAGE = "M"
FIELD_DETAIL = "D"
FIELD_HINT = "H"


@dataclass(frozen=True, slots=True)
class ErrorOrNotice:
    """ErrorResponse ('E') or NoticeResponse ('N'): ordered (field code, value) pairs."""

    fields: tuple[tuple[str, str], ...]
    notice: bool = False

    def get(self, code: str) -> str | None:
        for key, value in self.fields:
            if key == code:
                return value
        return None

    @property
    def sqlstate(self) -> str | None:
        return self.get(FIELD_CODE)

    @property
    def message(self) -> str | None:
        return self.get(FIELD_MESSAGE)

    def encode(self) -> bytes:
        # Each field is a one-byte code (no terminator) followed by a NUL-terminated value.
        body = b"".join(k.encode("latin-1") + _cstr(v) for k, v in self.fields) + b"\x00"
        return frame(b"N" if self.notice else b"E", body)


def error_response(
    sqlstate: str,
    message: str,
    *,
    severity: str = "ERROR",
    detail: str | None = None,
    hint: str | None = None,
    notice: bool = False,
) -> ErrorOrNotice:
    """Build an ErrorResponse/NoticeResponse the way the server lays out its fields."""
    fields: list[tuple[str, str]] = [
        (FIELD_SEVERITY, severity),
        (FIELD_SEVERITY_V, severity),
        (FIELD_CODE, sqlstate),
        (FIELD_MESSAGE, message),
    ]
    if detail is not None:
        fields.append((FIELD_DETAIL, detail))
    if hint is not None:
        fields.append((FIELD_HINT, hint))
    return ErrorOrNotice(tuple(fields), notice=notice)


def error(sqlstate: str, message: str, *, detail: str | None = None, hint: str | None = None) -> bytes:
    """An encoded ErrorResponse (severity ERROR): the statement failed, the session goes on."""
    return error_response(sqlstate, message, detail=detail, hint=hint).encode()


def fatal(sqlstate: str, message: str, *, detail: str | None = None, hint: str | None = None) -> bytes:
    """An encoded ErrorResponse (severity FATAL): the connection is about to close."""
    return error_response(sqlstate, message, severity="FATAL", detail=detail, hint=hint).encode()


@dataclass(frozen=True, slots=True)
class CommandComplete:
    tag: str

    def encode(self) -> bytes:
        return frame(b"C", _cstr(self.tag))


@dataclass(frozen=True, slots=True)
class FieldDescription:
    name: str
    table_oid: int
    column_number: int
    type_oid: int
    type_size: int
    type_modifier: int
    format_code: int


@dataclass(frozen=True, slots=True)
class RowDescription:
    fields: tuple[FieldDescription, ...]

    def encode(self) -> bytes:
        body = _I16.pack(len(self.fields))
        for f in self.fields:
            body += _cstr(f.name) + struct.pack(
                "!IhIhih", f.table_oid, f.column_number, f.type_oid, f.type_size,
                f.type_modifier, f.format_code,
            )
        return frame(b"T", body)


@dataclass(frozen=True, slots=True)
class DataRow:
    values: tuple[bytes | None, ...]

    def encode(self) -> bytes:
        parts = [_I16.pack(len(self.values))]
        for v in self.values:
            if v is None:
                parts.append(_I32.pack(-1))
            else:
                parts.append(_I32.pack(len(v)))
                parts.append(v)
        return frame(b"D", b"".join(parts))


@dataclass(frozen=True, slots=True)
class CopyResponse:
    """CopyInResponse ('G'), CopyOutResponse ('H') or CopyBothResponse ('W')."""

    kind: bytes
    overall_format: int
    column_formats: tuple[int, ...]

    def encode(self) -> bytes:
        body = struct.pack("!Bh", self.overall_format, len(self.column_formats))
        body += b"".join(_I16.pack(f) for f in self.column_formats)
        return frame(self.kind, body)


@dataclass(frozen=True, slots=True)
class NotificationResponse:
    process_id: int
    channel: str
    payload: str

    def encode(self) -> bytes:
        return frame(b"A", _U32.pack(self.process_id) + _cstr(self.channel) + _cstr(self.payload))


@dataclass(frozen=True, slots=True)
class ParameterDescription:
    type_oids: tuple[int, ...]

    def encode(self) -> bytes:
        return frame(b"t", _U16.pack(len(self.type_oids)) + b"".join(_U32.pack(o) for o in self.type_oids))


@dataclass(frozen=True, slots=True)
class NegotiateProtocolVersion:
    newest_version: int  # the whole version number, e.g. 196608 for 3.0 (not just the minor)
    unrecognized_options: tuple[str, ...]

    def encode(self) -> bytes:
        body = _I32.pack(self.newest_version) + _I32.pack(len(self.unrecognized_options))
        body += b"".join(_cstr(o) for o in self.unrecognized_options)
        return frame(b"v", body)


@dataclass(frozen=True, slots=True)
class FunctionCallResponse:
    value: bytes | None

    def encode(self) -> bytes:
        if self.value is None:
            return frame(b"V", _I32.pack(-1))
        return frame(b"V", _I32.pack(len(self.value)) + self.value)


@dataclass(frozen=True, slots=True)
class Bare:
    """A message whose payload is empty or opaque: ParseComplete, BindComplete, NoData,
    CloseComplete, PortalSuspended, EmptyQueryResponse, CopyDone, Flush, Sync, Terminate,
    CopyData (payload kept as is)."""

    type: bytes
    payload: bytes = b""

    def encode(self) -> bytes:
        return frame(self.type, self.payload)


BackendMessage = (
    Authentication | BackendKeyData | ParameterStatus | ReadyForQuery | ErrorOrNotice
    | CommandComplete | RowDescription | DataRow | CopyResponse | NotificationResponse
    | ParameterDescription | NegotiateProtocolVersion | FunctionCallResponse | Bare
)

# ParseComplete, BindComplete, CloseComplete, PortalSuspended, EmptyQueryResponse, NoData, CopyDone
_BARE_BACKEND = frozenset(b"123sInc")


def decode_backend(msg_type: bytes, payload: bytes) -> BackendMessage:
    """Decode one backend (server to client) message."""
    t = msg_type
    r = PayloadReader(payload, f"backend message {t!r}")
    result: BackendMessage
    if t == b"R":
        code = r.int32()
        if code == AUTH_SASL:
            mechs: list[str] = []
            while True:
                m = r.cstring()
                if not m:
                    break
                mechs.append(m)
            result = Authentication(code, mechanisms=tuple(mechs))
        else:
            result = Authentication(code, r.rest())
    elif t == b"K":
        pid = r.uint32()
        secret = r.rest()
        if not 4 <= len(secret) <= 256:
            raise ProtocolViolation("BackendKeyData: invalid secret key length")
        result = BackendKeyData(pid, secret)
    elif t == b"S":
        result = ParameterStatus(r.cstring(), r.cstring())
    elif t == b"Z":
        status = r.byte()
        if status not in (b"I", b"T", b"E"):
            raise ProtocolViolation(f"ReadyForQuery: unknown status {status!r}")
        result = ReadyForQuery(status)
    elif t in (b"E", b"N"):
        fields: list[tuple[str, str]] = []
        while True:
            code_byte = r.byte()
            if code_byte == b"\x00":
                break
            fields.append((code_byte.decode("latin-1"), r.cstring()))
        result = ErrorOrNotice(tuple(fields), notice=t == b"N")
    elif t == b"C":
        result = CommandComplete(r.cstring())
    elif t == b"T":
        count = r.int16()
        _check_count(count, "RowDescription")
        descs = []
        for _ in range(count):
            descs.append(
                FieldDescription(r.cstring(), r.uint32(), r.int16(), r.uint32(), r.int16(), r.int32(), r.int16())
            )
        result = RowDescription(tuple(descs))
    elif t == b"D":
        count = r.int16()
        _check_count(count, "DataRow")
        values: list[bytes | None] = []
        for _ in range(count):
            n = r.int32()
            values.append(None if n == -1 else r.raw(n))
        result = DataRow(tuple(values))
    elif t in (b"G", b"H", b"W"):
        overall = r.byte()[0]
        count = r.int16()
        _check_count(count, "CopyResponse")
        result = CopyResponse(t, overall, tuple(r.int16() for _ in range(count)))
    elif t == b"A":
        result = NotificationResponse(r.uint32(), r.cstring(), r.cstring())
    elif t == b"t":
        count = r.uint16()
        result = ParameterDescription(tuple(r.uint32() for _ in range(count)))
    elif t == b"v":
        minor = r.int32()
        count = r.int32()
        _check_count(count, "NegotiateProtocolVersion")
        result = NegotiateProtocolVersion(minor, tuple(r.cstring() for _ in range(count)))
    elif t == b"V":
        n = r.int32()
        result = FunctionCallResponse(None if n == -1 else r.raw(n))
    elif t == b"d":
        result = Bare(t, r.rest())
    elif t[0] in _BARE_BACKEND:
        result = Bare(t)
    else:
        raise ProtocolViolation(f"unknown backend message type {t!r}")
    r.end()
    return result


# --------------------------------------------------------------------------- frontend


@dataclass(frozen=True, slots=True)
class Query:
    sql: bytes  # raw, in the client encoding

    def encode(self) -> bytes:
        return frame(b"Q", _cstr(self.sql))


@dataclass(frozen=True, slots=True)
class Parse:
    name: str
    sql: bytes
    param_types: tuple[int, ...] = ()

    def encode(self) -> bytes:
        body = _cstr(self.name) + _cstr(self.sql) + _U16.pack(len(self.param_types))
        body += b"".join(_U32.pack(o) for o in self.param_types)
        return frame(b"P", body)


@dataclass(frozen=True, slots=True)
class Bind:
    portal: str
    statement: str
    param_formats: tuple[int, ...] = ()
    params: tuple[bytes | None, ...] = ()
    result_formats: tuple[int, ...] = ()

    def encode(self) -> bytes:
        parts = [_cstr(self.portal), _cstr(self.statement), _U16.pack(len(self.param_formats))]
        parts += [_I16.pack(f) for f in self.param_formats]
        parts.append(_U16.pack(len(self.params)))
        for p in self.params:
            parts.append(_I32.pack(-1) if p is None else _I32.pack(len(p)) + p)
        parts.append(_U16.pack(len(self.result_formats)))
        parts += [_I16.pack(f) for f in self.result_formats]
        return frame(b"B", b"".join(parts))


@dataclass(frozen=True, slots=True)
class Describe:
    kind: bytes  # b"S" statement or b"P" portal
    name: str

    def encode(self) -> bytes:
        return frame(b"D", self.kind + _cstr(self.name))


@dataclass(frozen=True, slots=True)
class Close:
    kind: bytes  # b"S" statement or b"P" portal
    name: str

    def encode(self) -> bytes:
        return frame(b"C", self.kind + _cstr(self.name))


@dataclass(frozen=True, slots=True)
class Execute:
    portal: str
    max_rows: int = 0

    def encode(self) -> bytes:
        return frame(b"E", _cstr(self.portal) + _I32.pack(self.max_rows))


@dataclass(frozen=True, slots=True)
class CopyFail:
    reason: str

    def encode(self) -> bytes:
        return frame(b"f", _cstr(self.reason))


@dataclass(frozen=True, slots=True)
class FunctionCall:
    function_oid: int
    arg_formats: tuple[int, ...] = ()
    args: tuple[bytes | None, ...] = ()
    result_format: int = 0

    def encode(self) -> bytes:
        parts = [_U32.pack(self.function_oid), _U16.pack(len(self.arg_formats))]
        parts += [_I16.pack(f) for f in self.arg_formats]
        parts.append(_U16.pack(len(self.args)))
        for a in self.args:
            parts.append(_I32.pack(-1) if a is None else _I32.pack(len(a)) + a)
        parts.append(_I16.pack(self.result_format))
        return frame(b"F", b"".join(parts))


@dataclass(frozen=True, slots=True)
class PasswordLike:
    """'p': PasswordMessage, SASLInitialResponse, SASLResponse or GSSResponse. Which one it
    is depends on the authentication state, so the session decodes the payload itself
    (see `decode_sasl_initial_response`)."""

    payload: bytes = field(repr=False)

    def encode(self) -> bytes:
        return frame(b"p", self.payload)


FrontendMessage = (
    Query | Parse | Bind | Describe | Close | Execute | CopyFail | FunctionCall | PasswordLike | Bare
)

_BARE_FRONTEND = frozenset(b"cHSX")  # CopyDone, Flush, Sync, Terminate


def _formats_and_values(r: PayloadReader, what: str) -> tuple[tuple[int, ...], tuple[bytes | None, ...]]:
    # The server reads these counts as unsigned 16-bit (up to 65535 parameters).
    nformats = r.uint16()
    formats = tuple(r.int16() for _ in range(nformats))
    nvalues = r.uint16()
    values: list[bytes | None] = []
    for _ in range(nvalues):
        n = r.int32()
        if n < -1:
            raise ProtocolViolation(f"{what}: invalid value length {n}")
        values.append(None if n == -1 else r.raw(n))
    return formats, tuple(values)


def decode_frontend(msg_type: bytes, payload: bytes) -> FrontendMessage:
    """Decode one frontend (client to server) message after startup."""
    t = msg_type
    r = PayloadReader(payload, f"frontend message {t!r}")
    result: FrontendMessage
    if t == b"Q":
        result = Query(r.cstring_bytes())
    elif t == b"P":
        name = r.cstring()
        sql = r.cstring_bytes()
        count = r.uint16()
        result = Parse(name, sql, tuple(r.uint32() for _ in range(count)))
    elif t == b"B":
        portal = r.cstring()
        statement = r.cstring()
        formats, params = _formats_and_values(r, "Bind")
        nresult = r.uint16()
        result = Bind(portal, statement, formats, params, tuple(r.int16() for _ in range(nresult)))
    elif t in (b"D", b"C"):
        kind = r.byte()
        if kind not in (b"S", b"P"):
            raise ProtocolViolation(f"{'Describe' if t == b'D' else 'Close'}: invalid target {kind!r}")
        name = r.cstring()
        result = Describe(kind, name) if t == b"D" else Close(kind, name)
    elif t == b"E":
        result = Execute(r.cstring(), r.int32())
    elif t == b"f":
        result = CopyFail(r.cstring())
    elif t == b"F":
        oid = r.uint32()
        formats, args = _formats_and_values(r, "FunctionCall")
        result = FunctionCall(oid, formats, args, r.int16())
    elif t == b"p":
        result = PasswordLike(r.rest())
    elif t == b"d":
        result = Bare(t, r.rest())
    elif t[0] in _BARE_FRONTEND:
        result = Bare(t)
    else:
        raise ProtocolViolation(f"unknown frontend message type {t!r}")
    r.end()
    return result


def decode_sasl_initial_response(payload: bytes) -> tuple[str, bytes]:
    """SASLInitialResponse: mechanism name, then int32 length (-1 = none) and data."""
    r = PayloadReader(payload, "SASLInitialResponse")
    mechanism = r.cstring()
    n = r.int32()
    data = b"" if n == -1 else r.raw(n)
    r.end()
    return mechanism, data


def encode_sasl_initial_response(mechanism: str, data: bytes) -> bytes:
    return frame(b"p", _cstr(mechanism) + _I32.pack(len(data)) + data)


def decode_password(payload: bytes) -> str:
    """PasswordMessage (cleartext or md5 response): one NUL-terminated string."""
    r = PayloadReader(payload, "PasswordMessage")
    value = r.cstring()
    r.end()
    return value


def ready_for_query(status: bytes) -> bytes:
    return frame(b"Z", status)
