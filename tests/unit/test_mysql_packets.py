"""Unit tests for dbguard.wire.mysql.packets: PacketReader, encode_packets and the primitives.

Covers: golden frames written out by hand (COM_QUERY "SELECT 1", a three-packet response) fed
whole, byte at a time and split at every position; 16 MiB split/join at the edges (0xFFFFFF,
0xFFFFFF + 1, 2 x 0xFFFFFF bytes, with the trailing empty packet); sequence id checks and
wrap-around at 255; oversize logical payloads and buffer bounds; truncated packets left pending;
lenenc integers and strings at every prefix boundary, cross-checked against PyMySQL's
`protocol.MysqlPacket` reader; hypothesis round-trips and random bytes (only ProtocolViolation).
"""

from __future__ import annotations

from typing import Any

import pymysql.protocol
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguard.wire.mysql.packets import (
    MAX_LOGICAL_PAYLOAD,
    MAX_PACKET_PAYLOAD,
    Packet,
    PacketReader,
    PayloadReader,
    ProtocolViolation,
    encode_packets,
    lenenc_bytes,
    lenenc_bytes_or_null,
    lenenc_int,
    nul_bytes,
    uint_bytes,
)

_protocol: Any = pymysql.protocol
MysqlPacket = _protocol.MysqlPacket  # PyMySQL's reader, to cross-check the primitives

# COM_QUERY "SELECT 1": payload 9 bytes, sequence id 0.
GOLDEN_QUERY = b"\x09\x00\x00\x00\x03SELECT 1"
# A response to it: column count 1 (seq 1), an OK-as-EOF (seq 2) and an ERR (seq 3).
GOLDEN_RESPONSE = (
    b"\x01\x00\x00\x01\x01"
    b"\x07\x00\x00\x02\xfe\x00\x00\x02\x00\x00\x00"
    b"\x17\x00\x00\x03\xff\x48\x04#HY000No tables used"
)


def read_all(reader: PacketReader, chunks: list[bytes]) -> list[Packet]:
    out: list[Packet] = []
    for chunk in chunks:
        reader.feed(chunk)
        out.extend(reader.packets())
    return out


def test_golden_query_whole() -> None:
    packets = read_all(PacketReader(), [GOLDEN_QUERY])
    assert packets == [Packet(0, b"\x03SELECT 1", 1)]


def test_golden_response_byte_at_a_time() -> None:
    reader = PacketReader(expected_sequence=1)
    packets = read_all(reader, [GOLDEN_RESPONSE[i : i + 1] for i in range(len(GOLDEN_RESPONSE))])
    assert [p.payload for p in packets] == [
        b"\x01", b"\xfe\x00\x00\x02\x00\x00\x00", b"\xff\x48\x04#HY000No tables used"]
    assert [p.sequence_id for p in packets] == [1, 2, 3]
    assert reader.expected_sequence == 4
    assert reader.at_boundary


def test_golden_response_every_split() -> None:
    for cut in range(len(GOLDEN_RESPONSE) + 1):
        reader = PacketReader(expected_sequence=1)
        packets = read_all(reader, [GOLDEN_RESPONSE[:cut], GOLDEN_RESPONSE[cut:]])
        assert len(packets) == 3
        assert b"".join(encode_packets(p.payload, p.sequence_id)[0] for p in packets) == GOLDEN_RESPONSE


def test_encode_golden() -> None:
    assert encode_packets(b"\x03SELECT 1", 0) == (GOLDEN_QUERY, 1)
    assert encode_packets(b"", 7) == (b"\x00\x00\x00\x07", 8)
    assert encode_packets(b"x", 255) == (b"\x01\x00\x00\xffx", 0)


@pytest.mark.parametrize(
    ("size", "physical"),
    [
        (MAX_PACKET_PAYLOAD - 1, [MAX_PACKET_PAYLOAD - 1]),
        (MAX_PACKET_PAYLOAD, [MAX_PACKET_PAYLOAD, 0]),
        (MAX_PACKET_PAYLOAD + 1, [MAX_PACKET_PAYLOAD, 1]),
        (2 * MAX_PACKET_PAYLOAD, [MAX_PACKET_PAYLOAD, MAX_PACKET_PAYLOAD, 0]),
    ],
)
def test_split_and_join_large_payloads(size: int, physical: list[int]) -> None:
    payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    data, next_seq = encode_packets(payload, 254)
    assert next_seq == (254 + len(physical)) % 256
    # Walk the headers: lengths and wrapping sequence ids.
    pos, seq, lengths = 0, 254, []
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 3], "little")
        assert data[pos + 3] == seq
        lengths.append(length)
        pos += 4 + length
        seq = (seq + 1) % 256
    assert lengths == physical
    reader = PacketReader(expected_sequence=254)
    step = 1 << 20
    packets = read_all(reader, [data[i : i + step] for i in range(0, len(data), step)])
    assert len(packets) == 1
    assert packets[0].payload == payload
    assert packets[0].sequence_id == 254
    assert packets[0].next_sequence_id == next_seq
    assert reader.at_boundary


def test_split_payload_waits_for_trailing_empty_packet() -> None:
    data, _ = encode_packets(b"a" * MAX_PACKET_PAYLOAD, 0)
    reader = PacketReader()
    reader.feed(data[:-4])
    assert list(reader.packets()) == []
    assert reader.buffered == MAX_PACKET_PAYLOAD
    reader.feed(data[-4:])
    assert [len(p.payload) for p in reader.packets()] == [MAX_PACKET_PAYLOAD]


def test_wrong_sequence_id() -> None:
    reader = PacketReader()
    reader.feed(b"\x01\x00\x00\x05\x0e")
    with pytest.raises(ProtocolViolation, match="sequence id 5, expected 0"):
        list(reader.packets())


def test_wrong_sequence_id_inside_split_payload() -> None:
    data = bytearray(encode_packets(b"q" * (MAX_PACKET_PAYLOAD + 3), 0)[0])
    data[4 + MAX_PACKET_PAYLOAD + 3] = 9  # second packet should be seq 1
    reader = PacketReader()
    reader.feed(bytes(data))
    with pytest.raises(ProtocolViolation, match="sequence id 9, expected 1"):
        list(reader.packets())


def test_sequence_continues_and_can_be_reset() -> None:
    reader = PacketReader()
    assert read_all(reader, [encode_packets(b"\x0e", 0)[0]])[0].next_sequence_id == 1
    reader.feed(encode_packets(b"\x0e", 0)[0])
    with pytest.raises(ProtocolViolation):
        list(reader.packets())
    reader = PacketReader()
    read_all(reader, [encode_packets(b"\x0e", 0)[0]])
    reader.expect(0)
    assert len(read_all(reader, [encode_packets(b"\x0e", 0)[0]])) == 1
    reader.expect(None)
    assert read_all(reader, [encode_packets(b"\x0e", 42)[0]])[0].sequence_id == 42
    with pytest.raises(ValueError, match=r"0\.\.255"):
        reader.expect(256)


def test_cannot_reset_inside_split_payload() -> None:
    reader = PacketReader()
    reader.feed(encode_packets(b"a" * MAX_PACKET_PAYLOAD, 0)[0][:-4])
    list(reader.packets())
    with pytest.raises(ProtocolViolation):
        reader.expect(0)
    with pytest.raises(ProtocolViolation):
        reader.take_rest()


def test_oversize_payload_rejected_from_header_alone() -> None:
    reader = PacketReader(max_payload=100)
    reader.feed(b"\x65\x00\x00\x00")  # announces 101 bytes; none of them has arrived
    with pytest.raises(ProtocolViolation, match="over the 100-byte limit"):
        list(reader.packets())


def test_oversize_split_payload_rejected() -> None:
    reader = PacketReader(max_payload=MAX_PACKET_PAYLOAD + 10)
    data = encode_packets(b"a" * (MAX_PACKET_PAYLOAD + 11), 0)[0]
    reader.feed(data[: 4 + MAX_PACKET_PAYLOAD + 4])
    with pytest.raises(ProtocolViolation, match="limit"):
        list(reader.packets())
    assert MAX_LOGICAL_PAYLOAD == 64 * 1024 * 1024


def test_exact_limit_accepted() -> None:
    reader = PacketReader(max_payload=5)
    assert read_all(reader, [encode_packets(b"12345", 0)[0]])[0].payload == b"12345"


def test_buffer_bound() -> None:
    reader = PacketReader(max_payload=10, max_buffer=20)
    reader.feed(b"\x01\x00\x00\x00a" * 4)
    with pytest.raises(ProtocolViolation, match="buffered"):
        reader.feed(b"\x01\x00\x00\x04a")


def test_truncated_packet_stays_pending() -> None:
    reader = PacketReader()
    reader.feed(GOLDEN_QUERY[:-1])
    assert list(reader.packets()) == []
    assert not reader.at_boundary
    reader.feed(GOLDEN_QUERY[-1:])
    assert [p.payload for p in reader.packets()] == [b"\x03SELECT 1"]


def test_take_rest_after_ssl_request() -> None:
    reader = PacketReader(expected_sequence=1)
    ssl_request = encode_packets(b"\x00" * 32, 1)[0]
    reader.feed(ssl_request + b"\x16\x03\x01TLS")
    it = reader.packets()
    assert next(it).payload == b"\x00" * 32
    assert reader.take_rest() == b"\x16\x03\x01TLS"


def test_consumer_may_stop_iterating() -> None:
    reader = PacketReader(expected_sequence=1)
    reader.feed(GOLDEN_RESPONSE)
    assert next(iter(reader.packets())).payload == b"\x01"
    assert [p.sequence_id for p in reader.packets()] == [2, 3]


# ----------------------------------------------------------------------------- primitives


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (250, b"\xfa"),
        (251, b"\xfc\xfb\x00"),
        (0xFFFF, b"\xfc\xff\xff"),
        (0x10000, b"\xfd\x00\x00\x01"),
        (0xFFFFFF, b"\xfd\xff\xff\xff"),
        (0x1000000, b"\xfe\x00\x00\x00\x01\x00\x00\x00\x00"),
        ((1 << 64) - 1, b"\xfe" + b"\xff" * 8),
    ],
)
def test_lenenc_int_golden(value: int, encoded: bytes) -> None:
    assert lenenc_int(value) == encoded
    r = PayloadReader(encoded, "t")
    assert r.lenenc_int() == value
    r.end()
    assert MysqlPacket(encoded, "utf8").read_length_encoded_integer() == value


def test_lenenc_int_out_of_range() -> None:
    with pytest.raises(ValueError, match="unsigned"):
        lenenc_int(-1)
    with pytest.raises(ValueError, match="does not fit"):
        lenenc_int(1 << 64)


@pytest.mark.parametrize("prefix", [b"\xfb", b"\xff"])
def test_lenenc_int_invalid_prefix(prefix: bytes) -> None:
    with pytest.raises(ProtocolViolation, match="prefix"):
        PayloadReader(prefix, "t").lenenc_int()


@pytest.mark.parametrize("data", [b"", b"\xfc\x01", b"\xfd\x01\x02", b"\xfe\x00\x00\x00\x00\x00\x00\x00", b"\x05abcd"])
def test_truncated_primitives(data: bytes) -> None:
    with pytest.raises(ProtocolViolation, match="truncated"):
        PayloadReader(data, "t").lenenc_bytes()


def test_lenenc_strings_and_null() -> None:
    assert lenenc_bytes(b"abc") == b"\x03abc"
    assert lenenc_bytes_or_null(None) == b"\xfb"
    r = PayloadReader(b"\xfb\x02hi\x00", "t")
    assert r.lenenc_bytes_or_null() is None
    assert r.lenenc_bytes_or_null() == b"hi"
    assert r.lenenc_bytes_or_null() == b""
    r.end()
    long = b"x" * 300
    assert MysqlPacket(lenenc_bytes(long), "utf8").read_length_coded_string() == long


def test_nul_strings_and_fixed_ints() -> None:
    assert nul_bytes(b"root") == b"root\x00"
    with pytest.raises(ValueError, match="NUL"):
        nul_bytes(b"a\x00b")
    r = PayloadReader(b"root\x00\x01\x02\x03\x04\x05\x06tail", "t")
    assert r.nul_bytes() == b"root"
    assert r.uint16() == 0x0201
    assert r.uint32() == 0x06050403
    assert r.rest() == b"tail"
    with pytest.raises(ProtocolViolation, match="terminator"):
        PayloadReader(b"abc", "t").nul_bytes()
    assert uint_bytes(0x0102, 2) == b"\x02\x01"
    with pytest.raises(ValueError, match="fit"):
        uint_bytes(1 << 16, 2)
    with pytest.raises(ProtocolViolation, match="trailing"):
        PayloadReader(b"ab", "t").end()


# ----------------------------------------------------------------------------- hypothesis


@given(payloads=st.lists(st.binary(max_size=40), max_size=6), seq=st.integers(0, 255), data=st.data())
@settings(max_examples=300, deadline=None)
def test_stream_round_trip_any_split(payloads: list[bytes], seq: int, data: st.DataObject) -> None:
    stream = b""
    next_seq = seq
    for p in payloads:
        framed, next_seq = encode_packets(p, next_seq)
        stream += framed
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    reader = PacketReader(expected_sequence=seq)
    assert [p.payload for p in read_all(reader, chunks)] == payloads
    assert reader.at_boundary


@given(stream=st.binary(max_size=200))
@settings(max_examples=400, deadline=None)
def test_random_bytes_only_protocol_violation(stream: bytes) -> None:
    reader = PacketReader(expected_sequence=None, max_payload=64)
    try:
        for i in range(0, len(stream), 7):
            reader.feed(stream[i : i + 7])
            for _ in reader.packets():
                pass
    except ProtocolViolation:
        pass


@given(data=st.binary(max_size=40))
@settings(max_examples=300, deadline=None)
def test_random_bytes_primitives(data: bytes) -> None:
    r = PayloadReader(data, "t")
    try:
        while r.remaining():
            r.lenenc_bytes_or_null()
        r.nul_bytes()
    except ProtocolViolation:
        pass


@given(value=st.integers(0, (1 << 64) - 1))
def test_lenenc_int_round_trip(value: int) -> None:
    r = PayloadReader(lenenc_int(value), "t")
    assert r.lenenc_int() == value
    r.end()
