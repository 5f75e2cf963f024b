"""What the journal records of PostgreSQL Bind parameters, from the bytes clients send."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguard.session.pg_journal import BoundValues, bind_parameters, parameter_types, render_parameters, rows_from_tag
from dbguard.wire.pg import messages as m
from dbguard.wire.pg.framing import ProtocolViolation


def test_binary_values_of_common_types_are_journaled_as_postgresql_prints_them() -> None:
    bound = BoundValues(
        b"s1",
        (struct.pack("!h", -2), struct.pack("!i", 70000), struct.pack("!q", 2**40), struct.pack("!d", 1.5),
         b"\x01", b"\x00", "caf\u00e9".encode(), uuid.UUID(int=7).bytes, struct.pack("!i", -1),
         struct.pack("!q", 86_400 * 1_000_000 + 1), None),
        (True,) * 10 + (False,),
    )
    types = (21, 23, 20, 701, 16, 16, 25, 2950, 1082, 1184, 23)
    assert render_parameters(bound, types) == (
        "-2", "70000", str(2**40), "1.5", "true", "false", "caf\u00e9",
        "00000000-0000-0000-0000-000000000007", "1999-12-31", "2000-01-02 00:00:00.000001+00", None)


def test_unknown_or_unnamed_binary_types_stay_hex_and_text_stays_text() -> None:
    bound = BoundValues(b"", (b"\x00\x00\x00\x15", b"\xff\xfe", b"plain", b"\xff"), (True, True, False, False))
    # No types in the Parse (asyncpg), a type dbguard does not render (bytea), text, non-UTF-8 text.
    assert render_parameters(bound, ()) == ("\\x00000015", "\\xfffe", "plain", "\\xff")
    assert render_parameters(bound, (0, 17)) == ("\\x00000015", "\\xfffe", "plain", "\\xff")
    # A width that does not match its type is not trusted.
    assert render_parameters(BoundValues(b"", (b"\x00\x01",), (True,)), (23,)) == ("\\x0001",)


def test_bind_and_parse_tails_are_read_from_real_messages() -> None:
    bind = m.Bind("portal", "stmt", (1, 0), (b"\x00\x00\x00\x07", b"x"), (1,)).encode()
    bound = bind_parameters(bind[5:])
    assert bound == BoundValues(b"stmt", (b"\x00\x00\x00\x07", b"x"), (True, False))
    parse = m.Parse("stmt", b"SELECT $1, $2", (23, 25)).encode()
    sql_end = parse.index(b"\x00", parse.index(b"\x00", 5) + 1)
    assert parameter_types(parse, sql_end + 1, len(parse)) == (23, 25)
    assert parameter_types(parse, len(parse), len(parse)) == ()
    with pytest.raises(ProtocolViolation):
        bind_parameters(m.Bind("", "", (0, 0, 0), (b"a",)).encode()[5:])


@pytest.mark.parametrize(("tag", "rows"), [(b"SELECT 5", 5), (b"INSERT 0 1", 1), (b"UPDATE 12", 12),
                                           (b"BEGIN", None), (b"CREATE TABLE", None), (b"COPY 3", 3)])
def test_row_counts_from_command_tags(tag: bytes, rows: int | None) -> None:
    assert rows_from_tag(tag + b"\x00") == rows


@given(st.binary(max_size=24) | st.lists(st.sampled_from([b"SELECT", b" ", b"0", b"12", b"\x00", b"x", b"\xd9\xa3"]),
                                         max_size=6).map(b"".join))
def test_a_tag_reads_as_its_last_word_after_a_space_when_that_is_ascii_digits(tag: bytes) -> None:
    last = tag.rstrip(b"\x00").rpartition(b" ")[2]
    assert rows_from_tag(tag) == (int(last) if last.isdigit() and b" " in tag else None)


def _reference_bind_parameters(payload: bytes) -> BoundValues:
    """What bind_parameters gave through the strict generic decoder."""
    bind = m.decode_frontend(b"B", payload)
    assert isinstance(bind, m.Bind)
    formats, params = bind.param_formats, bind.params
    if len(formats) == 1:
        binary = (formats[0] == 1,) * len(params)
    elif len(formats) == len(params):
        binary = tuple(f == 1 for f in formats)
    elif not formats:
        binary = (False,) * len(params)
    else:
        raise ProtocolViolation("Bind: parameter format count does not match the parameters")
    return BoundValues(bind.statement.encode("utf-8", "surrogateescape"), params, binary)


def _outcome(parse: Callable[[bytes], BoundValues], payload: bytes) -> BoundValues | None:
    try:
        return parse(payload)
    except ProtocolViolation:
        return None


_names = st.binary(max_size=6).map(lambda b: b.replace(b"\x00", b""))
_value = st.one_of(st.none(), st.binary(max_size=8))


@settings(max_examples=500, deadline=None)
@given(_names, _names, st.lists(st.integers(-2, 3), max_size=4), st.lists(_value, max_size=4),
       st.lists(st.integers(-2, 3), max_size=3), st.data())
def test_the_one_pass_bind_reader_accepts_and_refuses_as_the_strict_decoder(
        portal: bytes, statement: bytes, formats: list[int], values: list[bytes | None], results: list[int],
        data: st.DataObject) -> None:
    payload = (portal + b"\x00" + statement + b"\x00" + struct.pack(f"!H{len(formats)}h", len(formats), *formats)
               + struct.pack("!H", len(values))
               + b"".join(struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v for v in values)
               + struct.pack(f"!H{len(results)}h", len(results), *results))
    # Whole, cut anywhere, with bytes after it, or one byte changed.
    cut = data.draw(st.integers(0, len(payload)))
    changed = data.draw(st.integers(0, len(payload) - 1))
    flipped = payload[:changed] + bytes([payload[changed] ^ data.draw(st.integers(1, 255))]) + payload[changed + 1:]
    for candidate in (payload, payload[:cut], payload + b"\x00", flipped):
        assert _outcome(bind_parameters, candidate) == _outcome(_reference_bind_parameters, candidate)
