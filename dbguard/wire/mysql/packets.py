"""The MySQL/MariaDB packet layer and the protocol's primitive types, sans-IO.

Owns: the 4-byte packet header (3-byte little-endian payload length + 1-byte sequence id),
joining payloads split across 0xFFFFFF-byte packets into logical packets, sequence id checks,
size bounds, splitting a payload back into packets, and bounds-checked readers/writers for
the protocol's primitives (fixed little-endian ints, length-encoded ints and strings,
NUL-terminated strings). Must not touch: sockets, asyncio, the meaning of a payload
(that is `messages.py`), compression (COMPRESS is not supported by this layer), TLS.

Sequence ids: every packet's id is the previous one's + 1 (mod 256) within one exchange; a
new command resets it to 0 (`PacketReader.expect(0)`), which only the session state machine
knows, so the reader only checks continuity and lets the session say where an exchange starts.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

MAX_PACKET_PAYLOAD: Final = 0xFFFFFF
"""Largest payload of one physical packet; a longer logical payload continues in the next."""
HEADER_SIZE: Final = 4

MAX_LOGICAL_PAYLOAD: Final = 64 * 1024 * 1024
"""Largest logical payload the reader buffers (64 MiB). MySQL's own `max_allowed_packet`
defaults to 64 MiB (8.0+) and MariaDB's to 16 MiB; a payload the server would refuse anyway
must not cost the proxy more memory than that. Configurable per reader."""

NULL_MARKER: Final = 0xFB
"""In a text resultset row, this lenenc prefix byte means SQL NULL."""

_U16: Final = struct.Struct("<H")
_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")


class ProtocolViolation(Exception):
    """The peer sent bytes that are not a valid MySQL protocol stream.

    Rendered on the wire as ERR 1047 (ER_UNKNOWN_COM_ERROR) / 08S01, or by closing the
    connection when the stream can no longer be trusted (e.g. a broken sequence id)."""


class UnsupportedFeature(ProtocolViolation):
    """Valid protocol the codec recognises but refuses to decode (the session must refuse it)."""


@dataclass(frozen=True, slots=True)
class Packet:
    """One logical packet: its payload (joined if it was split) and its sequence ids.

    `sequence_id` is the id of the first physical packet; `next_sequence_id` is the id the
    next packet in this exchange must carry (after the last physical packet, + 1)."""

    sequence_id: int
    payload: bytes
    next_sequence_id: int


class PacketReader:
    """Streaming reader: `feed()` bytes, iterate `packets()` for complete logical packets.

    `expected_sequence` is the id the next physical packet must carry; `None` accepts any
    id for the next packet (then checks continuity from it). The buffer of unconsumed bytes
    is bounded by `max_buffer`: a driver must drain `packets()` between reads.
    """

    __slots__ = ("_buffer", "_parts", "_parts_size", "_pos", "_start_seq", "expected_sequence",
                 "max_buffer", "max_payload")

    def __init__(self, *, expected_sequence: int | None = 0, max_payload: int = MAX_LOGICAL_PAYLOAD,
                 max_buffer: int | None = None) -> None:
        if max_payload < 0:
            raise ValueError("max_payload must not be negative")
        self.expected_sequence = expected_sequence
        self.max_payload = max_payload
        # One logical payload plus its headers plus one more physical packet of pipelining.
        self.max_buffer = max_buffer if max_buffer is not None else (
            max_payload + MAX_PACKET_PAYLOAD + HEADER_SIZE * (max_payload // MAX_PACKET_PAYLOAD + 2))
        self._buffer = bytearray()
        self._pos = 0
        self._parts: list[bytes] = []
        self._parts_size = 0
        self._start_seq = 0

    def expect(self, sequence_id: int | None) -> None:
        """Set the id the next packet must carry (0 at the start of a command)."""
        if self._parts:
            raise ProtocolViolation("cannot reset the sequence id inside a split packet")
        if sequence_id is not None and not 0 <= sequence_id <= 255:
            raise ValueError("sequence ids are 0..255")
        self.expected_sequence = sequence_id

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned in a packet."""
        return len(self._buffer) - self._pos + self._parts_size

    @property
    def at_boundary(self) -> bool:
        """Nothing buffered: the next byte fed starts a packet (`buffered == 0`, checked on the
        session's hot path for every read)."""
        return self._pos == len(self._buffer) and not self._parts_size

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buffer[: self._pos]
            self._pos = 0
        if len(self._buffer) + len(data) > self.max_buffer:
            raise ProtocolViolation(
                f"{len(self._buffer) + len(data)} bytes buffered, over the {self.max_buffer}-byte limit")
        self._buffer += data

    def packets(self) -> Iterator[Packet]:
        buf = self._buffer
        while len(buf) - self._pos >= HEADER_SIZE:
            pos = self._pos
            length = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
            seq = buf[pos + 3]
            expected = self.expected_sequence
            if expected is not None and seq != expected:
                raise ProtocolViolation(f"packet sequence id {seq}, expected {expected}")
            if self._parts_size + length > self.max_payload:
                raise ProtocolViolation(
                    f"payload of at least {self._parts_size + length} bytes, "
                    f"over the {self.max_payload}-byte limit")
            if len(buf) - pos - HEADER_SIZE < length:
                break
            if not self._parts and self._parts_size == 0:
                self._start_seq = seq
            self._parts.append(bytes(buf[pos + HEADER_SIZE: pos + HEADER_SIZE + length]))
            self._parts_size += length
            self._pos = pos + HEADER_SIZE + length
            self.expected_sequence = (seq + 1) & 0xFF
            if length == MAX_PACKET_PAYLOAD:
                continue  # the payload continues in the next packet (possibly an empty one)
            payload = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
            self._parts = []
            self._parts_size = 0
            yield Packet(self._start_seq, payload, self.expected_sequence)
        if self._pos == len(buf):
            buf.clear()
            self._pos = 0

    def take_rest(self) -> bytes:
        """Unconsumed bytes (e.g. a TLS ClientHello after an SSLRequest). Not inside a split packet."""
        if self._parts:
            raise ProtocolViolation("connection switched inside a split packet")
        rest = bytes(self._buffer[self._pos:])
        self._buffer.clear()
        self._pos = 0
        return rest


def encode_packets(payload: bytes, first_seq: int) -> tuple[bytes, int]:
    """Frame one logical payload; returns the bytes and the next sequence id.

    Payloads of MAX_PACKET_PAYLOAD bytes or more are split; one whose length is a non-zero
    exact multiple of it ends with an empty packet. An empty payload is one empty packet.
    """
    if not 0 <= first_seq <= 255:
        raise ValueError("sequence ids are 0..255")
    out = bytearray()
    seq = first_seq
    pos = 0
    while True:
        chunk = payload[pos: pos + MAX_PACKET_PAYLOAD]
        n = len(chunk)
        out += bytes((n & 0xFF, n >> 8 & 0xFF, n >> 16, seq))
        out += chunk
        seq = (seq + 1) & 0xFF
        pos += n
        if n < MAX_PACKET_PAYLOAD:
            return bytes(out), seq


# --------------------------------------------------------------------------- primitives


class PayloadReader:
    """Bounds-checked little-endian reader over one payload. Every failure is a ProtocolViolation."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str, pos: int = 0) -> None:
        self._data = data
        self._pos = pos
        self._what = what

    def fail(self, reason: str) -> ProtocolViolation:
        return ProtocolViolation(f"{self._what}: {reason}")

    def _need(self, n: int) -> None:
        if n < 0 or self._pos + n > len(self._data):
            raise self.fail("packet truncated")

    @property
    def position(self) -> int:
        return self._pos

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def peek(self) -> int:
        self._need(1)
        return self._data[self._pos]

    def uint(self, size: int) -> int:
        self._need(size)
        v = int.from_bytes(self._data[self._pos: self._pos + size], "little")
        self._pos += size
        return v

    def uint8(self) -> int:
        self._need(1)
        v = self._data[self._pos]
        self._pos += 1
        return v

    def uint16(self) -> int:
        return self.uint(2)

    def uint32(self) -> int:
        return self.uint(4)

    def raw(self, n: int) -> bytes:
        self._need(n)
        b = self._data[self._pos: self._pos + n]
        self._pos += n
        return b

    def lenenc_int(self) -> int:
        """A length-encoded integer. 0xFB (NULL) and 0xFF (ERR) are not integers here."""
        first = self.uint8()
        if first < 0xFB:
            return first
        if first == 0xFC:
            return self.uint(2)
        if first == 0xFD:
            return self.uint(3)
        if first == 0xFE:
            return self.uint(8)
        raise self.fail(f"invalid length-encoded integer prefix 0x{first:02x}")

    def lenenc_bytes(self) -> bytes:
        return self.raw(self.lenenc_int())

    def lenenc_bytes_or_null(self) -> bytes | None:
        """A text-row value: lenenc string, or 0xFB for NULL."""
        if self.peek() == NULL_MARKER:
            self._pos += 1
            return None
        return self.lenenc_bytes()

    def nul_bytes(self) -> bytes:
        end = self._data.find(b"\x00", self._pos)
        if end < 0:
            raise self.fail("string without NUL terminator")
        b = self._data[self._pos: end]
        self._pos = end + 1
        return b

    def nul_bytes_or_rest(self) -> bytes:
        """NUL-terminated, or running to the end of the payload (servers omit some final NULs)."""
        end = self._data.find(b"\x00", self._pos)
        if end < 0:
            return self.rest()
        b = self._data[self._pos: end]
        self._pos = end + 1
        return b

    def rest(self) -> bytes:
        b = self._data[self._pos:]
        self._pos = len(self._data)
        return b

    def end(self) -> None:
        if self._pos != len(self._data):
            raise self.fail(f"{self.remaining()} unexpected trailing bytes")


def uint_bytes(value: int, size: int) -> bytes:
    if not 0 <= value < 1 << (8 * size):
        raise ValueError(f"{value} does not fit in {size} unsigned bytes")
    return value.to_bytes(size, "little")


def lenenc_int(value: int) -> bytes:
    if value < 0:
        raise ValueError("length-encoded integers are unsigned")
    if value < 0xFB:
        return bytes((value,))
    if value < 1 << 16:
        return b"\xfc" + _U16.pack(value)
    if value < 1 << 24:
        return b"\xfd" + value.to_bytes(3, "little")
    if value < 1 << 64:
        return b"\xfe" + _U64.pack(value)
    raise ValueError(f"{value} does not fit in a length-encoded integer")


def lenenc_bytes(value: bytes) -> bytes:
    return lenenc_int(len(value)) + value


def lenenc_bytes_or_null(value: bytes | None) -> bytes:
    return b"\xfb" if value is None else lenenc_int(len(value)) + value


def nul_bytes(value: bytes) -> bytes:
    if b"\x00" in value:
        raise ValueError("NUL-terminated protocol strings cannot contain NUL")
    return value + b"\x00"
