"""Unit tests for dbguard.wire.pg.framing: MessageScanner and StartupReader, byte by byte.

Covers: golden frames (a simple Query, a Parse/Bind/Execute/Sync batch, a result set response)
fed whole, one byte at a time and split at every position, checking that the segments put
back together are exactly the input and that inspected messages come out whole and in order;
streaming of a huge relayed message with bounded buffering; switching the inspected set
between segments; resuming after a consumer stops iterating; length validation (below 4,
above the int32 range, over the inspection limit); the startup-packet length bounds; and
hypothesis properties over random message lists, random split points and random bytes.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguard.wire.pg.framing import (
    CANCEL_REQUEST_CODE,
    MAX_STARTUP_PACKET,
    PROTOCOL_3_0,
    SSL_REQUEST_CODE,
    Frame,
    MessageScanner,
    Passthrough,
    ProtocolViolation,
    Segment,
    StartupPacket,
    StartupReader,
    frame,
    frame_untyped,
)

# ----------------------------------------------------------------------------- golden frames
# Written out by hand from the protocol documentation (lengths count themselves, not the type).

# Query "SELECT 1": 4 + len("SELECT 1\0") = 13.
GOLDEN_QUERY = b"Q\x00\x00\x00\x0dSELECT 1\x00"

# Parse(unnamed, "SELECT $1::int", [int4]) / Bind(unnamed portal and statement, one text
# parameter "42", one text result) / Execute(unnamed, no row limit) / Sync.
GOLDEN_PARSE = b"P\x00\x00\x00\x1a\x00SELECT $1::int\x00\x00\x01\x00\x00\x00\x17"
GOLDEN_BIND = (
    b"B\x00\x00\x00\x16"
    b"\x00"  # portal ""
    b"\x00"  # statement ""
    b"\x00\x01\x00\x00"  # 1 parameter format: text
    b"\x00\x01\x00\x00\x00\x0242"  # 1 parameter: "42"
    b"\x00\x01\x00\x00"  # 1 result format: text
)
GOLDEN_EXECUTE = b"E\x00\x00\x00\x09\x00\x00\x00\x00\x00"
GOLDEN_SYNC = b"S\x00\x00\x00\x04"
GOLDEN_EXTENDED_BATCH = (GOLDEN_PARSE, GOLDEN_BIND, GOLDEN_EXECUTE, GOLDEN_SYNC)

# RowDescription (one int4 column "n"), three DataRows, CommandComplete "SELECT 3",
# ReadyForQuery idle.
GOLDEN_ROW_DESCRIPTION = (
    b"T\x00\x00\x00\x1a\x00\x01n\x00"
    b"\x00\x00\x00\x00"  # table oid
    b"\x00\x00"  # column number
    b"\x00\x00\x00\x17"  # type oid 23 (int4)
    b"\x00\x04"  # type size
    b"\xff\xff\xff\xff"  # type modifier -1
    b"\x00\x00"  # text format
)
GOLDEN_DATA_ROWS = tuple(b"D\x00\x00\x00\x0b\x00\x01\x00\x00\x00\x01" + d for d in (b"1", b"2", b"3"))
GOLDEN_COMMAND_COMPLETE = b"C\x00\x00\x00\x0dSELECT 3\x00"
GOLDEN_READY = b"Z\x00\x00\x00\x05I"
GOLDEN_RESPONSE = (
    GOLDEN_ROW_DESCRIPTION, *GOLDEN_DATA_ROWS, GOLDEN_COMMAND_COMPLETE, GOLDEN_READY,
)

CLIENT_INSPECT = frozenset({b"Q", b"P", b"B", b"E", b"S"})
# The proxy's usual choice for server responses: DataRows and CommandComplete are relayed.
RESPONSE_INSPECT = frozenset({b"T", b"Z"})

GOLDEN_STREAMS: dict[str, tuple[tuple[bytes, ...], frozenset[bytes]]] = {
    "query": ((GOLDEN_QUERY,), CLIENT_INSPECT),
    "extended-batch": (GOLDEN_EXTENDED_BATCH, CLIENT_INSPECT),
    "extended-batch-bind-relayed": (GOLDEN_EXTENDED_BATCH, frozenset({b"P", b"S"})),
    "response": (GOLDEN_RESPONSE, RESPONSE_INSPECT),
    "response-all-relayed": (GOLDEN_RESPONSE, frozenset()),
    "response-all-inspected": (GOLDEN_RESPONSE, frozenset({b"T", b"D", b"C", b"Z"})),
}


# ----------------------------------------------------------------------------- helpers


def drain(scanner: MessageScanner) -> list[Segment]:
    return list(scanner.segments())


def feed_chunks(scanner: MessageScanner, chunks: Iterable[bytes]) -> list[Segment]:
    out: list[Segment] = []
    for chunk in chunks:
        scanner.feed(chunk)
        out += drain(scanner)
    return out


def joined(segments: Sequence[Segment]) -> bytes:
    return b"".join(s.raw if isinstance(s, Frame) else s.data for s in segments)


def normalised(segments: Sequence[Segment]) -> list[tuple[str, bytes]]:
    """Frames as they are; adjacent Passthrough slices merged (their cut points are free)."""
    out: list[tuple[str, bytes]] = []
    for s in segments:
        if isinstance(s, Frame):
            out.append(("frame", s.raw))
        elif out and out[-1][0] == "pass":
            out[-1] = ("pass", out[-1][1] + s.data)
        else:
            out.append(("pass", s.data))
    return out


def expected_view(messages: Sequence[bytes], inspect: frozenset[bytes]) -> list[tuple[str, bytes]]:
    """What any feeding of `messages` must produce: inspected ones as frames, runs of the
    others as one relayed slice."""
    out: list[tuple[str, bytes]] = []
    for raw in messages:
        if raw[:1] in inspect:
            out.append(("frame", raw))
        elif out and out[-1][0] == "pass":
            out[-1] = ("pass", out[-1][1] + raw)
        else:
            out.append(("pass", raw))
    return out


def assert_frames_consistent(segments: Sequence[Segment]) -> None:
    for s in segments:
        if isinstance(s, Frame):
            assert s.type == s.raw[:1]
            assert s.payload == s.raw[5:]
            assert struct.unpack("!I", s.raw[1:5])[0] == len(s.raw) - 1
        else:
            assert s.data, "a Passthrough segment is never empty"


# ----------------------------------------------------------------------------- golden frames


def test_golden_lengths_are_what_frame_computes() -> None:
    # Guards the hand-written bytes themselves: a typo in a length would make every test lie.
    assert frame(b"Q", b"SELECT 1\x00") == GOLDEN_QUERY
    assert frame(b"S", b"") == GOLDEN_SYNC
    for raw in (*GOLDEN_EXTENDED_BATCH, *GOLDEN_RESPONSE):
        assert struct.unpack("!I", raw[1:5])[0] == len(raw) - 1


@pytest.mark.parametrize("name", sorted(GOLDEN_STREAMS))
def test_golden_fed_whole(name: str) -> None:
    messages, inspect = GOLDEN_STREAMS[name]
    data = b"".join(messages)
    scanner = MessageScanner(inspect)
    scanner.feed(data)
    segments = drain(scanner)
    assert joined(segments) == data
    assert normalised(segments) == expected_view(messages, inspect)
    # Fed whole, relayed runs are not cut up: the normalised view is the raw view.
    assert [("frame", s.raw) if isinstance(s, Frame) else ("pass", s.data) for s in segments] == (
        expected_view(messages, inspect)
    )
    assert_frames_consistent(segments)
    assert scanner.at_boundary
    assert scanner.buffered == 0


def test_golden_response_segments_in_detail() -> None:
    scanner = MessageScanner(RESPONSE_INSPECT)
    scanner.feed(b"".join(GOLDEN_RESPONSE))
    segments = drain(scanner)
    assert segments == [
        Frame(b"T", GOLDEN_ROW_DESCRIPTION[5:], GOLDEN_ROW_DESCRIPTION),
        Passthrough(b"".join(GOLDEN_DATA_ROWS) + GOLDEN_COMMAND_COMPLETE),
        Frame(b"Z", b"I", GOLDEN_READY),
    ]


@pytest.mark.parametrize("name", sorted(GOLDEN_STREAMS))
def test_golden_one_byte_at_a_time(name: str) -> None:
    messages, inspect = GOLDEN_STREAMS[name]
    data = b"".join(messages)
    scanner = MessageScanner(inspect)
    segments: list[Segment] = []
    for i in range(len(data)):
        scanner.feed(data[i : i + 1])
        segments += drain(scanner)
        # Relayed bytes go out as they arrive; only an inspected message (or a header) waits.
        longest_inspected = max((len(m) for m in messages if m[:1] in inspect), default=0)
        assert scanner.buffered <= max(longest_inspected, 4)
        assert joined(segments) + data[i + 1 - scanner.buffered : i + 1] == data[: i + 1]
    assert joined(segments) == data
    assert normalised(segments) == expected_view(messages, inspect)
    assert_frames_consistent(segments)
    assert scanner.at_boundary


@pytest.mark.parametrize("name", sorted(GOLDEN_STREAMS))
def test_golden_split_at_every_position(name: str) -> None:
    messages, inspect = GOLDEN_STREAMS[name]
    data = b"".join(messages)
    for cut in range(len(data) + 1):
        scanner = MessageScanner(inspect)
        segments = feed_chunks(scanner, (data[:cut], data[cut:]))
        assert joined(segments) == data, cut
        assert normalised(segments) == expected_view(messages, inspect), cut
        assert_frames_consistent(segments)
        assert scanner.at_boundary, cut


@pytest.mark.parametrize("name", sorted(GOLDEN_STREAMS))
def test_golden_split_at_every_pair_of_positions(name: str) -> None:
    messages, inspect = GOLDEN_STREAMS[name]
    data = b"".join(messages)
    for first in range(0, len(data) + 1, 3):
        for second in range(first, len(data) + 1, 2):
            scanner = MessageScanner(inspect)
            segments = feed_chunks(scanner, (data[:first], data[first:second], data[second:]))
            assert joined(segments) == data, (first, second)
            assert normalised(segments) == expected_view(messages, inspect), (first, second)


def test_nothing_is_yielded_for_an_incomplete_inspected_message() -> None:
    scanner = MessageScanner(CLIENT_INSPECT)
    scanner.feed(GOLDEN_QUERY[:-1])
    assert drain(scanner) == []
    assert scanner.buffered == len(GOLDEN_QUERY) - 1
    assert not scanner.at_boundary
    scanner.feed(GOLDEN_QUERY[-1:])
    assert drain(scanner) == [Frame(b"Q", b"SELECT 1\x00", GOLDEN_QUERY)]
    assert scanner.at_boundary


def test_partial_relayed_message_is_released_at_once_and_owed_bytes_tracked() -> None:
    row = GOLDEN_DATA_ROWS[0]
    scanner = MessageScanner(RESPONSE_INSPECT)
    scanner.feed(row[:7])
    assert drain(scanner) == [Passthrough(row[:7])]
    assert scanner.buffered == 0
    assert not scanner.at_boundary  # four bytes of that DataRow are still owed
    scanner.feed(row[7:] + GOLDEN_READY)
    assert drain(scanner) == [Passthrough(row[7:]), Frame(b"Z", b"I", GOLDEN_READY)]
    assert scanner.at_boundary


# ----------------------------------------------------------------------------- huge relayed data


def test_huge_relayed_message_is_streamed_without_buffering() -> None:
    value = bytes(range(256)) * (5 * 1024 * 1024 // 256)  # 5 MiB column value
    payload = b"\x00\x01" + struct.pack("!i", len(value)) + value
    huge_row = frame(b"D", payload)
    data = GOLDEN_ROW_DESCRIPTION + huge_row + GOLDEN_COMMAND_COMPLETE + GOLDEN_READY
    chunk_size = 64 * 1024 + 3  # not aligned with anything
    scanner = MessageScanner(RESPONSE_INSPECT)
    segments: list[Segment] = []
    relayed_total = 0
    for start in range(0, len(data), chunk_size):
        chunk = data[start : start + chunk_size]
        scanner.feed(chunk)
        assert scanner.buffered <= len(chunk) + len(GOLDEN_ROW_DESCRIPTION)
        for s in scanner.segments():
            segments.append(s)
            if isinstance(s, Passthrough):
                # Each slice is at most what this feed brought: nothing accumulates.
                assert len(s.data) <= len(chunk)
                relayed_total += len(s.data)
        # After draining, at most an incomplete header or a small inspected message is held.
        assert scanner.buffered < len(GOLDEN_ROW_DESCRIPTION) + 5
    assert joined(segments) == data
    assert relayed_total == len(huge_row) + len(GOLDEN_COMMAND_COMPLETE)
    frames = [s for s in segments if isinstance(s, Frame)]
    assert [f.raw for f in frames] == [GOLDEN_ROW_DESCRIPTION, GOLDEN_READY]
    assert scanner.at_boundary


def test_relayed_message_at_the_int32_limit_is_streamed() -> None:
    # A relayed message may be as long as the protocol allows; it is never buffered whole.
    scanner = MessageScanner(frozenset({b"Z"}))
    header = b"d" + struct.pack("!I", 0x7FFF_FFFF)
    scanner.feed(header + b"x" * 1000)
    assert drain(scanner) == [Passthrough(header + b"x" * 1000)]
    assert scanner.buffered == 0
    assert not scanner.at_boundary


# ----------------------------------------------------------------------------- inspect changes


def test_inspecting_more_after_a_frame_applies_to_the_next_message() -> None:
    scanner = MessageScanner(RESPONSE_INSPECT)
    scanner.feed(b"".join(GOLDEN_RESPONSE))
    seen: list[Segment] = []
    for s in scanner.segments():
        seen.append(s)
        if isinstance(s, Frame) and s.type == b"T":
            # e.g. the RowDescription showed a column to mask: DataRows become interesting.
            scanner.inspect = RESPONSE_INSPECT | {b"D"}
    assert [("frame", s.raw) if isinstance(s, Frame) else ("pass", s.data) for s in seen] == [
        ("frame", GOLDEN_ROW_DESCRIPTION),
        *[("frame", row) for row in GOLDEN_DATA_ROWS],
        ("pass", GOLDEN_COMMAND_COMPLETE),
        ("frame", GOLDEN_READY),
    ]


def test_inspecting_less_after_a_frame_applies_to_the_next_message() -> None:
    inspect = frozenset({b"T", b"D", b"C", b"Z"})
    scanner = MessageScanner(inspect)
    scanner.feed(b"".join(GOLDEN_RESPONSE))
    seen: list[Segment] = []
    for s in scanner.segments():
        seen.append(s)
        if isinstance(s, Frame) and s.raw == GOLDEN_DATA_ROWS[0]:
            scanner.inspect = frozenset({b"Z"})
    assert [("frame", s.raw) if isinstance(s, Frame) else ("pass", s.data) for s in seen] == [
        ("frame", GOLDEN_ROW_DESCRIPTION),
        ("frame", GOLDEN_DATA_ROWS[0]),
        ("pass", GOLDEN_DATA_ROWS[1] + GOLDEN_DATA_ROWS[2] + GOLDEN_COMMAND_COMPLETE),
        ("frame", GOLDEN_READY),
    ]


def test_inspect_change_between_feeds_applies_to_buffered_messages() -> None:
    data = b"".join(GOLDEN_RESPONSE)
    cut = len(GOLDEN_ROW_DESCRIPTION) + 3  # inside the first DataRow's header
    scanner = MessageScanner(RESPONSE_INSPECT)
    scanner.feed(data[:cut])
    first = drain(scanner)
    assert first == [Frame(b"T", GOLDEN_ROW_DESCRIPTION[5:], GOLDEN_ROW_DESCRIPTION)]
    scanner.inspect = RESPONSE_INSPECT | {b"D"}
    scanner.feed(data[cut:])
    rest = drain(scanner)
    assert [s.raw for s in rest if isinstance(s, Frame)] == [*GOLDEN_DATA_ROWS, GOLDEN_READY]
    assert joined(first + rest) == data


def test_a_consumer_may_stop_after_any_segment_and_resume() -> None:
    data = b"".join(GOLDEN_RESPONSE)
    inspect = frozenset({b"T", b"D", b"Z"})
    reference = drain_all(data, inspect)
    for stop_after in range(1, len(reference) + 1):
        scanner = MessageScanner(inspect)
        scanner.feed(data)
        got: list[Segment] = []
        iterator = scanner.segments()
        for _ in range(stop_after):
            got.append(next(iterator))
        # Abandon the generator; a feed (even empty) compacts the buffer; start again:
        # nothing lost, nothing repeated.
        scanner.feed(b"")
        got += drain(scanner)
        assert got == reference, stop_after


def test_a_consumer_may_stop_feed_more_and_resume() -> None:
    messages = (*GOLDEN_RESPONSE, *GOLDEN_RESPONSE)
    data = b"".join(messages)
    inspect = frozenset({b"T", b"Z"})
    half = len(b"".join(GOLDEN_RESPONSE)) + 9
    scanner = MessageScanner(inspect)
    scanner.feed(data[:half])
    got = [next(scanner.segments())]  # just the first RowDescription
    scanner.feed(data[half:])
    got += drain(scanner)
    assert joined(got) == data
    assert normalised(got) == expected_view(messages, inspect)


def drain_all(data: bytes, inspect: frozenset[bytes]) -> list[Segment]:
    scanner = MessageScanner(inspect)
    scanner.feed(data)
    return drain(scanner)


# ----------------------------------------------------------------------------- invalid lengths


@pytest.mark.parametrize("length", [0, 1, 2, 3, 0x8000_0000, 0xFFFF_FFFF])
@pytest.mark.parametrize("msg_type", [b"Q", b"D"])  # one inspected, one relayed
def test_invalid_lengths_are_protocol_violations(length: int, msg_type: bytes) -> None:
    scanner = MessageScanner(frozenset({b"Q"}))
    scanner.feed(msg_type + struct.pack("!I", length) + b"payload")
    with pytest.raises(ProtocolViolation):
        drain(scanner)


def test_invalid_length_after_valid_messages_still_yields_the_valid_ones_first() -> None:
    scanner = MessageScanner(CLIENT_INSPECT)
    scanner.feed(GOLDEN_QUERY + b"Q\x80\x00\x00\x00")
    iterator = scanner.segments()
    assert next(iterator) == Frame(b"Q", b"SELECT 1\x00", GOLDEN_QUERY)
    with pytest.raises(ProtocolViolation):
        next(iterator)


def test_invalid_length_is_detected_from_the_header_alone() -> None:
    scanner = MessageScanner(CLIENT_INSPECT)
    scanner.feed(b"Q\x80\x00")
    assert drain(scanner) == []
    scanner.feed(b"\x00\x00")
    with pytest.raises(ProtocolViolation):
        drain(scanner)


def test_minimum_length_four_is_an_empty_message() -> None:
    scanner = MessageScanner(CLIENT_INSPECT)
    scanner.feed(b"S\x00\x00\x00\x04" + b"X\x00\x00\x00\x04")
    assert drain(scanner) == [Frame(b"S", b"", b"S\x00\x00\x00\x04"), Passthrough(b"X\x00\x00\x00\x04")]


def test_inspected_message_over_the_limit_is_refused_before_its_body_arrives() -> None:
    scanner = MessageScanner(CLIENT_INSPECT, max_inspected=100)
    scanner.feed(b"Q" + struct.pack("!I", 101))  # only the header: nothing buffered yet
    with pytest.raises(ProtocolViolation, match="limit"):
        drain(scanner)


def test_inspected_message_at_the_limit_is_accepted() -> None:
    sql = b"x" * 95 + b"\x00"  # length = 4 + 96 = 100
    raw = frame(b"Q", sql)
    scanner = MessageScanner(CLIENT_INSPECT, max_inspected=100)
    segments = feed_chunks(scanner, (raw[:50], raw[50:]))
    assert segments == [Frame(b"Q", sql, raw)]


def test_the_limit_does_not_apply_to_relayed_messages() -> None:
    raw = frame(b"D", b"y" * 1000)
    scanner = MessageScanner(CLIENT_INSPECT, max_inspected=100)
    scanner.feed(raw)
    assert drain(scanner) == [Passthrough(raw)]


def test_default_limit_refuses_a_one_gib_inspected_message() -> None:
    scanner = MessageScanner(CLIENT_INSPECT)
    scanner.feed(b"Q" + struct.pack("!I", 1 << 30))
    with pytest.raises(ProtocolViolation):
        drain(scanner)


# ----------------------------------------------------------------------------- StartupReader

GOLDEN_STARTUP = (
    b"\x00\x00\x00\x22"  # length 34
    b"\x00\x03\x00\x00"  # protocol 3.0
    b"user\x00alice\x00database\x00shop\x00\x00"
)
GOLDEN_SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"


def test_startup_golden_packets() -> None:
    assert len(GOLDEN_STARTUP) == 34
    reader = StartupReader()
    reader.feed(GOLDEN_SSL_REQUEST + GOLDEN_STARTUP)
    assert reader.next_packet() == StartupPacket(SSL_REQUEST_CODE, b"")
    assert reader.next_packet() == StartupPacket(PROTOCOL_3_0, GOLDEN_STARTUP[8:])
    assert reader.next_packet() is None
    assert reader.take_rest() == b""


def test_startup_one_byte_at_a_time_and_rest() -> None:
    data = GOLDEN_STARTUP + GOLDEN_QUERY
    reader = StartupReader()
    packets: list[StartupPacket] = []
    for i in range(len(GOLDEN_STARTUP)):
        reader.feed(data[i : i + 1])
        packet = reader.next_packet()
        if packet is not None:
            packets.append(packet)
            assert i == len(GOLDEN_STARTUP) - 1
    assert packets == [StartupPacket(PROTOCOL_3_0, GOLDEN_STARTUP[8:])]
    reader.feed(data[len(GOLDEN_STARTUP) :])
    assert reader.take_rest() == GOLDEN_QUERY
    assert reader.take_rest() == b""


@pytest.mark.parametrize("length", [0, 4, 7, MAX_STARTUP_PACKET + 1, 0x8000_0000, 0xFFFF_FFFF])
def test_startup_length_out_of_bounds(length: int) -> None:
    reader = StartupReader()
    reader.feed(struct.pack("!I", length))  # the length alone is enough to refuse
    with pytest.raises(ProtocolViolation):
        reader.next_packet()


@pytest.mark.parametrize("length", [8, MAX_STARTUP_PACKET])
def test_startup_length_bounds_are_inclusive(length: int) -> None:
    body = b"\x00" * (length - 8)
    reader = StartupReader()
    reader.feed(frame_untyped(struct.pack("!I", CANCEL_REQUEST_CODE) + body))
    assert reader.next_packet() == StartupPacket(CANCEL_REQUEST_CODE, body)


def test_startup_waits_for_the_whole_packet() -> None:
    reader = StartupReader()
    reader.feed(GOLDEN_STARTUP[:3])
    assert reader.next_packet() is None
    reader.feed(GOLDEN_STARTUP[3:-1])
    assert reader.next_packet() is None
    reader.feed(GOLDEN_STARTUP[-1:])
    assert reader.next_packet() == StartupPacket(PROTOCOL_3_0, GOLDEN_STARTUP[8:])


# ----------------------------------------------------------------------------- hypothesis

TYPE_BYTES = st.sampled_from([bytes([c]) for c in b"QPBESDCXTZdcHnNAK1234"])
messages_st = st.lists(
    st.builds(frame, TYPE_BYTES, st.binary(max_size=200)), min_size=0, max_size=12
)
inspect_st = st.frozensets(TYPE_BYTES, max_size=8)


@st.composite
def split_points(draw: st.DrawFn, size: int) -> list[int]:
    cuts = draw(st.lists(st.integers(0, size), max_size=12))
    return sorted(cuts)


def cut(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(messages=messages_st, inspect=inspect_st, data=st.data())
@settings(max_examples=300, deadline=None)
def test_random_messages_split_anywhere_round_trip(
    messages: list[bytes], inspect: frozenset[bytes], data: st.DataObject
) -> None:
    stream = b"".join(messages)
    cuts = data.draw(split_points(len(stream)))
    scanner = MessageScanner(inspect)
    segments = feed_chunks(scanner, cut(stream, cuts))
    assert joined(segments) == stream
    assert normalised(segments) == expected_view(messages, inspect)
    assert_frames_consistent(segments)
    assert scanner.at_boundary


@given(
    stream=st.binary(max_size=400),
    inspect=inspect_st,
    max_inspected=st.integers(4, 300),
    data=st.data(),
)
@settings(max_examples=400, deadline=None)
def test_random_bytes_only_ever_raise_protocol_violation(
    stream: bytes, inspect: frozenset[bytes], max_inspected: int, data: st.DataObject
) -> None:
    cuts = data.draw(split_points(len(stream)))
    scanner = MessageScanner(inspect, max_inspected=max_inspected)
    segments: list[Segment] = []
    fed = 0
    try:
        for chunk in cut(stream, cuts):
            scanner.feed(chunk)
            fed += len(chunk)
            for s in scanner.segments():
                segments.append(s)
            # Whatever was not handed out is still buffered: no byte lost or invented.
            assert joined(segments) == stream[: fed - scanner.buffered]
    except ProtocolViolation:
        pass
    assert_frames_consistent(segments)
    assert stream.startswith(joined(segments))


@given(stream=st.binary(max_size=300), data=st.data())
@settings(max_examples=300, deadline=None)
def test_startup_reader_random_bytes_only_raise_protocol_violation(
    stream: bytes, data: st.DataObject
) -> None:
    cuts = data.draw(split_points(len(stream)))
    reader = StartupReader()
    consumed = 0
    try:
        for chunk in cut(stream, cuts):
            reader.feed(chunk)
            while (packet := reader.next_packet()) is not None:
                length = 8 + len(packet.body)
                assert 8 <= length <= MAX_STARTUP_PACKET
                assert stream[consumed : consumed + length] == (
                    struct.pack("!II", length, packet.code) + packet.body
                )
                consumed += length
    except ProtocolViolation:
        return
    assert reader.take_rest() == stream[consumed:]
