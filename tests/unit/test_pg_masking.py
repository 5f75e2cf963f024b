"""PgResultMasking byte by byte: which result each response belongs to, which columns a plan
masks, rows rebuilt with every length right, errors redacted, binary COPY refused, the catalog wait."""

from __future__ import annotations

import re
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dbguard.masking.columns import PgColumn, WireFormat, pg_codec
from dbguard.masking.session_masks import SessionMasks
from dbguard.masking.strategies import build_masker
from dbguard.model import Identity, IdentityKind, SessionInfo
from dbguard.policy.rules import MaskStrategy, parse_policy_text
from dbguard.session.pg_masking import CatalogCache, PgResultMasking, Relation, View
from dbguard.sql.pg_lineage import result_lineage
from dbguard.wire.pg import messages as m
from dbguard.wire.pg.framing import frame

USERS_OID = 16400
VIEW_OID = 16500
RULES = """
masks:
  - id: email
    columns: [users.email]
    strategy: email
  - id: ssn
    columns: ["*.ssn"]
    strategy: full
  - id: cards
    detect: [credit_card]
    strategy: full
"""
SESSION = SessionInfo("s", "pg", "postgres", Identity("copilot", IdentityKind.AGENT), "127.0.0.1:1", "app")


def masks() -> SessionMasks:
    found = SessionMasks.for_session(parse_policy_text(RULES), SESSION, b"k" * 32)
    assert found is not None
    return found


def catalog() -> CatalogCache:
    cache = CatalogCache()
    cache.relations[USERS_OID] = Relation("public", "users", "r", {1: "id", 2: "email", 3: "ssn", 4: "note"})
    cache.relations[VIEW_OID] = Relation("public", "contacts", "v", {1: "id", 2: "mail"})
    cache.views = {("public", "contacts"): View("public", "contacts", ("id", "mail"),
                                                result_lineage("SELECT id, email AS mail FROM users"))}
    return cache


def filt(cache: CatalogCache | None = None) -> PgResultMasking:
    return PgResultMasking(masks, cache if cache is not None else catalog(), lambda: "UTF8", journaled=True)


def field(name: str, table: int = 0, column: int = 0, type_oid: int = 25, fmt: int = 0) -> m.FieldDescription:
    return m.FieldDescription(name, table, column, type_oid, -1, -1, fmt)


def row_description(*fields: m.FieldDescription) -> bytes:
    return m.RowDescription(tuple(fields)).encode()


def data_row(*values: bytes | None) -> bytes:
    return m.DataRow(tuple(values)).encode()


def rows_of(data: bytes) -> list[tuple[bytes | None, ...]]:
    found = []
    pos = 0
    while pos < len(data):
        kind, length = struct.unpack_from("!cI", data, pos)
        if kind == b"D":
            message = m.decode_backend(kind, data[pos + 5 : pos + 1 + length])
            assert isinstance(message, m.DataRow)
            found.append(message.values)
        pos += 1 + length
    return found


def query(sql: str) -> bytes:
    return m.Query(sql.encode()).encode()


COMPLETE = m.CommandComplete("SELECT 1").encode()
READY = m.ready_for_query(b"I")


def test_simple_query_masks_by_provenance_and_leaves_other_columns() -> None:
    masking = filt()
    masking.to_upstream(query("SELECT id, email, ssn, note FROM users"))
    response = (row_description(field("id", USERS_OID, 1, 23), field("email", USERS_OID, 2),
                                field("ssn", USERS_OID, 3), field("note", USERS_OID, 4))
                + data_row(b"1", b"ann@example.com", b"123-45-6789", b"hello")
                + data_row(b"2", None, b"987-65-4321", None) + COMPLETE + READY)
    out = masking.from_upstream(response)
    assert rows_of(out) == [(b"1", b"****@example.com", b"****", b"hello"), (b"2", None, b"****", None)]
    assert out.endswith(COMPLETE + READY)
    assert masking.masked_counts() == (("email", 1), ("ssn", 2))


def test_nothing_to_mask_relays_the_same_bytes() -> None:
    masking = filt()
    masking.to_upstream(query("SELECT id, note FROM users"))
    response = (row_description(field("id", USERS_OID, 1, 23), field("note", USERS_OID, 4, 23))
                + data_row(b"1", b"x") + COMPLETE + READY)
    assert masking.from_upstream(response) == response


def test_messages_cut_anywhere_come_out_the_same() -> None:
    response = (row_description(field("email", USERS_OID, 2))
                + b"".join(data_row(f"u{i}@example.com".encode()) for i in range(50)) + COMPLETE + READY)
    whole = filt()
    whole.to_upstream(query("SELECT email FROM users"))
    expected = whole.from_upstream(response)
    for step in (1, 3, 7, 64):
        masking = filt()
        masking.to_upstream(query("SELECT email FROM users"))
        out = b"".join(masking.from_upstream(response[i : i + step]) for i in range(0, len(response), step))
        assert out == expected


def test_computed_columns_follow_lineage_and_views() -> None:
    masking = filt()
    masking.to_upstream(query("SELECT upper(email), length(note), mail FROM users, contacts"))
    response = (row_description(field("upper"), field("length", type_oid=23), field("mail", VIEW_OID, 2))
                + data_row(b"ANN@EXAMPLE.COM", b"5", b"ann@example.com") + COMPLETE + READY)
    assert rows_of(masking.from_upstream(response)) == [(b"****@EXAMPLE.COM", b"5", b"****@example.com")]


def test_untraceable_computed_column_gets_the_strictest_mask() -> None:
    masking = filt()
    masking.to_upstream(query("SELECT my_function(1)"))
    response = row_description(field("my_function")) + data_row(b"secret") + COMPLETE + READY
    assert rows_of(masking.from_upstream(response)) == [(b"****",)]


def test_content_detection_on_unmasked_text() -> None:
    masking = filt()
    masking.to_upstream(query("SELECT note FROM users"))
    response = (row_description(field("note", USERS_OID, 4))
                + data_row(b"paid with 4111 1111 1111 1111") + data_row(b"nothing here") + COMPLETE + READY)
    assert rows_of(masking.from_upstream(response)) == [(b"paid with *******************",), (b"nothing here",)]


def test_extended_protocol_statement_described_once_executed_in_binary() -> None:
    masking = filt()
    parse = frame(b"P", b"s1\x00SELECT id, email FROM users WHERE id = $1\x00\x00\x00")
    describe = frame(b"D", b"Ss1\x00")
    masking.to_upstream(parse + describe + frame(b"S", b""))
    described = (frame(b"1", b"") + frame(b"t", b"\x00\x01\x00\x00\x00\x17")
                 + row_description(field("id", USERS_OID, 1, 23), field("email", USERS_OID, 2)) + READY)
    assert masking.from_upstream(described) == described
    for _ in range(2):
        bind = frame(b"B", b"\x00s1\x00" + b"\x00\x00" + b"\x00\x01\x00\x00\x00\x011" + b"\x00\x01\x00\x01")
        execute = frame(b"E", b"\x00\x00\x00\x00\x00")
        masking.to_upstream(bind + execute + frame(b"S", b""))
        response = (frame(b"2", b"") + data_row(struct.pack("!i", 1), b"ann@example.com") + COMPLETE + READY)
        assert rows_of(masking.from_upstream(response)) == [(struct.pack("!i", 1), b"****@example.com")]


def test_an_error_skips_the_rest_of_the_batch() -> None:
    masking = filt()
    parse = frame(b"P", b"\x00SELECT email FROM users\x00\x00\x00")
    bind = frame(b"B", b"\x00\x00\x00\x00\x00\x00\x00\x00")
    masking.to_upstream(parse + bind + frame(b"D", b"P\x00") + frame(b"E", b"\x00\x00\x00\x00\x00")
                        + frame(b"S", b""))
    error = m.error("42P01", "relation does not exist")
    assert masking.from_upstream(error + READY) == error + READY
    masking.to_upstream(query("SELECT email FROM users"))
    response = row_description(field("email", USERS_OID, 2)) + data_row(b"ann@example.com") + COMPLETE + READY
    assert rows_of(masking.from_upstream(response)) == [(b"****@example.com",)]


def test_data_and_integrity_errors_do_not_quote_values() -> None:
    masking = filt()
    masking.to_upstream(query("SELECT email::int FROM users"))
    cast = m.error("22P02", 'invalid input syntax for type integer: "ann@example.com"')
    unique = m.error("23505", 'duplicate key value violates unique constraint "users_email_key"',
                     detail="Key (email)=(ann@example.com) already exists.")
    other = m.error("42P01", 'relation "users" does not exist')
    out = masking.from_upstream(cast + unique + other + READY)
    assert b"ann@example.com" not in out
    assert b'integer: \\"****\\"' not in out  # (sanity: the quotes are plain, not escaped)
    assert b'"****"' in out
    assert b"Key (email)=(****) already exists." in out
    assert b'relation "users" does not exist' in out  # identifiers in other errors are left alone


def test_binary_copy_out_of_masked_columns_is_refused_and_the_session_goes_on() -> None:
    # (text and CSV copies are rewritten: tests/unit/test_pg_copy_masking.py)
    masking = filt()
    masking.to_upstream(query("COPY users TO STDOUT (FORMAT binary)"))
    copy = (frame(b"H", b"\x01\x00\x01\x00\x01") + frame(b"d", b"PGCOPY\nann@example.com") + frame(b"c", b"")
            + m.CommandComplete("COPY 1").encode())
    out = masking.from_upstream(copy + READY)
    assert b"ann@example.com" not in out
    assert b"binary COPY TO STDOUT of masked columns is refused" in out
    assert out.endswith(READY)


def test_unknown_table_waits_for_the_catalog_then_resumes() -> None:
    cache = CatalogCache(views={})
    masking = filt(cache)
    masking.to_upstream(query("SELECT email FROM users"))
    response = row_description(field("email", USERS_OID, 2)) + data_row(b"ann@example.com") + COMPLETE + READY
    assert masking.from_upstream(response) == b""
    assert masking.waiting is not None
    assert masking.waiting.oids == frozenset({USERS_OID})
    assert masking.from_upstream(b"") == b""  # still waiting: kept
    cache.relations[USERS_OID] = catalog().relations[USERS_OID]
    assert rows_of(masking.resume()) == [(b"****@example.com",)]


def test_an_oid_the_catalog_cannot_name_is_masked_as_untraceable() -> None:
    cache = CatalogCache(views={})
    cache.relations[USERS_OID] = None
    masking = filt(cache)
    masking.to_upstream(query("SELECT note FROM users"))
    response = row_description(field("note", USERS_OID, 4)) + data_row(b"hello") + COMPLETE + READY
    assert rows_of(masking.from_upstream(response)) == [(b"****",)]


def test_ddl_through_the_proxy_expires_the_catalog() -> None:
    cache = catalog()
    masking = filt(cache)
    masking.to_upstream(query("ALTER TABLE users RENAME COLUMN note TO ssn"))
    masking.from_upstream(m.CommandComplete("ALTER TABLE").encode() + READY)
    assert cache.relations == {}
    assert cache.views is None


@pytest.mark.parametrize("count", [0, 1, 3])
def test_several_statements_in_one_query_each_get_their_lineage(count: int) -> None:
    masking = filt()
    sql = "SELECT 1; " * count + "SELECT upper(email) FROM users; SELECT upper(note) FROM users"
    masking.to_upstream(query(sql))
    one = row_description(field("?column?", type_oid=23)) + data_row(b"1") + COMPLETE
    response = (one * count + row_description(field("upper")) + data_row(b"ANN@X.COM") + COMPLETE
                + row_description(field("upper")) + data_row(b"HELLO") + COMPLETE + READY)
    assert rows_of(masking.from_upstream(response)) == [(b"1",)] * count + [(b"****@X.COM",), (b"HELLO",)]


# ------------------------------------------------------------------ the e-mail fast path
# A plan masking one text column with `email` cuts plain addresses out of whole runs of
# DataRows itself (`_Plan._rewrite_emails`); whatever the rows hold, and wherever the reads
# are cut, it must send exactly what masking each value with the strategy's masker gives.

PEOPLE_OID = 16600
EMAIL_ONLY = """
masks:
  - id: people-email
    columns: [people.email]
    strategy: email
"""
_PLAIN = "abcxyzXYZ019.-_+!#$%&'*/=?^`{|}~\x7f"
_PLAIN_ADDRESS = re.compile(rb"[\x21-\x3f\x41-\x7f]+@[\x21-\x3f\x41-\x7f]+")


def _plain_or_null(value: bytes | None) -> bool:
    return value is None or _PLAIN_ADDRESS.fullmatch(value) is not None


def email_masks() -> SessionMasks:
    found = SessionMasks.for_session(parse_policy_text(EMAIL_ONLY), SESSION, b"k" * 32)
    assert found is not None
    return found


_addresses = st.builds(lambda local, domain: f"{local}@{domain}".encode(),
                       st.text(_PLAIN, min_size=1, max_size=12), st.text(_PLAIN, min_size=1, max_size=12))
_masked_values = st.one_of(
    _addresses, _addresses, _addresses,
    st.none(),
    st.sampled_from([b"", b"@", b"a@", b"@b", b"a@b@c", b" a@b", b"a@b ", b"a b@c", b"a@b\x00",
                     "\u00e9l\u00e8ve@\u00e9cole.fr".encode(), b"\xff@x", b"no address", b"a@b\x1f"]),
    st.binary(max_size=24),
)
_other_values = st.one_of(st.none(), st.binary(max_size=70), st.sampled_from([b"", b"@", b"1234", b"x@y"]))


@st.composite
def _results(draw: st.DrawFn) -> tuple[int, int, list[tuple[bytes | None, ...]]]:
    target = draw(st.integers(0, 3))
    width = target + 1 + draw(st.integers(0, 2))
    rows = []
    for _ in range(draw(st.integers(0, 40))):
        values = [draw(_other_values) for _ in range(width)]
        values[target] = draw(_masked_values)
        if draw(st.integers(0, 30)) == 0:  # a row shorter than described (masking must cope)
            values = values[: draw(st.integers(0, target))]
        rows.append(tuple(values))
    return target, width, rows


def _email_filter(target: int, width: int, encoding: str) -> PgResultMasking:
    names = [f"c{i}" for i in range(width)]
    names[target] = "email"
    cache = CatalogCache(views={})
    cache.relations[PEOPLE_OID] = Relation("public", "people", "r", {i + 1: n for i, n in enumerate(names)})
    masking = PgResultMasking(email_masks, cache, lambda: encoding, journaled=True)
    masking.to_upstream(query("SELECT * FROM people"))
    return masking


@settings(max_examples=300, deadline=None)
@given(_results(), st.sampled_from([0, 1]), st.sampled_from(["UTF8", "LATIN1", "SJIS"]),
       st.lists(st.integers(1, 300), min_size=1, max_size=30))
def test_email_runs_are_rewritten_as_the_masker_would(result: tuple[int, int, list[tuple[bytes | None, ...]]],
                                                     fmt: int, encoding: str, cuts: list[int]) -> None:
    target, width, rows = result
    fields = [field("email" if i == target else f"c{i}", PEOPLE_OID, i + 1, 25, fmt) for i in range(width)]
    response = (row_description(*fields) + b"".join(data_row(*row) for row in rows)
                + m.CommandComplete(f"SELECT {len(rows)}").encode() + READY)
    masker = build_masker(MaskStrategy.EMAIL, PgColumn(25, -1, pg_codec(encoding)), WireFormat(fmt))

    def masked_row(row: tuple[bytes | None, ...]) -> tuple[bytes | None, ...]:
        value = row[target] if len(row) > target else None
        return row if value is None else (*row[:target], masker(value), *row[target + 1 :])

    expected = (row_description(*fields) + b"".join(data_row(*masked_row(row)) for row in rows)
                + m.CommandComplete(f"SELECT {len(rows)}").encode() + READY)
    masked = sum(1 for row in rows if len(row) > target and row[target] is not None)

    whole = _email_filter(target, width, encoding)
    rows_end = len(response) - len(READY) - len(m.CommandComplete(f"SELECT {len(rows)}").encode())
    out = whole.from_upstream(response[:rows_end])
    plan = whole._plan
    if plan is not None and encoding != "SJIS" and all(
            _plain_or_null(row[target]) for row in rows if len(row) > target):
        assert plan._emails, "plain addresses are cut out without falling back to the masker"
    assert out + whole.from_upstream(response[rows_end:]) == expected
    assert whole.masked_counts() == ((("email", masked),) if masked else ())

    cut = _email_filter(target, width, encoding)
    pieces, at, step = [], 0, 0
    while at < len(response):
        size = cuts[step % len(cuts)]
        pieces.append(cut.from_upstream(response[at : at + size]))
        at, step = at + size, step + 1
    assert b"".join(pieces) == expected
    assert cut.masked_counts() == ((("email", masked),) if masked else ())


def test_rows_only_says_when_a_read_is_whole_data_rows_and_nothing_else() -> None:
    masking = _email_filter(1, 2, "UTF8")
    rows = data_row(b"1", b"ann@example.com") + data_row(b"2", None)
    description = row_description(field("c0", PEOPLE_OID, 1, 25), field("email", PEOPLE_OID, 2, 25))

    def rows_only(data: bytes) -> bool:
        masking.from_upstream(data)
        return masking.rows_only

    assert not rows_only(description + rows)
    assert rows_of(masking.from_upstream(rows + rows[:9])) == [(b"1", b"****@example.com"), (b"2", None)]
    assert masking.rows_only  # (the cut row waits)
    assert not rows_only(rows[9:] + COMPLETE + READY)
    masking.to_upstream(query("SELECT * FROM people"))
    # A DataRow too short to be one is let through for the session to refuse.
    assert not rows_only(description + b"D\x00\x00\x00\x02" + rows + COMPLETE + READY)


def test_a_null_mask_beside_another_masked_column_keeps_every_length_right() -> None:
    """Several masked fields in a row, one of them masked to NULL: the row's length counts the
    NULL as its 4-byte length field only (it was 4 bytes short, and clients lost sync)."""
    rules = RULES + """
  - id: birth
    columns: [users.note]
    strategy: null
"""
    found = SessionMasks.for_session(parse_policy_text(rules), SESSION, b"k" * 32)
    assert found is not None
    masking = PgResultMasking(lambda: found, catalog(), lambda: "UTF8", journaled=True)
    masking.to_upstream(query("SELECT ssn, note, id FROM users"))
    response = (row_description(field("ssn", USERS_OID, 3), field("note", USERS_OID, 4), field("id", USERS_OID, 1, 23))
                + data_row(b"123-45-6789", b"1990-01-01", b"1") + data_row(None, b"x", b"2") + COMPLETE + READY)
    out = masking.from_upstream(response)
    assert rows_of(out) == [(b"****", None, b"1"), (None, None, b"2")]
    assert out.endswith(COMPLETE + READY)
