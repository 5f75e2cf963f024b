"""Framing of the PostgreSQL byte stream into messages, sans-IO.

Owns: splitting a stream of typed messages (1-byte type, int32 length that counts itself,
payload) into segments, and parsing the untyped startup-phase packets. It never touches a
socket and never interprets a payload beyond its length.

Design: the proxy must look at some messages in full (a Query, a ReadyForQuery) while most
bytes (DataRow, CopyData) only need relaying. `MessageScanner` therefore yields whole
`Frame`s only for the message types the caller asks to inspect, and coalesces everything
else into `Passthrough` slices that can be written onward as they arrive, so a 500 MB row
never sits in memory and a result set of small rows is relayed in large slices.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

# PostgreSQL's own limit for a startup packet (src/include/libpq/pqcomm.h MAX_STARTUP_PACKET_LENGTH).
MAX_STARTUP_PACKET = 10_000
# Largest message the proxy will buffer to inspect. The server itself refuses messages over
# 1 GiB (PQ_LARGE_MESSAGE_LIMIT); inspected messages are statements and their parameters, so
# 256 MiB bounds memory per connection while still admitting very large bind parameters.
# Messages that are only relayed (DataRow, CopyData) are streamed and never buffered whole.
MAX_INSPECTED_MESSAGE = 256 * 1024 * 1024
# A length field can never be below 4 (it counts itself) nor above the int32 range.
_MIN_LENGTH = 4
_MAX_LENGTH = 0x7FFF_FFFF

_HEADER = struct.Struct("!cI")
# Every type byte: for scanners that must see every message whole (handshakes, tests).
ALL_TYPES = frozenset(bytes([i]) for i in range(256))
HEADER = _HEADER  # type byte + int32 length, for the session's one-pass hot path
_INT32 = struct.Struct("!I")

# Startup-phase request codes (the int32 after the length of an untyped packet).
PROTOCOL_3_0 = 196608  # 3 << 16
PROTOCOL_3_2 = 196610  # 3 << 16 | 2
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102


class ProtocolViolation(Exception):
    """The peer sent bytes that are not a valid PostgreSQL protocol stream (SQLSTATE 08P01)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete message: its type byte, its payload, and its exact original bytes."""

    type: bytes
    payload: bytes
    raw: bytes


@dataclass(frozen=True, slots=True)
class Passthrough:
    """Bytes of messages the caller did not ask to inspect; relay them unchanged."""

    data: bytes


Segment = Frame | Passthrough


class MessageScanner:
    """Incremental scanner of a typed-message stream.

    `feed()` appends bytes; iterating `segments()` yields what is complete so far. The set of
    inspected types may change between segments (e.g. after a RowDescription that needs
    masking, DataRows become interesting), which is why `segments()` is a generator that reads
    `self.inspect` at each message boundary.
    """

    __slots__ = ("_buffer", "_pass_remaining", "_pos", "inspect", "max_inspected")

    def __init__(self, inspect: frozenset[bytes], max_inspected: int = MAX_INSPECTED_MESSAGE):
        self.inspect = inspect
        self.max_inspected = max_inspected
        self._buffer = bytearray()
        # Bytes of buffer already handed out; a consumer may stop iterating at any segment
        # and the next `segments()` resumes right after it.
        self._pos = 0
        # Bytes of a passthrough message still to come after the buffer was drained.
        self._pass_remaining = 0

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += data

    @property
    def buffered(self) -> int:
        return len(self._buffer) - self._pos

    @property
    def at_boundary(self) -> bool:
        """True when no partial message is pending (nothing buffered, nothing owed)."""
        return self.buffered == 0 and self._pass_remaining == 0

    def segments(self) -> Iterator[Segment]:
        buf = self._buffer
        pos = self._pos
        end = len(buf)
        if self._pass_remaining and pos < end:
            take = min(self._pass_remaining, end - pos)
            self._pass_remaining -= take
            data = bytes(buf[pos : pos + take])
            pos += take
            self._pos = pos
            yield Passthrough(data)
        pass_start = pos  # start of the current run of passthrough bytes
        while end - pos >= 5:
            msg_type, length = _HEADER.unpack_from(buf, pos)
            if length < _MIN_LENGTH or length > _MAX_LENGTH:
                raise ProtocolViolation(f"invalid message length {length} for type {msg_type!r}")
            total = 1 + length
            if msg_type in self.inspect:
                if length > self.max_inspected:
                    raise ProtocolViolation(
                        f"message of type {msg_type!r} is {length} bytes, "
                        f"over the {self.max_inspected}-byte limit"
                    )
                if end - pos < total:
                    break
                if pos > pass_start:
                    self._pos = pos
                    yield Passthrough(bytes(buf[pass_start:pos]))
                raw = bytes(buf[pos : pos + total])
                pos += total
                pass_start = pos
                self._pos = pos
                yield Frame(msg_type, raw[5:], raw)
            else:
                if end - pos < total:
                    # Relay what we have of this message now; remember how much is still owed.
                    self._pass_remaining = total - (end - pos)
                    pos = end
                    break
                pos += total
        self._pos = pos
        if pos > pass_start:
            yield Passthrough(bytes(buf[pass_start:pos]))
        if self._pos == len(buf):
            buf.clear()
            self._pos = 0


@dataclass(frozen=True, slots=True)
class StartupPacket:
    """An untyped startup-phase packet: its request code and the bytes after it."""

    code: int
    body: bytes


class StartupReader:
    """Reads untyped startup-phase packets (StartupMessage, SSLRequest, CancelRequest...)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_packet(self) -> StartupPacket | None:
        buf = self._buffer
        if len(buf) < 4:
            return None
        (length,) = _INT32.unpack_from(buf, 0)
        if length < 8 or length > MAX_STARTUP_PACKET:
            raise ProtocolViolation(f"invalid startup packet length {length}")
        if len(buf) < length:
            return None
        (code,) = _INT32.unpack_from(buf, 4)
        body = bytes(buf[8:length])
        del buf[:length]
        return StartupPacket(code, body)

    def take_rest(self) -> bytes:
        """Bytes received after the last packet (e.g. typed messages sent without waiting)."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest


def frame(msg_type: bytes, payload: bytes) -> bytes:
    """Encode one typed message."""
    return _HEADER.pack(msg_type, len(payload) + 4) + payload


def frame_untyped(payload: bytes) -> bytes:
    """Encode one untyped (startup-phase) packet."""
    return _INT32.pack(len(payload) + 4) + payload
